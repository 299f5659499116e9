"""Cloudlet create, update and delete: the long-running operations of controller.md §3.6.

Each operation commits the requested state in one transaction, starts the cloudlet's
progress stream at that commit's revision, then lets the worker do the work:

- CCRM-managed cloudlets (`crm_on_edge` false): `ApplyCloudlet` on the CCRM of the
  platform's node type; every streamed CloudletInfo is merged into etcd and its new status
  lines are forwarded;
- CRM-on-edge cloudlets: the CCRM onboards the site, then the CRM connects over notify and
  reports CloudletInfo; the call waits for READY on the cloudlet's Redis channel, so the
  CRM may be connected to any controller.

A create that fails after its commit is undone by an internal delete (§5.7), which reuses
the caller's stream; a delete that fails after its mark restores the previous state or
leaves DeleteError. A cancelled call (its client went away) leaves a terminal error state.

Access vars go to the secrets backend (`Runtime.secrets`), never to etcd: the stored
Cloudlet keeps `***` per key; the vars are written once the create is committed (so a
refused create never overwrites another cloudlet's), merged on update, and removed with the
cloudlet unless another cloudlet on the same site (organization + physical name) uses them.

Kafka credentials go there too (the object keeps only the endpoint), and, when the
Controller has a secrets backend, each new cloudlet gets an ed25519 CRM access key pair
(two with platform HA) whose private halves are kept there and public halves shown on the
object; both are removed with the cloudlet.

Not here yet (later slices): the built-in cluster of single-Kubernetes platforms, the
default multi-tenant cluster, ClusterInst/AppInst cascades and resource accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    network_pb2,
    refs_pb2,
    restagtable_pb2,
    trustpolicy_pb2,
    vmpool_pb2,
    zone_pb2,
)
from google.protobuf.message import Message

from edge_cloud import secrets
from edge_cloud.errors import (
    AlreadyExists,
    DeadlineExceeded,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from edge_cloud.objects import codec, fields, keys, registry
from services.controller import _cloudlet, _ids
from services.controller._alerts import alert_hub
from services.controller._cloudlet_store import dns_label_key
from services.controller._cloudletinfo import (
    CLOUDLET,
    CLOUDLET_INFO,
    apply_info,
    cleanup_info,
    report_payload,
    state_name,
)
from services.controller._cloudletnode import cleanup_nodes
from services.controller._create_undo import gone_check, mark_cancelled
from services.controller._engine import DELETE_PREPARE, Txn
from services.controller._followons import (
    check_cloudlet_app_insts_trust,
    default_mt_cluster_key,
    propagate_cloudlet_location,
    schedule_default_mt_cluster,
)
from services.controller._inst_ops import ClusterInstOps
from services.controller._progress import ERROR, OpStream, StreamStart, compact_text, stream_key
from services.controller._runtime import Runtime
from services.controller._sync import Caches
from services.controller._tracked import (
    CallContext,
    InfoWait,
    Sink,
    TrackedOps,
    TrackedRuntime,
    seconds,
    validate_delete_state,
    wait_for_info,
)

__all__ = [
    "CloudletOps",
    "CloudletRecovery",
    "features_for",
    "generate_crm_access_key",
    "revoke_crm_access_key",
]

log = logging.getLogger(__name__)

TS = common_pb2
CS = appcommon_pb2
PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)
GPU_DRIVER: Final = registry.by_class(cloudlet_pb2.GPUDriver)
ZONE: Final = registry.by_class(zone_pb2.Zone)
FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
VM_POOL: Final = registry.by_class(vmpool_pb2.VMPool)
TRUST_POLICY: Final = registry.by_class(trustpolicy_pb2.TrustPolicy)
RES_TAG_TABLE: Final = registry.by_class(restagtable_pb2.ResTagTable)
CLOUDLET_REFS: Final = registry.by_class(refs_pb2.CloudletRefs)
CLOUDLET_IPS: Final = registry.by_class(refs_pb2.CloudletIPs)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
CLUSTER_REFS: Final = registry.by_class(refs_pb2.ClusterRefs)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
NETWORK: Final = registry.by_class(network_pb2.Network)
AUTOPROV_INFO: Final = registry.by_class(autoprovpolicy_pb2.AutoProvInfo)

CHANGE_IN_PROGRESS: Final = "ChangeInProgress"
"""GPUDriver.state while the driver is being changed (the original's constant)."""
ALL_FIELDS: Final = fields.all_field_paths(cloudlet_pb2.Cloudlet.DESCRIPTOR)
CREATED: Final = "Created Cloudlet successfully"
UPDATED: Final = "Cloudlet updated successfully"
DELETED: Final = "Deleted Cloudlet successfully"
NO_VAULT: Final = "and this Controller does not download from the artifact registry yet"
_POLL: Final = 0.1

_READY_WAIT: Final = InfoWait(
    target=CS.CLOUDLET_STATE_READY,
    error=CS.CLOUDLET_STATE_ERRORS,
    transitions=frozenset(),
    state_name=state_name,
    show="ShowCloudlet",
)
_UPGRADE_WAIT: Final = InfoWait(
    target=CS.CLOUDLET_STATE_READY,
    error=CS.CLOUDLET_STATE_ERRORS,
    transitions=frozenset({CS.CLOUDLET_STATE_UPGRADE}),
    state_name=state_name,
    show="ShowCloudlet",
    after=CS.CLOUDLET_STATE_UPGRADE,  # READY before the CRM started upgrading is the old one
)
# The Cloudlet's state during an on-edge update, as the CloudletInfo state that drove it.
_UPDATE_PROGRESS: Final[dict[int, int]] = {
    TS.UPDATING: CS.CLOUDLET_STATE_UPGRADE,
    TS.READY: CS.CLOUDLET_STATE_READY,
    TS.UPDATE_ERROR: CS.CLOUDLET_STATE_ERRORS,
}
# The error state an interrupted operation leaves behind.
_FAILED_STATE: Final[dict[int, int]] = {
    TS.CREATE_REQUESTED: TS.CREATE_ERROR,
    TS.CREATING: TS.CREATE_ERROR,
    TS.CRM_INITOK: TS.CREATE_ERROR,
    TS.UPDATE_REQUESTED: TS.UPDATE_ERROR,
    TS.UPDATING: TS.UPDATE_ERROR,
    TS.DELETE_PREPARE: TS.DELETE_ERROR,
    TS.DELETE_REQUESTED: TS.DELETE_ERROR,
    TS.DELETING: TS.DELETE_ERROR,
}


def _new_crm_keys(
    cloudlet: cloudlet_pb2.Cloudlet,
) -> tuple[secrets.AccessKeyPair, secrets.AccessKeyPair | None]:
    """Fresh CRM key pair(s) for a new cloudlet; the object gets the public halves."""
    primary = secrets.generate_access_key()
    cloudlet.crm_access_public_key = primary.public_pem
    secondary = None
    if cloudlet.platform_high_availability:
        secondary = secrets.generate_access_key()
        cloudlet.secondary_crm_access_public_key = secondary.public_pem
    return primary, secondary


async def generate_crm_access_key(rt: Runtime, key: cloudletkey_pb2.CloudletKey) -> str:
    """GenerateAccessKey: a new primary CRM key pair; returns its private PEM (once).

    The object gets the public half (and no longer asks the CRM to upgrade its key); the
    backend keeps both halves next to an existing secondary pair. As in the original, a
    failure to store the pair after the commit is logged: the CRM authenticates with the
    key it was handed, against the public half on the object.

    Raises:
        FailedPrecondition: The Controller has no secrets backend.
        NotFound: No such cloudlet.
    """
    backend = rt.secrets("CRM access keys")
    pair = secrets.generate_access_key()

    def fn(txn: Txn) -> None:
        cloudlet = txn.get(CLOUDLET, key)
        if cloudlet is None:
            raise keys.not_found(key)
        cloudlet.crm_access_public_key = pair.public_pem
        cloudlet.crm_access_key_upgrade_required = False
        txn.put(cloudlet)

    await rt.engine.apply(fn)
    where = {"region": rt.config.region, "org": key.organization, "name": key.name}
    try:
        existing = await secrets.load_crm_access_keys(backend, **where)
        secondary = existing[1] if existing is not None else None
        await secrets.save_crm_access_keys(backend, **where, primary=pair, secondary=secondary)
    except EdgeError as err:
        log.warning("the new CRM key of %s is not stored: %s", keys.key_string(key), err)
    return pair.private_pem


async def revoke_crm_access_key(rt: Runtime, key: cloudletkey_pb2.CloudletKey) -> None:
    """RevokeAccessKey: clear the object's public key and drop the stored pairs.

    Raises:
        FailedPrecondition: The Controller has no secrets backend.
        NotFound: No such cloudlet.
    """
    backend = rt.secrets("CRM access keys")

    def fn(txn: Txn) -> None:
        cloudlet = txn.get(CLOUDLET, key)
        if cloudlet is None:
            raise keys.not_found(key)
        cloudlet.crm_access_public_key = ""
        txn.put(cloudlet)

    await rt.engine.apply(fn)
    path = secrets.crm_access_keys_path(rt.config.region, key.organization, key.name)
    try:
        await backend.delete(path)
    except EdgeError as err:
        log.warning("the CRM keys of %s stay stored: %s", keys.key_string(key), err)


def features_for(caches: Caches, platform_type: str) -> cloudlet_pb2.PlatformFeatures:
    """The stored features of a platform.

    Raises:
        NotFound: `PlatformFeatures key <t> not found`.
    """
    found = caches.get(PLATFORM_FEATURES, platform_type)
    if found is None:
        raise keys.not_found(cloudlet_pb2.PlatformFeatures(platform_type=platform_type))
    return found


def _copy(cloudlet: cloudlet_pb2.Cloudlet) -> cloudlet_pb2.Cloudlet:
    out = cloudlet_pb2.Cloudlet()
    out.CopyFrom(cloudlet)
    return out


def _go_struct(key: cloudletkey_pb2.CloudletKey) -> str:
    """Go's `%v` of a CloudletKey value: `{org name fedorg}`."""
    return f"{{{key.organization} {key.name} {key.federated_organization}}}"


def _prefixed(err: EdgeError, prefix: str) -> EdgeError:
    """The same kind of error with `prefix` before its message."""
    return type(err)(f"{prefix}{err.message}")


async def _cached(
    check: Callable[[], Message | None],
    timeout: float,  # noqa: ASYNC109 - the Settings timeout of the wait
) -> Message | None:
    """Poll the caches until `check` returns an object, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(_POLL)


class CloudletOps(TrackedOps):
    """Create, update and delete cloudlets; run by the CloudletApi servicer.

    Args:
        runtime: The runtime with tracked-state services.
    """

    # -- helpers ---------------------------------------------------------------------------

    async def _forward_status(
        self, stream: OpStream, published: set[bytes] | None = None
    ) -> Callable[[Message], Awaitable[None]]:
        """An `on_info` for CCRM calls: merge each info, forward its new status lines.

        Args:
            stream: Where the lines go.
            published: Collects what was published for each info (to skip it later).
        """

        async def receive(info: Message) -> None:
            assert isinstance(info, cloudlet_pb2.CloudletInfo)  # noqa: S101 - narrowing
            if published is not None:
                published.add(report_payload(info))
            await apply_info(self._rt, info)

        return self._forward(stream, receive)

    async def _save_access_vars(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        values: dict[str, str],
        features: cloudlet_pb2.PlatformFeatures,
        *,
        merge: bool,
    ) -> dict[str, str]:
        """Write access vars to the secrets backend; returns the redacted full set.

        Raises:
            InvalidArgument: A var the platform does not declare (a create has checked the
                mandatory ones already; a merge cannot lose one).
            FailedPrecondition: The Controller has no secrets backend.
        """
        props = features.access_vars
        if any(k not in props for k in values):
            _cloudlet.check_prop_vars(values, props, "access")
        backend = self._rt.secrets("Cloudlet access vars")
        redacted = await secrets.save_cloudlet_access_vars(
            backend,
            region=self._rt.config.region,
            org=cloudlet.key.organization,
            name=cloudlet.key.name,
            physical_name=cloudlet.physical_name,
            values=values,
            totp_names=[k for k, p in props.items() if p.totp_secret],
            merge=merge,
        )
        return redacted

    async def _delete_access_vars(self, cloudlet: cloudlet_pb2.Cloudlet) -> None:
        """Remove a deleted cloudlet's access vars, unless another cloudlet shares them.

        Failures are logged, not raised: the cloudlet is gone already.
        """
        if not cloudlet.access_vars:
            return

        def site(c: cloudlet_pb2.Cloudlet) -> tuple[str, str]:
            return c.key.organization, c.physical_name or c.key.name

        others = (c for _, c in self._rt.caches.items(CLOUDLET) if c.key != cloudlet.key)
        if any(site(other) == site(cloudlet) for other in others):
            return
        try:
            await secrets.delete_cloudlet_access_vars(
                self._rt.secrets("Cloudlet access vars"),
                region=self._rt.config.region,
                org=cloudlet.key.organization,
                name=cloudlet.key.name,
                physical_name=cloudlet.physical_name,
                names=list(cloudlet.access_vars),
            )
        except EdgeError as err:
            log.warning("access vars of deleted cloudlet %s stay stored: %s", site(cloudlet), err)

    async def _save_cloudlet_secrets(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        kafka: dict[str, str],
        crm_keys: tuple[secrets.AccessKeyPair, secrets.AccessKeyPair | None] | None,
    ) -> None:
        """Keep a new cloudlet's Kafka credentials and CRM key pair(s) in the backend."""
        if not kafka and crm_keys is None:
            return
        backend = self._rt.secrets("Kafka credentials and CRM access keys")
        where = {
            "region": self._rt.config.region,
            "org": cloudlet.key.organization,
            "name": cloudlet.key.name,
        }
        if kafka:
            await secrets.save_kafka_creds(
                backend, **where, endpoint=cloudlet.kafka_cluster, **kafka
            )
        if crm_keys is not None:
            await secrets.save_crm_access_keys(
                backend, **where, primary=crm_keys[0], secondary=crm_keys[1]
            )

    async def _delete_cloudlet_secrets(self, cloudlet: cloudlet_pb2.Cloudlet) -> None:
        """Remove a deleted cloudlet's CRM keys and Kafka credentials; failures are logged."""
        backend = self._rt.optional_secrets
        if backend is None:
            return
        try:
            await secrets.delete_cloudlet_secrets(
                backend,
                region=self._rt.config.region,
                org=cloudlet.key.organization,
                name=cloudlet.key.name,
            )
        except EdgeError as err:
            log.warning("secrets of deleted cloudlet %s stay stored: %s", cloudlet.key, err)

    # -- create ----------------------------------------------------------------------------

    async def create(self, request: cloudlet_pb2.Cloudlet, sink: Sink) -> None:
        """CreateCloudlet: pre-checks, commit, CCRM onboarding, CRM bring-up; undo on failure.

        Raises:
            EdgeError: A refused request, or the failure the operation ended with.
        """
        cloudlet = _copy(request)
        _cloudlet.precheck_create(cloudlet, version_tag=self._rt.config.version_tag)
        await self._create(CallContext(), cloudlet, sink)

    async def _create(self, cctx: CallContext, cloudlet: cloudlet_pb2.Cloudlet, sink: Sink) -> None:
        rt = self._rt
        cctx.take_override(cloudlet)
        if not cloudlet.platform_type:
            raise InvalidArgument("Cloudlet platform type not specified")
        try:
            features = features_for(rt.caches, cloudlet.platform_type)
        except NotFound as err:
            raise NotFound(f"Failed to get features for platform: {err.message}") from None
        vm_pool_in_use = bool(cloudlet.vm_pool) and any(
            c.key.organization == cloudlet.key.organization and c.vm_pool == cloudlet.vm_pool
            for _, c in rt.caches.items(CLOUDLET)
        )
        _cloudlet.check_features(cloudlet, features, vm_pool_in_use=vm_pool_in_use)
        _cloudlet.validate_alliance_orgs(cloudlet)
        stream = self._stream(cctx, cloudlet.key, sink)
        if not cloudlet.physical_name:
            cloudlet.physical_name = cloudlet.key.name
            await stream.send("Setting physicalname to match cloudlet name")
        if not cloudlet.flavor.name:
            cloudlet.flavor.name = _cloudlet.DEFAULT_PLATFORM_FLAVOR
        access_vars = dict(cloudlet.access_vars)
        if access_vars:
            _cloudlet.check_prop_vars(access_vars, features.access_vars, "access")
            self._rt.secrets("Cloudlet access vars")  # refuse now if there is no backend
            cloudlet.access_vars.clear()
            cloudlet.access_vars.update(secrets.redact(access_vars))
        if bool(cloudlet.kafka_user) != bool(cloudlet.kafka_password):
            raise InvalidArgument("Must specify both kafka username and password, or neither")
        if not cloudlet.kafka_cluster and cloudlet.kafka_user:
            raise InvalidArgument(
                "Must specify a kafka cluster endpoint in addition to kafka credentials"
            )
        kafka: dict[str, str] = {}
        if cloudlet.kafka_user:
            self._rt.secrets("Kafka credentials")  # refuse now if there is no backend
            kafka = {"username": cloudlet.kafka_user, "password": cloudlet.kafka_password}
            cloudlet.kafka_user = cloudlet.kafka_password = ""
        # A fresh CRM key pair, kept in the secrets backend; without one the CRM must
        # upgrade its key when it connects (as the original's on-edge CRMs always do).
        crm_keys = _new_crm_keys(cloudlet) if rt.optional_secrets is not None else None
        cloudlet.crm_access_key_upgrade_required = cloudlet.crm_on_edge
        if cloudlet.platform_high_availability:
            cloudlet.secondary_crm_access_key_upgrade_required = cloudlet.crm_on_edge
        if cloudlet.env_var:
            _cloudlet.check_prop_vars(cloudlet.env_var, features.properties, "env")

        notes: list[str] = []
        cfg = rt.config

        def commit(txn: Txn) -> cloudlet_pb2.Cloudlet:
            notes.clear()
            new = _copy(cloudlet)
            existing = txn.get(CLOUDLET, new.key)
            if existing is not None:
                if not cctx.undo:
                    if existing.state == TS.CREATE_ERROR:
                        notes.append(f"Previous create failed, [{' '.join(existing.errors)}]")
                        notes.append("Use DeleteCloudlet to remove and try again")
                    raise keys.already_exists(new.key)
                new.ClearField("errors")
            pf = txn.get(PLATFORM_FEATURES, new.platform_type)
            if pf is None:
                raise keys.not_found(cloudlet_pb2.PlatformFeatures(platform_type=new.platform_type))
            if pf.delete_prepare:
                raise keys.being_deleted(pf)
            zone = _cloudlet.zone_key(new)
            if zone is not None:
                txn.require(ZONE, zone)
            if new.flavor.name != _cloudlet.DEFAULT_PLATFORM_FLAVOR:
                txn.require(FLAVOR, new.flavor)
            if new.vm_pool:
                pool = vmpool_pb2.VMPoolKey(organization=new.key.organization, name=new.vm_pool)
                txn.require(VM_POOL, pool)
            if new.gpu_config.driver.name:
                driver_key = new.gpu_config.driver
                if driver_key.organization and driver_key.organization != new.key.organization:
                    raise InvalidArgument(
                        f"Can only use {new.key.organization} or '' org gpu drivers"
                    )
                driver = txn.require(GPU_DRIVER, driver_key)
                if driver.state == CHANGE_IN_PROGRESS:
                    raise FailedPrecondition(f"GPU driver {compact_text(driver_key)} is busy")
                new.license_config_storage_path = _cloudlet.gpu_license_storage_path(
                    driver.key, cfg.region, new.key
                )
                if new.gpu_config.license_config and not new.gpu_config.license_config_md5sum:
                    raise FailedPrecondition(
                        "Validating a GPU driver license config needs the registry "
                        f"credentials kept in Vault, {NO_VAULT}"
                    )
            if new.trust_policy:
                policy = autoscalepolicy_pb2.PolicyKey(
                    organization=new.key.organization, name=new.trust_policy
                )
                txn.require(TRUST_POLICY, policy)
            for table in new.res_tag_map.values():
                txn.require(RES_TAG_TABLE, table)
            _cloudlet.validate_cloudlet(new)
            _cloudlet.validate_resource_quotas(
                pf.resource_quota_properties, None, new.resource_quotas
            )
            new.dns_label = ""
            for label in _cloudlet.dns_label_candidates(new.key):
                if not txn.has_key(dns_label_key(label)):
                    new.dns_label = label
                    break
            if not new.dns_label:
                raise _cloudlet.dns_label_error(new.key)
            new.root_lb_fqdn = _cloudlet.root_lb_fqdn(new.dns_label, cfg.region, cfg.app_dns_root)
            new.static_root_lb_fqdn = new.root_lb_fqdn
            if pf.is_single_kubernetes_cluster:
                raise Unimplemented(
                    f"Cloudlets of single kubernetes cluster platforms ({new.platform_type}) "
                    "are not supported yet: their built-in cluster comes with the ClusterInst "
                    "slice"
                )
            if new.single_kubernetes_cluster_owner:
                raise InvalidArgument(
                    "Single kubernetes cluster owner can only be set on a single cluster platform"
                )
            if new.single_kubernetes_namespace:
                raise InvalidArgument(
                    "Single kubernetes namespace can only be set on a single cluster platform"
                )
            new.created_at.CopyFrom(_ids.now_timestamp())
            new.obj_id = _ids.ulid()
            new.state = TS.READY if cctx.ignore_crm else TS.CREATE_REQUESTED
            new.delete_prepare = False
            txn.put(new)
            txn.put_key(dns_label_key(new.dns_label), new.dns_label.encode())
            return new

        try:
            stored, revision = await rt.engine.apply_at(
                commit, reads=[keys.object_store_key(cloudlet)]
            )
        except AlreadyExists:
            for note in notes:
                await stream.send(note)
            raise

        state: dict[str, bool] = {"resources_created": False}

        async def work() -> None:
            if access_vars:
                await self._save_access_vars(stored, access_vars, features, merge=False)
            await self._save_cloudlet_secrets(stored, kafka, crm_keys)
            if cctx.ignore_crm:
                return
            await self._after_create(cctx, stored, features, stream, state)

        async def on_error(err: BaseException) -> None:
            if await mark_cancelled(self._set_state, CLOUDLET, stored.key, err):
                return
            await stream.send(err.message if isinstance(err, EdgeError) else str(err))
            await stream.send("Deleting Cloudlet due to failures")
            try:
                await self._delete(
                    cctx.with_undo(stream),
                    stored,
                    sink,
                    resources_created=state["resources_created"],
                )
            except EdgeError as undo_err:
                log.warning("undo of cloudlet create %s failed: %s", stored.key, undo_err)

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_error=gone_check(rt, CLOUDLET, stored.key),
            subscribe=stored.crm_on_edge and not cctx.ignore_crm,
        )

    async def _after_create(
        self,
        cctx: CallContext,
        stored: cloudlet_pb2.Cloudlet,
        features: cloudlet_pb2.PlatformFeatures,
        stream: OpStream,
        state: dict[str, bool],
    ) -> None:
        rt = self._rt
        services = rt.tracked
        timeout = seconds(rt.settings().create_cloudlet_timeout)
        deadline = time.monotonic() + timeout
        restricted = stored.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS
        published: set[bytes] = set()
        if not restricted:
            request = _copy(stored)
            request.state = TS.CREATE_REQUESTED
            del request.fields[:]
            request.fields.extend(ALL_FIELDS)
            state["resources_created"] = True
            try:
                await services.ccrm.apply_cloudlet(
                    features.node_type,
                    request,
                    timeout=timeout,
                    on_info=await self._forward_status(stream, published),
                )
            except EdgeError as err:
                if not cctx.ignore_crm_errors:
                    raise _prefixed(err, "Cloudlet onboarding failed: ") from err
                await stream.send(f"Create Cloudlet ignoring CRM failure: {err.message}")

        external = rt.config.external_api_addr or services.controller_id.partition("@")[2]

        def finish(txn: Txn) -> None:
            cloudlet = txn.get(CLOUDLET, stored.key)
            if cloudlet is None:
                raise keys.not_found(stored.key)
            changed = _copy(cloudlet)
            if restricted or not stored.crm_on_edge:
                changed.state = TS.READY
            if stored.deployment_local or features.cloudlet_services_local:
                changed.HostController = external
            if changed != cloudlet:
                txn.put(changed)

        await rt.engine.apply(finish)
        if restricted:
            await stream.send(
                "Cloudlet configured successfully. Please run `GetCloudletManifest` to bringup "
                "Platform VM(s) for cloudlet services"
            )
            return
        if not stored.crm_on_edge:
            await stream.send(CREATED)
            return
        if stream.subscription is not None:
            # the CCRM's reports were published too; their lines are forwarded already
            await stream.subscription.drain(published)
        info = rt.caches.get(CLOUDLET_INFO, keys.key_string(stored.key))
        await wait_for_info(
            _READY_WAIT,
            current=info.state if info is not None else CS.CLOUDLET_STATE_NOT_PRESENT,
            subscription=stream.subscription,
            decode=lambda data: codec.decode(CLOUDLET_INFO, data),
            send=stream.send,
            success_msg=CREATED,
            timeout=max(deadline - time.monotonic(), 0.0),
        )

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, request: cloudlet_pb2.Cloudlet, sink: Sink) -> None:
        """DeleteCloudlet: in-use checks, delete-prepare, CCRM delete, removal.

        Raises:
            EdgeError: A refused request, or the failure the operation ended with.
        """
        await self._delete(CallContext(), _copy(request), sink, resources_created=True)

    def _delete_checks(self, txn: Txn, cloudlet: cloudlet_pb2.Cloudlet) -> None:
        refs = txn.get(CLOUDLET_REFS, cloudlet.key)
        if refs is not None:
            for ck in refs.cluster_insts:
                raise FailedPrecondition(
                    f"Cloudlet in use by ClusterInst name {ck.name} Organization {ck.organization}"
                )
            for ak in refs.vm_app_insts:
                raise FailedPrecondition(f"Cloudlet in use by AppInst {keys.key_string(ak)}")
        caches = self._rt.caches
        for _, cluster in caches.items(CLUSTER_INST):
            if cluster.cloudlet_key == cloudlet.key:
                raise FailedPrecondition(
                    f"Cloudlet in use by ClusterInst name {cluster.key.name} Organization "
                    f"{cluster.key.organization}"
                )
        for key, inst in caches.items(APP_INST):
            if inst.cloudlet_key == cloudlet.key:
                raise FailedPrecondition(f"Cloudlet in use by AppInst {key}")

    async def _delete(
        self,
        cctx: CallContext,
        request: cloudlet_pb2.Cloudlet,
        sink: Sink,
        *,
        resources_created: bool,
    ) -> None:
        rt = self._rt
        services = rt.tracked
        cctx.take_override(request)
        key = cloudletkey_pb2.CloudletKey()
        key.CopyFrom(request.key)
        stream = self._stream(cctx, key, sink)
        previous: list[int] = []

        def mark(txn: Txn) -> cloudlet_pb2.Cloudlet:
            previous.clear()
            cloudlet = txn.get(CLOUDLET, key)
            if cloudlet is None:
                raise keys.not_found(key)
            if not cctx.ignore_transient and cloudlet.delete_prepare:
                raise keys.being_deleted(key)
            self._delete_checks(txn, cloudlet)
            validate_delete_state(cctx, "Cloudlet", cloudlet.state)
            previous.append(cloudlet.state)
            cloudlet.delete_prepare = True
            cloudlet.state = TS.DELETE_PREPARE
            txn.put(cloudlet)
            return cloudlet

        if not cctx.undo:
            await self._delete_idle_auto_clusters(key, sink)
        cloudlet, revision = await rt.engine.apply_at(mark)
        prev_state = previous[0]
        try:
            features: cloudlet_pb2.PlatformFeatures | None = features_for(
                rt.caches, cloudlet.platform_type
            )
        except NotFound:
            features = None

        async def work() -> None:
            for nkey, network in rt.caches.items(NETWORK):
                if network.key.cloudlet_key == key:
                    raise FailedPrecondition(f"Cloudlet in use by Network {nkey}")
            failure: EdgeError | None = None
            restricted = cloudlet.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS
            if not cctx.ignore_crm and not restricted:
                try:
                    if features is None:
                        raise keys.not_found(
                            cloudlet_pb2.PlatformFeatures(platform_type=cloudlet.platform_type)
                        )
                    await self._ccrm_delete(cloudlet, features, stream)
                except EdgeError as err:
                    if cctx.ignore_crm_errors or not resources_created or cctx.undo:
                        await stream.send(f"Delete Cloudlet ignoring CRM failure: {err.message}")
                    else:
                        failure = err

            def remove(txn: Txn) -> None:
                current = txn.get(CLOUDLET, key)
                if current is None:
                    raise keys.not_found(key)
                if failure is not None:
                    return
                txn.delete(CLOUDLET, key)
                if current.dns_label:
                    txn.delete_key(dns_label_key(current.dns_label))
                txn.delete(CLOUDLET_REFS, key)
                txn.delete(CLOUDLET_IPS, key)

            await rt.engine.apply_at(remove)
            if failure is not None:
                raise failure
            await stream.send(DELETED)
            await self._delete_access_vars(cloudlet)
            await self._delete_cloudlet_secrets(cloudlet)
            await cleanup_info(rt, cloudlet, timeout=services.info_cleanup_timeout)
            await self._delete_autoprov_info(key)
            await cleanup_nodes(rt.engine, key)
            await alert_hub(rt).cleanup_cloudlet(key)

        async def on_error(err: BaseException) -> None:
            def restore(txn: Txn) -> None:
                current = txn.get(CLOUDLET, key)
                if current is None:
                    return
                changed = _copy(current)
                if changed.state == TS.DELETE_PREPARE:
                    changed.state = prev_state  # type: ignore[assignment]
                elif changed.state != TS.DELETE_ERROR:
                    changed.state = TS.DELETE_ERROR
                changed.delete_prepare = False
                if changed != current:
                    txn.put(changed)

            try:
                await rt.engine.apply(restore)
            except EdgeError as undo_err:
                log.warning("could not undo delete prepare of %s: %s", key, undo_err)

        await self._run(stream, revision, work, on_error=on_error, cleanup_on_success=True)

    async def _delete_idle_auto_clusters(
        self, key: cloudletkey_pb2.CloudletKey, sink: Sink
    ) -> None:
        """Cascade: system-made clusters without AppInsts go first.

        Those are the cloudlet's reservable autoclusters and its default multi-tenant
        cluster (the original's deleteCloudletOk).

        Worker errors are ignored (the cloudlet is going away); clusters still in use stay
        and make the cloudlet's in-use check refuse the delete.
        """
        caches = self._rt.caches
        ops = ClusterInstOps(self._rt)
        default_mt = keys.key_string(default_mt_cluster_key(key))  # the system made it too
        for ckey, cluster in list(caches.items(CLUSTER_INST)):
            if cluster.cloudlet_key != key:
                continue
            if not (cluster.auto and cluster.reservable) and ckey != default_mt:
                continue
            crefs = caches.get(CLUSTER_REFS, ckey)
            if crefs is not None and crefs.apps:
                continue
            cctx = CallContext(override=TS.IGNORE_CRM_ERRORS, skip_cloudlet_ready_check=True)
            try:
                await ops.delete_internal(cctx, cluster, sink)
            except EdgeError as err:
                log.warning("cascaded delete of autocluster %s failed: %s", ckey, err)

    async def _ccrm_delete(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        features: cloudlet_pb2.PlatformFeatures,
        stream: OpStream,
    ) -> None:
        rt = self._rt
        await self._set_state(CLOUDLET, cloudlet.key, TS.DELETE_REQUESTED)
        request = _copy(cloudlet)
        request.state = TS.DELETE_REQUESTED
        del request.fields[:]
        request.fields.append(_cloudlet.STATE)
        await rt.tracked.ccrm.apply_cloudlet(
            features.node_type,
            request,
            timeout=seconds(rt.settings().update_cloudlet_timeout),
            on_info=await self._forward_status(stream),
        )

    async def _delete_autoprov_info(self, key: cloudletkey_pb2.CloudletKey) -> None:
        def fn(txn: Txn) -> None:
            if txn.get(AUTOPROV_INFO, key) is not None:
                txn.delete(AUTOPROV_INFO, key)

        with contextlib.suppress(EdgeError):
            await self._rt.engine.apply(fn)

    # -- update ----------------------------------------------------------------------------

    async def update(self, request: cloudlet_pb2.Cloudlet, sink: Sink) -> None:
        """UpdateCloudlet: change the listed fields.

        CRM or CCRM work follows for env vars, quotas and GPU config; trust policy and
        maintenance changes run their state machines.

        Raises:
            EdgeError: A refused request, or the failure the operation ended with.
        """
        rt = self._rt
        cctx = CallContext()
        update = _copy(request)
        cctx.take_override(update)
        _cloudlet.validate_alliance_orgs(update)
        paths = list(update.fields)
        fields.check_updatable(paths, _cloudlet.UPDATABLE, cloudlet_pb2.Cloudlet.DESCRIPTOR)
        fmap = fields.FieldSet(paths)
        if fmap.has(_cloudlet.NUM_DYNAMIC_IPS):
            static = (
                fmap.has(_cloudlet.IP_SUPPORT) and update.ip_support == common_pb2.IP_SUPPORT_STATIC
            )
            if update.num_dynamic_ips < 1 and not static:
                raise InvalidArgument(
                    "Cannot specify less than one dynamic IP unless Ip Support Static is specified"
                )
        _cloudlet.validate_cloudlet(update, paths)
        cur = rt.caches.get(CLOUDLET, keys.key_string(update.key))
        if cur is None:
            raise keys.not_found(update.key)
        try:
            features = features_for(rt.caches, cur.platform_type)
        except NotFound as err:
            raise NotFound(f"Failed to get features for platform: {err.message}") from None
        if fmap.has(_cloudlet.SINGLE_KUBERNETES_CLUSTER_OWNER):
            raise InvalidArgument(
                "Changing the single kubernetes cluster owner is not supported yet"
            )
        kafka_cluster = fmap.has(_cloudlet.KAFKA_CLUSTER)
        kafka_user = fmap.has(_cloudlet.KAFKA_USER)
        kafka_password = fmap.has(_cloudlet.KAFKA_PASSWORD)
        if kafka_cluster and not update.kafka_cluster:
            update.kafka_user = update.kafka_password = ""
        elif kafka_user or kafka_password:
            if kafka_user != kafka_password:
                raise InvalidArgument("Must specify both kafka username and password, or neither")
            if not kafka_cluster:
                raise InvalidArgument(
                    "Please also specify endpoint when changing username and password"
                )
            await secrets.save_kafka_creds(
                self._rt.secrets("Kafka credentials"),
                region=rt.config.region,
                org=update.key.organization,
                name=update.key.name,
                endpoint=update.kafka_cluster,
                username=update.kafka_user,
                password=update.kafka_password,
            )
        update.kafka_user = update.kafka_password = ""
        crm_update = False
        if fmap.has_or_child(_cloudlet.ENV_VAR):
            if fmap.has(_cloudlet.MAINTENANCE_STATE):
                raise InvalidArgument("Cannot set envvars if maintenance state is set")
            crm_update = True
        if fmap.has_or_child(_cloudlet.ACCESS_VARS):
            # merged into what is stored (the original's UpdateCloudletAccessVars), before
            # the commit, so the object records the redacted full set
            redacted = await self._save_access_vars(
                cur, dict(update.access_vars), features, merge=True
            )
            update.access_vars.clear()
            update.access_vars.update({**cur.access_vars, **redacted})
        if fmap.has_or_child(_cloudlet.GPU_CONFIG) and update.gpu_config.license_config:
            raise FailedPrecondition(
                "Validating a GPU driver license config needs the registry credentials kept in "
                f"Vault, {NO_VAULT}"
            )
        trust_update = fmap.has(_cloudlet.TRUST_POLICY)
        cfg = rt.config
        outcome: dict[str, Any] = {}

        def commit(txn: Txn) -> cloudlet_pb2.Cloudlet:
            outcome.clear()
            needs_crm = crm_update
            current = txn.get(CLOUDLET, update.key)
            if current is None:
                raise keys.not_found(update.key)
            info = txn.get(CLOUDLET_INFO, update.key)
            if info is None:
                raise FailedPrecondition(f"Missing cloudlet info: {_go_struct(update.key)}")
            extra = list(paths)
            if fmap.has_or_child(_cloudlet.RESOURCE_QUOTAS):
                infra = {
                    (r.name if not r.type else f"{r.type}/{r.name}"): r
                    for r in info.resources_snapshot.info
                }
                _cloudlet.validate_resource_quotas(
                    features.resource_quota_properties, infra, update.resource_quotas
                )
                needs_crm = True
            if fmap.has_or_child(_cloudlet.GPU_CONFIG):
                if not update.gpu_config.driver.name:
                    update.ClearField("gpu_config")
                    update.license_config_storage_path = ""
                else:
                    driver_key = update.gpu_config.driver
                    if (
                        driver_key.organization
                        and driver_key.organization != update.key.organization
                    ):
                        raise InvalidArgument(
                            f"Can only use {update.key.organization} or '' org gpu drivers"
                        )
                    driver = txn.get(GPU_DRIVER, driver_key)
                    if driver is None:
                        raise NotFound(f"GPU driver {compact_text(driver_key)} not found")
                    if driver.delete_prepare:
                        raise keys.being_deleted(driver_key)
                    if driver.state == CHANGE_IN_PROGRESS:
                        raise FailedPrecondition(f"GPU driver {compact_text(driver_key)} is busy")
                    update.license_config_storage_path = _cloudlet.gpu_license_storage_path(
                        driver.key, cfg.region, update.key
                    )
                extra.append("57")
                needs_crm = True
            if fmap.has_or_child(_cloudlet.ZONE) and current.zone != update.zone:
                zone = _cloudlet.zone_key(update)
                if zone is not None:
                    txn.require(ZONE, zone)
            merged = _copy(current)
            fields.apply_fields(merged, update, extra)
            diff = fields.diff_fields(current, merged)
            if fmap.has(_cloudlet.SINGLE_KUBERNETES_NAMESPACE):
                raise InvalidArgument(
                    "Single kubernetes namespace can only be set on a single cluster platform"
                )
            new_maintenance = merged.maintenance_state
            maintenance_changed = new_maintenance != current.maintenance_state
            if maintenance_changed:
                merged.maintenance_state = current.maintenance_state
                diff = [p for p in diff if p != _cloudlet.MAINTENANCE_STATE]
            if new_maintenance in (CS.MAINTENANCE_START, CS.MAINTENANCE_START_NO_FAILOVER) and (
                current.maintenance_state != CS.NORMAL_OPERATION
            ):
                raise FailedPrecondition(
                    "Cloudlet must be in NormalOperation before starting maintenance"
                )
            if trust_update:
                if maintenance_changed:
                    raise InvalidArgument(
                        "Cannot change both maintenance state and trust policy at the same time"
                    )
                if not cctx.ignore_crm and current.state != TS.READY:
                    raise FailedPrecondition(
                        "Trust policy cannot be changed while cloudlet is not ready"
                    )
                if update.trust_policy:
                    if not features.supports_trust_policy:
                        raise InvalidArgument(
                            f"Trust Policy not supported on {current.platform_type}"
                        )
                    policy = txn.require(
                        TRUST_POLICY,
                        autoscalepolicy_pb2.PolicyKey(
                            organization=update.key.organization, name=update.trust_policy
                        ),
                    )
                    check_cloudlet_app_insts_trust(txn, rt.caches, current, policy)
            if (
                current.enable_default_serverless_cluster
                != merged.enable_default_serverless_cluster
            ):
                if maintenance_changed:
                    raise InvalidArgument(
                        "Cannot change both enable default serverless cluster and maintenance state"
                    )
                if merged.enable_default_serverless_cluster and not (
                    features.supports_multi_tenant_cluster
                ):
                    raise InvalidArgument(
                        f"Serverless cluster not supported on {current.platform_type}"
                    )
                outcome["default_mt_cluster"] = True
            if needs_crm and not cctx.ignore_crm:
                merged.state = TS.UPDATE_REQUESTED
            if trust_update and cctx.ignore_crm:
                merged.trust_policy_state = TS.READY if merged.trust_policy else TS.NOT_PRESENT
            outcome.update(
                diff=diff,
                crm=needs_crm,
                maintenance=new_maintenance if maintenance_changed else None,
            )
            if merged == current:
                return merged
            merged.updated_at.CopyFrom(_ids.now_timestamp())
            txn.put(merged)
            return merged

        merged, revision = await rt.engine.apply_at(commit)
        stream = self._stream(cctx, update.key, sink)

        async def work() -> None:
            await self._after_update(cctx, merged, features, fmap, outcome, stream, trust_update)

        async def on_error(err: BaseException) -> None:
            await self._set_state(CLOUDLET, update.key, TS.UPDATE_ERROR)

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            subscribe=merged.crm_on_edge and bool(outcome.get("crm")) and not cctx.ignore_crm,
        )

    async def _after_update(
        self,
        cctx: CallContext,
        merged: cloudlet_pb2.Cloudlet,
        features: cloudlet_pb2.PlatformFeatures,
        fmap: fields.FieldSet,
        outcome: dict[str, Any],
        stream: OpStream,
        trust_update: bool,
    ) -> None:
        rt = self._rt
        settings = rt.settings()
        timeout = seconds(settings.update_cloudlet_timeout)
        await propagate_cloudlet_location(rt.engine, merged.key, fmap)
        if outcome.get("default_mt_cluster"):
            schedule_default_mt_cluster(rt, merged.key)
        if outcome["crm"] and not cctx.ignore_crm:
            if merged.crm_on_edge:
                # The CloudletInfo is still READY from before: done is the Cloudlet leaving
                # UPDATE_REQUESTED, which only the CRM's reports after this commit move.
                async def refresh() -> tuple[int, list[str]]:
                    state, errors = await self._stored(CLOUDLET, merged.key)
                    return _UPDATE_PROGRESS.get(state, CS.CLOUDLET_STATE_UNKNOWN), list(errors)

                await wait_for_info(
                    _UPGRADE_WAIT,
                    current=CS.CLOUDLET_STATE_UNKNOWN,
                    subscription=stream.subscription,
                    decode=lambda data: codec.decode(CLOUDLET_INFO, data),
                    send=stream.send,
                    success_msg=UPDATED,
                    timeout=timeout,
                    refresh=refresh,
                )
                return
            request = _copy(merged)
            del request.fields[:]
            request.fields.extend([*outcome["diff"], _cloudlet.STATE])
            await rt.tracked.ccrm.apply_cloudlet(
                features.node_type,
                request,
                timeout=timeout,
                on_info=await self._forward_status(stream),
            )
            await stream.send(UPDATED)
            return
        if trust_update and not cctx.ignore_crm:
            await self._update_trust_policy(merged, features, stream)
            return
        maintenance = outcome["maintenance"]
        if maintenance is None:
            await stream.send(UPDATED)
            return
        await self._maintenance(cctx, merged, features, maintenance, stream)

    async def update_trust_policy(self, key: cloudletkey_pb2.CloudletKey, sink: Sink) -> None:
        """Push the cloudlet's (changed) trust policy to it: the TrustPolicy update's fan-out."""
        cloudlet = self._rt.caches.get(CLOUDLET, keys.key_string(key))
        if cloudlet is None:
            raise keys.not_found(key)
        features = features_for(self._rt.caches, cloudlet.platform_type)
        stream = self._stream(CallContext(), key, sink)
        await self._update_trust_policy(cloudlet, features, stream)

    async def _update_trust_policy(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        features: cloudlet_pb2.PlatformFeatures,
        stream: OpStream,
    ) -> None:
        rt = self._rt
        name = cloudlet.trust_policy
        await stream.send(
            f"Doing TrustPolicy: {name} Update for Cloudlet: {compact_text(cloudlet.key)}"
        )
        problem: list[str] = []

        def request(txn: Txn) -> cloudlet_pb2.Cloudlet:
            problem.clear()
            current = txn.get(CLOUDLET, cloudlet.key)
            if current is None:
                raise keys.not_found(cloudlet.key)
            info = rt.caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
            if info is None:
                problem.append(f"CloudletInfo not found for {compact_text(cloudlet.key)}")
            elif info.state != CS.CLOUDLET_STATE_READY:
                problem.append(
                    "Cannot modify trust policy for cloudlet in state: "
                    f"{appcommon_pb2.CloudletState.Name(info.state)}"
                )
            current.trust_policy_state = TS.UPDATE_ERROR if problem else TS.UPDATE_REQUESTED
            current.updated_at.CopyFrom(_ids.now_timestamp())
            txn.put(current)
            return current

        current = await rt.engine.apply(request)
        if problem:
            raise FailedPrecondition(problem[0])
        timeout = seconds(rt.settings().update_trust_policy_timeout)
        if current.crm_on_edge:
            target = TS.READY if name else TS.NOT_PRESENT

            def reached() -> Message | None:
                found = rt.caches.get(CLOUDLET, keys.key_string(cloudlet.key))
                if found is not None and found.trust_policy_state in (target, TS.UPDATE_ERROR):
                    return found
                return None

            found = await _cached(reached, timeout)
            key_text = compact_text(cloudlet.key)
            if found is None:
                await stream.send(
                    f"In progress TrustPolicy: {name} Update for Cloudlet: {key_text} -- "
                    "Timed out waiting for trust policy state"
                )
                raise DeadlineExceeded("Timed out waiting for trust policy state")
            assert isinstance(found, cloudlet_pb2.Cloudlet)  # noqa: S101 - narrowing
            if found.trust_policy_state == TS.UPDATE_ERROR:
                await stream.send(f"Failed TrustPolicy: {name} Update for Cloudlet: {key_text}")
                raise FailedPrecondition(f"Failed to update trust policy on cloudlet {key_text}")
            await stream.send(f"Successful TrustPolicy: {name} Update for Cloudlet: {key_text}")
            return
        ccrm_request = _copy(current)
        del ccrm_request.fields[:]
        ccrm_request.fields.extend(["38", _cloudlet.TRUST_POLICY])
        await rt.tracked.ccrm.apply_cloudlet(
            features.node_type,
            ccrm_request,
            timeout=timeout,
            on_info=await self._forward_status(stream),
        )

    async def _set_maintenance(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        state: int,
        node_type: str,
        timeout: float,  # noqa: ASYNC109 - the CCRM call's gRPC deadline
    ) -> None:
        def fn(txn: Txn) -> cloudlet_pb2.Cloudlet | None:
            current = txn.get(CLOUDLET, cloudlet.key)
            if current is None:
                raise keys.not_found(cloudlet.key)
            if current.maintenance_state == state:
                return None
            current.maintenance_state = state  # type: ignore[assignment]
            txn.put(current)
            return current

        changed = await self._rt.engine.apply(fn)
        to_crm = state in (CS.CRM_REQUESTED, CS.NORMAL_OPERATION_INIT)
        if changed is not None and not changed.crm_on_edge and to_crm:
            request = _copy(changed)
            del request.fields[:]
            request.fields.append(_cloudlet.MAINTENANCE_STATE)

            async def merge(info: Message) -> None:
                assert isinstance(info, cloudlet_pb2.CloudletInfo)  # noqa: S101 - narrowing
                await apply_info(self._rt, info)

            await self._rt.tracked.ccrm.apply_cloudlet(
                node_type, request, timeout=timeout, on_info=merge
            )

    async def _wait_maintenance(
        self,
        otype: Any,
        key: cloudletkey_pb2.CloudletKey,
        target: int,
        error: int,
        timeout: float,  # noqa: ASYNC109 - the Settings maintenance timeout
        what: str,
    ) -> Any:
        def check() -> Message | None:
            found: Message | None = self._rt.caches.get(otype, keys.key_string(key))
            if found is not None and getattr(found, "maintenance_state", None) in (target, error):
                return found
            return None

        found = await _cached(check, timeout)
        if found is None:
            raise DeadlineExceeded(f"timed out waiting for {what} maintenance state")
        return found

    async def _maintenance(
        self,
        cctx: CallContext,
        cloudlet: cloudlet_pb2.Cloudlet,
        features: cloudlet_pb2.PlatformFeatures,
        target: int,
        stream: OpStream,
    ) -> None:
        rt = self._rt
        settings = rt.settings()
        timeout = seconds(settings.cloudlet_maintenance_timeout)
        request_timeout = seconds(settings.update_cloudlet_timeout)
        node = features.node_type
        key = cloudlet.key
        if target == CS.NORMAL_OPERATION:
            if not cctx.ignore_crm:
                await self._set_maintenance(
                    cloudlet, CS.NORMAL_OPERATION_INIT, node, request_timeout
                )
                info = await self._wait_maintenance(
                    CLOUDLET_INFO, key, CS.NORMAL_OPERATION, CS.CRM_ERROR, timeout, "CloudletInfo"
                )
                if info.maintenance_state == CS.CRM_ERROR:
                    raise FailedPrecondition("CRM encountered some errors, aborting")
            await self._set_maintenance(cloudlet, CS.NORMAL_OPERATION, node, request_timeout)
            await stream.send("Cloudlet is back to normal operation")
            return
        if target == CS.MAINTENANCE_START:
            await stream.send("Starting AutoProv failover")

            def reset(txn: Txn) -> None:
                txn.put(
                    autoprovpolicy_pb2.AutoProvInfo(key=key, maintenance_state=CS.NORMAL_OPERATION)
                )

            await rt.engine.apply(reset)
            await self._set_maintenance(cloudlet, CS.FAILOVER_REQUESTED, node, request_timeout)
            result = await self._wait_maintenance(
                AUTOPROV_INFO, key, CS.FAILOVER_DONE, CS.FAILOVER_ERROR, timeout, "AutoProvInfo"
            )
            for line in [*result.completed, *result.errors]:
                await stream.send(line)
            if result.errors:
                await self._set_maintenance(cloudlet, CS.NORMAL_OPERATION, node, request_timeout)
                raise FailedPrecondition(
                    "AutoProv failover encountered some errors, aborting maintenance"
                )
            await stream.send("AutoProv failover completed")
        await stream.send("Starting CRM maintenance")
        if not cctx.ignore_crm:
            await self._set_maintenance(cloudlet, CS.CRM_REQUESTED, node, request_timeout)
            info = await self._wait_maintenance(
                CLOUDLET_INFO, key, CS.CRM_UNDER_MAINTENANCE, CS.CRM_ERROR, timeout, "CloudletInfo"
            )
            if info.maintenance_state == CS.CRM_ERROR:
                await self._set_maintenance(cloudlet, CS.NORMAL_OPERATION, node, request_timeout)
                raise FailedPrecondition("CRM encountered some errors, aborting maintenance")
        await stream.send("CRM maintenance started")
        await self._set_maintenance(cloudlet, CS.UNDER_MAINTENANCE, node, request_timeout)
        await stream.send("Cloudlet is in maintenance")


