"""Wiring of the CRM daemon: notify client, handshake, object events, snapshots, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any, Final

import grpc.aio
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    network_pb2,
    settings_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
)

from edge_cloud.crmutil import (
    ALL_FIELDS,
    AppInstWork,
    CloudletChangeWork,
    ClusterWork,
    InfoCache,
    TpeWork,
    copy_resources,
    field_number,
    info_fields,
)
from edge_cloud.debug import attach as attach_debug
from edge_cloud.errors import (
    ConfigError,
    DeadlineExceeded,
    EdgeError,
    InvalidArgument,
    Unavailable,
)
from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys
from edge_cloud.platform import CRM_COMPATIBILITY_VERSION, InfoSender, PlatformCaches
from edge_cloud.server import Daemon
from edge_cloud.svcnode import NODE_TYPE_CRM, my_node
from services.crm._events import KeyedTasks, ObjectEvents
from services.crm._host import CrmHost
from services.crm.config import CrmConfig

__all__ = ["CrmDaemon", "parse_cloudlet_key"]

log = logging.getLogger(__name__)

CS = appcommon_pb2
TS = common_pb2
Info = cloudlet_pb2.CloudletInfo
SNAPSHOT: Final = field_number(Info, "resources_snapshot")
DEFAULT_SNAPSHOT_INTERVAL: Final = 60 * 60.0
MIN_SNAPSHOT_INTERVAL: Final = 30.0
_RESEND_INIT: Final = 2.0
"""Seconds between repeats of the INIT report while the Controller has not answered it."""
_INITOK: Final = frozenset({TS.CRM_INITOK, TS.READY})
_FLUSH: Final = 0.2


def parse_cloudlet_key(text: str) -> cloudletkey_pb2.CloudletKey:
    """`--cloudletKey` as a key.

    Raises:
        ConfigError: Missing, not JSON, or without organization and name.
    """
    if not text:
        raise ConfigError(
            "--cloudlet-key is required: the cloudlet this CRM serves, as JSON "
            '{"organization":"<operator>","name":"<cloudlet>"}'
        )
    try:
        key = keys.parse_key_string(cloudletkey_pb2.CloudletKey, text)
    except InvalidArgument as err:
        raise ConfigError(f"--cloudlet-key: {err.message}") from None
    if not key.organization or not key.name:
        raise ConfigError(f"--cloudlet-key {text!r} needs both organization and name")
    return key


class CrmDaemon(Daemon[CrmConfig]):
    """The CRM of one cloudlet.

    `start` only wires things; the handshake runs in the background (`_bring_up`) and its
    failure (a step not answered within `--init-timeout`, a platform that does not
    initialise) reports CloudletInfo ERRORS and ends the process with status 1, so its
    supervisor restarts it, as the original's fatal exits do. The deletion of the cloudlet
    ends the process normally: its notify connection goes, and the Controller can drop the
    CloudletInfo.
    """

    name = "crm"

    def __init__(self, config: CrmConfig) -> None:
        super().__init__(config)
        self.key = parse_cloudlet_key(config.cloudlet_key)
        self.key_string = keys.key_string(self.key)
        self.notify = notify = NotifyClient(
            config.notify_addrs, name=f"crm {self.key_string}", filter_cloudlet_key=True,
            tls=config.tls,
        )  # fmt: skip
        self.debug = attach_debug(
            notify,
            my_node(
                NODE_TYPE_CRM,
                cloudlet_key=self.key,
                container_version=config.container_version,
                tls=config.tls is not None,
            ),
        )
        cloudlets = notify.cache(cloudlet_pb2.Cloudlet)
        clusters = notify.cache(clusterinst_pb2.ClusterInst)
        app_insts = notify.cache(appinst_pb2.AppInst)
        caches = PlatformCaches(
            flavors=notify.cache(flavor_pb2.Flavor),
            cloudlets=cloudlets,
            cluster_insts=clusters,
            apps=notify.cache(app_pb2.App),
            app_insts=app_insts,
            networks=notify.cache(network_pb2.Network),
            trust_policies=notify.cache(trustpolicy_pb2.TrustPolicy),
            trust_policy_exceptions=notify.cache(trustpolicyexception_pb2.TrustPolicyException),
        )
        notify.cache(vmpool_pb2.VMPool)
        self.host = CrmHost(
            config, self.key, caches, notify.cache(settings_pb2.Settings), dict(os.environ)
        )
        self.ready = asyncio.Event()
        self._cloudlet_seen = asyncio.Event()
        self._snapshot_wanted = asyncio.Event()
        self._tasks = KeyedTasks()
        self.cluster_infos = InfoCache(
            clusterinst_pb2.ClusterInstInfo, TS.TrackedState.DESCRIPTOR,
            notify.send, notify.send_delete,
        )  # fmt: skip
        self.app_inst_infos = InfoCache(
            appinst_pb2.AppInstInfo, TS.TrackedState.DESCRIPTOR, notify.send, notify.send_delete
        )
        self.cloudlet_info: InfoSender[Info] = InfoSender(
            Info(key=self.key, container_version=config.container_version),
            notify.send,
            state_enum=CS.CloudletState.DESCRIPTOR,
            fields=info_fields(Info),
        )
        self.clusters = ObjectEvents(
            "ClusterInst", self.cluster_infos, ClusterWork(self.host).apply, self._tasks,
            self.request_snapshot,
        )  # fmt: skip
        self.app_insts = ObjectEvents(
            "AppInst", self.app_inst_infos, AppInstWork(self.host).apply, self._tasks,
            self.request_snapshot,
        )  # fmt: skip
        self._change_work = CloudletChangeWork(self.host)

        async def cluster_updated(
            new: clusterinst_pb2.ClusterInst, old: clusterinst_pb2.ClusterInst | None
        ) -> None:
            if self.ready.is_set() and new.cloudlet_key == self.key:
                self.clusters.updated(new, old)

        async def cluster_deleted(old: clusterinst_pb2.ClusterInst) -> None:
            if self.ready.is_set() and old.cloudlet_key == self.key:
                self.clusters.deleted(old)

        async def inst_updated(new: appinst_pb2.AppInst, old: appinst_pb2.AppInst | None) -> None:
            if self.ready.is_set() and new.cloudlet_key == self.key:
                self.app_insts.updated(new, old)

        async def inst_deleted(old: appinst_pb2.AppInst) -> None:
            if self.ready.is_set() and old.cloudlet_key == self.key:
                self.app_insts.deleted(old)

        async def cloudlet_updated(
            new: cloudlet_pb2.Cloudlet, old: cloudlet_pb2.Cloudlet | None
        ) -> None:
            if new.key != self.key:
                return
            self._cloudlet_seen.set()
            if self.ready.is_set():
                self._cloudlet_changed(new, old)

        async def cloudlet_deleted(old: cloudlet_pb2.Cloudlet) -> None:
            if old.key == self.key:
                log.info("cloudlet %s was deleted: the CRM stops", self.key_string)
                os.kill(os.getpid(), signal.SIGTERM)

        clusters.on_update(cluster_updated)
        clusters.on_delete(cluster_deleted)
        app_insts.on_update(inst_updated)
        app_insts.on_delete(inst_deleted)
        cloudlets.on_update(cloudlet_updated)
        cloudlets.on_delete(cloudlet_deleted)
        self._tpe_states(notify.cache(trustpolicyexception_pb2.TPEInstanceState))

    def _tpe_states(self, cache: Any) -> None:
        """Open or close trust policy exceptions as the Controller's TPEInstanceStates ask.

        One job per record at a time (the tasks are keyed), in arrival order.
        """
        work = TpeWork(self.host)

        def submit(state: trustpolicyexception_pb2.TPEInstanceState, closing: bool) -> None:
            name = f"TPEInstance {keys.key_string(state.key)}"

            async def job() -> None:
                try:
                    await (work.deleted(state) if closing else work.apply(state))
                except EdgeError as err:
                    log.warning("%s: %s", name, err)

            self._tasks.submit(name, job)

        async def updated(
            new: trustpolicyexception_pb2.TPEInstanceState,
            old: trustpolicyexception_pb2.TPEInstanceState | None,
        ) -> None:
            if new.key.cloudlet_key == self.key and TpeWork.requested(new, old):
                submit(new, closing=False)

        async def deleted(old: trustpolicyexception_pb2.TPEInstanceState) -> None:
            if old.key.cloudlet_key == self.key:
                submit(old, closing=True)

        cache.on_update(updated)
        cache.on_delete(deleted)

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """None of its own: the CRM serves health and metrics only."""
        return []

    async def start(self) -> None:
        """Dial the Controller; the connection outlives the background loops (see `close`)."""
        await self.notify.start()

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The bring-up (which then ends) and the snapshot loop."""
        return [self._bring_up(), self._snapshots()]

    async def close(self) -> None:
        """Graceful end, after the background loops stopped.

        Running work gets `--shutdown-grace` to finish and report; whatever is left is
        cancelled, the last reports are flushed and the notify connection closes (the
        Controller marks the cloudlet OFFLINE).
        """
        if self._tasks.pending:
            log.info("waiting up to %gs for running work", self.config.shutdown_grace)
            try:
                async with asyncio.timeout(self.config.shutdown_grace):
                    await self._tasks.idle()
            except TimeoutError:
                log.warning("cancelling work still running after %gs", self.config.shutdown_grace)
        await self._tasks.close()
        if self.notify.connected:
            await asyncio.sleep(_FLUSH)  # the writer sends what the work reported last
        await self.notify.close()

    # -- the handshake ------------------------------------------------------------------------

    def _cloudlet(self) -> cloudlet_pb2.Cloudlet | None:
        return self.host.caches.cloudlets.get(self.key_string)

    async def _bounded(self, what: str, wait: Coroutine[Any, Any, Any]) -> None:
        try:
            async with asyncio.timeout(self.config.init_timeout):
                await wait
        except TimeoutError:
            raise DeadlineExceeded(
                f"CRM of cloudlet {self.key_string}: the Controller at "
                f"{', '.join(self.config.notify_addrs)} did not {what} within "
                f"{self.config.init_timeout:g}s"
            ) from None

    async def _wait_initok(self) -> None:
        """Report INIT (again every few seconds) until our Cloudlet is CRM_INITOK or READY."""
        while True:
            cloudlet = self._cloudlet()
            if cloudlet is not None and cloudlet.state in _INITOK:
                return
            self._cloudlet_seen.clear()
            self.notify.send(self._info_copy())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_RESEND_INIT):
                    await self._cloudlet_seen.wait()

    def _info_copy(self) -> Info:
        out = Info()
        out.CopyFrom(self.cloudlet_info.info)
        return out

    async def _bring_up(self) -> None:
        """The original's cloudlet init thread (crm_platforms.md §4.2 step 5)."""
        sender = self.cloudlet_info
        sender.send_state(CS.CLOUDLET_STATE_INIT, reset=True)
        sender.task("Initializing controller connection")
        try:
            await self._bounded("mark the cloudlet CRM_INITOK", self._wait_initok())
            cloudlet = self._cloudlet()
            assert cloudlet is not None  # noqa: S101 - _wait_initok returned
            sender.task("Initializing platform")
            platform = await self.host.initialised(cloudlet, sender)
            generation = self.notify.sync_generation
            sender.send_state(CS.CLOUDLET_STATE_NEED_SYNC)
            await self._bounded(
                "send this cloudlet's objects", self.notify.wait_resynced(generation)
            )
            await platform.init_ha_conditional(sender)
            sender.task("Gathering Cloudlet Info")
            gathered = await platform.get_cloudlet_resources()
        except EdgeError as err:
            sender.send_state(CS.CLOUDLET_STATE_ERRORS, error=err.message)
            await asyncio.sleep(_FLUSH)  # let the notify writer deliver it
            if isinstance(err, DeadlineExceeded):
                raise
            # one line and exit status 1 for the supervisor, not a traceback
            raise Unavailable(
                f"CRM of cloudlet {self.key_string} could not be brought up: {err.message}"
            ) from err
        cloudlet = self._cloudlet() or cloudlet

        def ready(info: Info) -> None:
            copy_resources(info, gathered)
            info.compatibility_version = CRM_COMPATIBILITY_VERSION
            info.controller_cache_received = True
            info.state = CS.CLOUDLET_STATE_READY
            del info.errors[:]
            info.trust_policy_state = TS.READY if cloudlet.trust_policy else TS.NOT_PRESENT
            info.release_version = os.environ.get("MEX_RELEASE_VERSION", "")

        # Before READY goes up: objects the Controller sends from now on are acted on,
        # and those it sent in the send-all are resumed or checked (§4.3).
        self.ready.set()
        self._resync()
        current = self._cloudlet()
        if current is not None:
            self._cloudlet_changed(current, None)  # an update requested during the bring-up
        sender.send_state(CS.CLOUDLET_STATE_READY)
        sender.send_update(ready, ALL_FIELDS)
        log.info("cloudlet %s ready", self.key_string)

    def _resync(self) -> None:
        """Every ClusterInst and AppInst of the cloudlet as if first seen (after a restart)."""
        caches = self.host.caches
        for cluster in list(caches.cluster_insts.values()):
            if cluster.cloudlet_key == self.key:
                self.clusters.updated(cluster, None)
        for inst in list(caches.app_insts.values()):
            if inst.cloudlet_key == self.key:
                self.app_insts.updated(inst, None)

    # -- cloudlet changes ---------------------------------------------------------------------

    def _cloudlet_changed(
        self, new: cloudlet_pb2.Cloudlet, old: cloudlet_pb2.Cloudlet | None
    ) -> None:
        def moved(name: str, value: int) -> bool:
            return bool(getattr(new, name) == value) and (
                old is None or getattr(old, name) != value
            )

        if not (
            moved("state", TS.UPDATE_REQUESTED)
            or moved("trust_policy_state", TS.UPDATE_REQUESTED)
            or moved("maintenance_state", CS.CRM_REQUESTED)
            or moved("maintenance_state", CS.NORMAL_OPERATION_INIT)
        ):
            return

        async def work() -> None:
            try:
                await self._change_work.changed(new, self.cloudlet_info)
            except EdgeError as err:
                log.warning("cloudlet %s change failed: %s", self.key_string, err)
            self.request_snapshot()

        self._tasks.submit(f"Cloudlet {self.key_string}", work)

    # -- resource snapshots -------------------------------------------------------------------

    def request_snapshot(self) -> None:
        """Ask for a fresh infra resource snapshot soon (coalesced, one at a time)."""
        self._snapshot_wanted.set()

    def _interval(self) -> float:
        if self.config.resource_snapshot_interval > 0:
            return self.config.resource_snapshot_interval
        nanos = self.host.settings().resource_snapshot_thread_interval
        if nanos <= 0:
            return DEFAULT_SNAPSHOT_INTERVAL
        return max(nanos / 1e9, MIN_SNAPSHOT_INTERVAL)

    async def _snapshots(self) -> None:
        """Refresh `resources_snapshot` after infra changes and every interval (§4.2 step 7)."""
        await self.ready.wait()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval()):
                    await self._snapshot_wanted.wait()
            self._snapshot_wanted.clear()
            platform = self.host.current
            if platform is None:
                continue
            try:
                snapshot = await platform.get_cloudlet_infra_resources()
            except EdgeError as err:
                log.warning("cloudlet infra resource update failure: %s", err)
                continue

            def put(info: Info, snapshot: Any = snapshot) -> None:
                info.resources_snapshot.CopyFrom(snapshot)

            if self.cloudlet_info.info.resources_snapshot != snapshot:
                self.cloudlet_info.send_update(put, (SNAPSHOT,))
