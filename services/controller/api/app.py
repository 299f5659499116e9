"""AppApi: application definitions (controller.md §3.7).

Create, update and delete are single guarded etcd transactions (delete: the delete-prepare
protocol) around the rules of `_app`. A create writes the App, its empty AppInstRefs and its
`1/AppGlobalId/<id>` reservation together; a delete removes the three together. Referenced
flavors and policies are read inside the transactions, so an App never names an object that
a concurrent delete removed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    autoscalepolicy_pb2,
    cloudletkey_pb2,
    common_pb2,
    refs_pb2,
    result_pb2,
)

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
)
from edge_cloud.objects import fields, keys
from services.controller import _app, _usage, _uses
from services.controller._app import APP, APP_INST, APP_INST_REFS, AppEnv, TxnReferences
from services.controller._engine import Txn
from services.controller._ids import now_timestamp, ulid
from services.controller._inst_ops import AppInstOps, ClusterInstOps
from services.controller._runtime import Runtime
from services.controller._tracked import CallContext, TrackedRuntime

__all__ = ["AppApi", "add"]

log = logging.getLogger(__name__)

_Ctx = grpc.aio.ServicerContext[Any, Any]


def _copy(app: app_pb2.App) -> app_pb2.App:
    out = app_pb2.App()
    out.CopyFrom(app)
    return out


def _reference_reads(app: app_pb2.App) -> list[str]:
    """The etcd keys of what an App names: its flavor and its policies (same organization)."""
    out: list[str] = []
    if app.default_flavor.name:
        out.append(keys.store_key("Flavor", keys.key_string(app.default_flavor)))
    org = app.key.organization
    for name in _app.auto_prov_policy_names(app):
        policy = autoscalepolicy_pb2.PolicyKey(organization=org, name=name)
        out.append(keys.store_key("AutoProvPolicy", keys.key_string(policy)))
    for name in app.alert_policies:
        alert = alertpolicy_pb2.AlertPolicyKey(organization=org, name=name)
        out.append(keys.store_key("AlertPolicy", keys.key_string(alert)))
    return out


class AppApi(app_pb2_grpc.AppApiServicer):
    """Create, update, delete and show Apps; attach auto-provisioning and alert policies."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _env(self) -> AppEnv:
        config = self._rt.config
        # `registry_fqdn`/`artifactory_fqdn` (the original's -registryFQDN/-artifactoryFQDN)
        # are not options of ControllerConfig yet; without them image paths must be given.
        return AppEnv(
            region=config.region,
            registry_fqdn=getattr(config, "registry_fqdn", ""),
            artifactory_fqdn=getattr(config, "artifactory_fqdn", ""),
        )

    # -- create, update, delete ----------------------------------------------------------------

    async def CreateApp(self, request: app_pb2.App, context: _Ctx) -> result_pb2.Result:
        """Validate, configure and store a new App with its AppInstRefs and global id."""
        app = _copy(request)
        app.ClearField("fields")
        _app.check_app(app)
        engine = self._rt.engine
        env = self._env()
        key = keys.key_string(app)
        if engine.caches.get(APP, key) is not None:
            raise keys.already_exists(app)  # before its secrets could be overwritten
        undo_secrets = await _app.stash_secrets(self._rt.secrets, env.region, app)
        candidates = _app.global_id_candidates(env.region, app.key)
        reads = [
            keys.store_key("App", key),
            keys.store_key("AppInstRefs", key),
            *_reference_reads(app),
            *(_app.global_id_store_key(c) for c in candidates),
        ]

        def create(txn: Txn) -> None:
            new = _copy(app)
            if txn.get(APP, key) is not None:
                raise keys.already_exists(new)
            new.delete_prepare = False
            _app.configure_app(new, TxnReferences(txn, engine.caches), env, revision=None)
            new.global_id = _app.choose_global_id(candidates, txn)
            new.obj_id = ulid()
            new.compatibility_version = _app.COMPATIBILITY_VERSION
            new.created_at.CopyFrom(now_timestamp())
            txn.put(new)
            txn.put(refs_pb2.AppInstRefs(key=new.key))
            txn.put_key(_app.global_id_store_key(new.global_id), new.global_id.encode())

        try:
            await engine.apply(create, reads=reads)
        except BaseException:
            await asyncio.shield(undo_secrets())
            raise
        return result_pb2.Result()

    async def UpdateApp(self, request: app_pb2.App, context: _Ctx) -> result_pb2.Result:
        """Apply the listed fields (lists and maps per `update_list_action`), reconfigure."""
        if not request.fields:
            raise InvalidArgument("nothing specified to update")
        fields.check_updatable(request.fields, _app.UPDATABLE, app_pb2.App.DESCRIPTOR)
        _app.check_app(request, request.fields)
        engine = self._rt.engine
        env = self._env()
        request = _copy(request)
        await _app.stash_secrets(self._rt.secrets, env.region, request, fields=request.fields)
        key = keys.key_string(request)

        def update(txn: Txn) -> bool:
            current = txn.get(APP, key)
            if current is None:
                raise keys.not_found(request)
            refs = txn.get(APP_INST_REFS, key)
            merged = _app.update_app(
                current,
                request,
                refs=TxnReferences(txn, engine.caches),
                env=env,
                instances=sorted(refs.insts) if refs is not None else [],
            )
            probe = _copy(merged)
            if request.revision == "":
                probe.revision = current.revision  # a generated revision alone is no change
            if probe == current:
                return False
            merged.updated_at.CopyFrom(now_timestamp())
            txn.put(merged)
            return True

        await engine.apply(
            update, reads=[keys.store_key("App", key), keys.store_key("AppInstRefs", key)]
        )
        return result_pb2.Result()

    async def DeleteApp(self, request: app_pb2.App, context: _Ctx) -> result_pb2.Result:
        """Delete-prepare (refused while static AppInsts exist), checks, then delete all three.

        Instances that may be deleted along with the App (dynamic, AutoDelete App,
        auto-provisioned) are deleted first, ignoring worker errors as the original's
        cascades do; if any of them remains, the delete fails with the original's
        partial-failure message and the App is kept.
        """
        engine = self._rt.engine
        key = keys.key_string(request)
        reads = [keys.store_key("App", key), keys.store_key("AppInstRefs", key)]

        def mark(txn: Txn) -> tuple[app_pb2.App, list[appinst_pb2.AppInst]]:
            current = txn.get(APP, key)
            if current is None:
                raise keys.not_found(request)
            if current.delete_prepare:
                raise keys.being_deleted(request)
            refs = txn.get(APP_INST_REFS, key)
            names = sorted(refs.insts) if refs is not None else []
            found = txn.get_many(APP_INST, names)
            dynamic = _app.instances_to_delete(current, zip(names, found, strict=True))
            current.delete_prepare = True
            txn.put(current)
            return current, dynamic

        (marked, dynamic), revision = await engine.apply_at(mark, reads=reads, wait=False)
        try:
            if revision is not None:
                # the in-use checks read the caches: they must hold every earlier referrer
                await engine.sync.wait_for_revision(revision)
            _uses.app_users(engine.caches, marked)
            if dynamic:
                await self._auto_delete(dynamic)

            def remove(txn: Txn) -> None:
                current = txn.get(APP, key)
                if current is None:
                    return  # already deleted
                if not current.delete_prepare:
                    raise FailedPrecondition(
                        f"delete App {key} expected it to be in delete prepare, but it was not"
                    )
                refs = txn.get(APP_INST_REFS, key)
                if refs is not None and refs.insts:
                    first = sorted(refs.insts)[0]
                    raise FailedPrecondition(f"Application in use by static AppInst {first}")
                txn.delete(APP, key)
                txn.delete(APP_INST_REFS, key)
                if current.global_id:
                    txn.delete_key(_app.global_id_store_key(current.global_id))

            await engine.apply(remove, reads=reads)
        except BaseException:
            # shielded: a cancelled request must not leave the App marked for good
            await asyncio.shield(self._clear_prepare(key))
            raise
        await _app.drop_secrets(self._rt.secrets, self._env().region, marked.key)
        return result_pb2.Result()

    async def _clear_prepare(self, key: str) -> None:
        def clear(txn: Txn) -> None:
            current = txn.get(APP, key)
            if current is not None and current.delete_prepare:
                current.delete_prepare = False
                txn.put(current)

        try:
            await self._rt.engine.apply(clear, reads=[keys.store_key("App", key)])
        except EdgeError as err:
            log.warning("could not clear delete_prepare of App %s: %s", key, err)

    # -- show ----------------------------------------------------------------------------------

    async def ShowApp(self, request: app_pb2.App, context: _Ctx) -> AsyncIterator[app_pb2.App]:
        """Every cached App matching the filter."""
        for app in self._rt.engine.show(request):
            yield app

    async def ShowPublicApp(
        self, request: app_pb2.App, context: _Ctx
    ) -> AsyncIterator[app_pb2.App]:
        """The matching Apps of the platform organization (`edgecloudorg`) only."""
        for app in self._rt.engine.show(request):
            if app.key.organization == _app.EDGECLOUD_ORG:
                yield app

    async def ShowZonesForAppDeployment(
        self, request: app_pb2.DeploymentZoneRequest, context: _Ctx
    ) -> AsyncIterator[cloudletkey_pb2.ZoneKey]:
        """Zones whose cloudlets map the App's flavor (and, on a dry run, have room for it)."""
        for zone in _usage.zones_for_app_deployment(self._rt.caches, request):
            yield zone

    # -- policies ------------------------------------------------------------------------------

    async def AddAppAutoProvPolicy(
        self, request: app_pb2.AppAutoProvPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Add a policy name; every policy of the App must exist (same organization)."""
        engine = self._rt.engine
        name = request.auto_prov_policy

        def add_policy(txn: Txn, app: app_pb2.App) -> None:
            if name in app.auto_prov_policies:
                raise AlreadyExists(f"AutoProvPolicy {name} already on App")
            app.auto_prov_policies.append(name)
            _app.check_policies(app, TxnReferences(txn, engine.caches))

        await engine.modify(APP, request.app_key, add_policy)
        return result_pb2.Result()

    async def RemoveAppAutoProvPolicy(
        self, request: app_pb2.AppAutoProvPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Remove a policy name (also the legacy single policy); absent names are ignored."""
        name = request.auto_prov_policy

        def remove_policy(txn: Txn, app: app_pb2.App) -> None:
            if name in app.auto_prov_policies:
                app.auto_prov_policies.remove(name)
            if app.auto_prov_policy == name:
                app.auto_prov_policy = ""

        await self._rt.engine.modify(APP, request.app_key, remove_policy)
        return result_pb2.Result()

    async def AddAppAlertPolicy(
        self, request: app_pb2.AppAlertPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Add an alert policy name; every alert policy of the App must exist."""
        engine = self._rt.engine
        name = request.alert_policy

        def add_alert(txn: Txn, app: app_pb2.App) -> None:
            if name in app.alert_policies:
                raise AlreadyExists(f"Alert {name} already monitored on App")
            app.alert_policies.append(name)
            _app.check_alert_policies(app, TxnReferences(txn, engine.caches))

        await engine.modify(APP, request.app_key, add_alert)
        return result_pb2.Result()

    async def RemoveAppAlertPolicy(
        self, request: app_pb2.AppAlertPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Remove an alert policy name; an absent one is the original's empty-key not found."""
        name = request.alert_policy

        def remove_alert(txn: Txn, app: app_pb2.App) -> None:
            if name not in app.alert_policies:
                raise keys.not_found(alertpolicy_pb2.AlertPolicyKey())
            app.alert_policies.remove(name)

        await self._rt.engine.modify(APP, request.app_key, remove_alert)
        return result_pb2.Result()

    async def _auto_delete(self, instances: list[appinst_pb2.AppInst]) -> None:
        """Delete an App's auto-deletable instances (worker errors ignored).

        Raises:
            FailedPrecondition: `Auto-deleted <n> AppInsts but failed to delete <m> AppInsts
                for App` when some could not be deleted (or no AppInst API runs here).
        """
        deleted = 0
        if isinstance(self._rt, TrackedRuntime):
            ops = AppInstOps(self._rt, ClusterInstOps(self._rt))
            for inst in instances:
                request = appinst_pb2.AppInst(key=inst.key)
                try:
                    await ops.delete_internal(
                        CallContext(override=common_pb2.IGNORE_CRM_ERRORS),
                        request,
                        lambda _line: None,
                    )
                    deleted += 1
                except EdgeError as err:
                    log.warning("auto-delete of AppInst %s failed: %s", inst.key, err)
        failed = len(instances) - deleted
        if failed:
            raise FailedPrecondition(
                f"Auto-deleted {deleted} AppInsts but failed to delete {failed} AppInsts for App"
            )


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    app_pb2_grpc.add_AppApiServicer_to_server(AppApi(runtime), server)
    return ["edgeproto.AppApi"]