class CloudletRecovery:
    """Recovery (§5.8) of cloudlet operations whose controller is gone.

    - CRM-on-edge creates and updates keep going without their API call: the CRM's report
      reaches some controller, which moves the cloudlet to Ready or an error state. Only
      when the operation's timeout has passed (counted from its stream's start) is the
      cloudlet failed.
    - Everything else (a CCRM call, a delete) died with its controller: the cloudlet gets
      the error state of its operation (delete-prepare cleared), so a user can delete it
      (or delete it again) without an override.

    Either way the progress stream gets an error entry, so `StreamCloudlet` readers end.
    """

    def __init__(self, runtime: TrackedRuntime) -> None:
        self._rt = runtime

    def stuck(self, caches: Caches) -> list[tuple[str, Message]]:
        """Cloudlets in transient states (CrmInitok included), with their stream names."""
        out: list[tuple[str, Message]] = []
        for _, cloudlet in caches.items(CLOUDLET):
            if cloudlet.state in _FAILED_STATE:
                out.append((stream_key(cloudlet.key), cloudlet))
        return out

    async def recover(self, obj: Message, start: StreamStart, reason: str) -> None:
        """Fail (or, for a CRM on the edge still in time, leave) one orphaned cloudlet."""
        assert isinstance(obj, cloudlet_pb2.Cloudlet)  # noqa: S101 - narrowing
        rt = self._rt
        settings = rt.settings()
        message = f"{reason}; operation abandoned in state {_state_text(obj.state)}"
        waiting = {TS.CREATE_REQUESTED, TS.CRM_INITOK, TS.UPDATE_REQUESTED, TS.UPDATING}
        if obj.crm_on_edge and obj.state in waiting:
            create = obj.state in (TS.CREATE_REQUESTED, TS.CRM_INITOK)
            limit = settings.create_cloudlet_timeout if create else settings.update_cloudlet_timeout
            if time.time() < start.started_at + seconds(limit):
                return  # the CRM may still finish it
            info = rt.caches.get(CLOUDLET_INFO, keys.key_string(obj.key))
            current = info.state if info is not None else CS.CLOUDLET_STATE_NOT_PRESENT
            message = (
                f"Timed out; expected state {state_name(CS.CLOUDLET_STATE_READY)} but is "
                f"{state_name(current)}"
            )
        failed = _FAILED_STATE[obj.state]
        expected = obj.state

        def fail(txn: Txn) -> bool:
            current = txn.get(CLOUDLET, obj.key)
            if current is None or current.state != expected:
                return False
            current.state = failed  # type: ignore[assignment]
            del current.errors[:]
            current.errors.append(message)
            if getattr(current, DELETE_PREPARE):
                current.delete_prepare = False
            txn.put(current)
            return True

        if not await rt.engine.apply(fail):
            return
        log.warning("cloudlet %s: %s", keys.key_string(obj.key), message)
        name = stream_key(obj.key)
        await rt.tracked.progress.add(name, {ERROR: message}, start.op_id)


def _state_text(state: int) -> str:
    return common_pb2.TrackedState.Name(state)  # type: ignore[arg-type]
