"""The Controller as a client of the CCRMs (central cloudlet resource managers), controller.md §7.

A CCRM serves the platform work of one or more platform *node types*; which one a cloudlet
needs comes from its `PlatformFeatures.node_type`, and where that CCRM listens from the
`--platform-service-addrs nodeType=host:port` flags (the original's `-platformServiceAddr
nodeType:host:port` spelling is accepted too). Channels are dialled lazily, once per node
type, and shared by every call; each call carries a deadline.

`apply_cloudlet` runs `CloudletPlatformAPI.ApplyCloudlet`: the CCRM streams CloudletInfo
snapshots as it works and ends the stream cleanly (success) or with a gRPC error (failure,
whose message is passed on unwrapped, as the original's `GRPCErrorUnwrap` does).

A CCRM that goes away (killed, restarted, network cut) shows up as gRPC's transport text,
"Stream removed" or "failed to connect to all addresses", which tells a user nothing. Such
failures are reworded to name the CCRM, its address and what was being done ("lost contact
with the CCRM at 127.0.0.1:19001 (node type ccrm) while creating ClusterInst {...}"), still
UNAVAILABLE, so the object's stored error says what to look at.

After every ClusterInst or AppInst operation a CCRM completed, the cloudlet's resource data is
fetched again (`GetCloudletResources`) and merged into its CloudletInfo, in the background
and at most one fetch per cloudlet at a time (the original's `vmResourceActionEnd`,
crm_platforms.md §5.3), so `resources_snapshot` shows what the infrastructure now uses.
`follow_resources` connects that to a Controller runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc
import grpc.aio
from edgeproto import (
    appinst_pb2,
    ccrm_pb2,
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    result_pb2,
    trustpolicyexception_pb2,
)

from edge_cloud import api
from edge_cloud.config import TlsFiles
from edge_cloud.errors import (
    DeadlineExceeded,
    EdgeError,
    FailedPrecondition,
    Unavailable,
    from_rpc_error,
    from_status,
)
from edge_cloud.objects import keys

if TYPE_CHECKING:
    from services.controller._tracked import TrackedRuntime

__all__ = [
    "CcrmClients",
    "follow_resources",
    "is_transport_loss",
    "operation",
    "parse_platform_service_addrs",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLINE_MESSAGE: Final = "context deadline exceeded"
"""What a CCRM call that ran out of time reports (the Go client's words)."""


RESOURCES_TIMEOUT: Final = 30.0
"""Seconds a post-operation `GetCloudletResources` may take (the original's ccrm_api_timeout)."""

CloudletLookup = Callable[[cloudletkey_pb2.CloudletKey], cloudlet_pb2.Cloudlet | None]
ApplyInfo = Callable[[cloudlet_pb2.CloudletInfo], Awaitable[object]]


def follow_resources(clients: CcrmClients, runtime: TrackedRuntime) -> None:
    """Have `clients` refresh CloudletInfo resources in `runtime` after each operation.

    The refreshed fields are merged with the runtime's `apply_info`, as
    `RefreshCloudletResources` does.
    """
    # imported here: _cloudletinfo needs _tracked, which needs this module
    from services.controller._cloudletinfo import CLOUDLET, apply_info

    def cloudlet_of(key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet | None:
        found: cloudlet_pb2.Cloudlet | None = runtime.caches.get(CLOUDLET, keys.key_string(key))
        return found

    async def apply(info: cloudlet_pb2.CloudletInfo) -> None:
        await apply_info(runtime, info)

    clients.on_resources(cloudlet_of, apply)


def parse_platform_service_addrs(values: Iterable[str]) -> dict[str, str]:
    """`nodeType=host:port` (or the original's `nodeType:host:port`) → {node type: address}.

    Args:
        values: The flag's entries.

    Returns:
        Address by node type; a later entry for the same node type wins.

    Raises:
        ValueError: For an entry without a node type or an address.
    """
    out: dict[str, str] = {}
    for raw in values:
        item = raw.strip()
        if not item:
            continue
        if "=" in item:
            node_type, _, addr = item.partition("=")
        else:
            node_type, _, addr = item.partition(":")
        node_type, addr = node_type.strip(), addr.strip()
        if not node_type or not addr or ":" not in addr:
            raise ValueError(f"expected nodeType=host:port, got {raw!r}")
        out[node_type] = addr
    return out


# What gRPC core says when the peer is gone, as opposed to an UNAVAILABLE the CCRM sent on
# purpose (a platform's transient error travels with the same code but its own words).
_TRANSPORT_TEXTS: Final = (
    "stream removed",
    "socket closed",
    "failed to connect",
    "connection reset",
    "connection refused",
    "broken pipe",
    "goaway",
    "connections to all backends failing",
    "end of tcp stream",
    "keepalive watchdog timeout",
)
_VERBS: Final[dict[int, str]] = {
    common_pb2.CREATE_REQUESTED: "creating",
    common_pb2.UPDATE_REQUESTED: "updating",
    common_pb2.DELETE_REQUESTED: "deleting",
}


def is_transport_loss(err: grpc.aio.AioRpcError) -> bool:
    """Whether a failed call means the CCRM went away, not that it reported an error."""
    if err.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    text = (err.details() or "").lower()
    return any(marker in text for marker in _TRANSPORT_TEXTS)


def operation(obj: Any) -> str:
    """What a request asks for, in words: `creating ClusterInst {"name":...}`."""
    state: int = getattr(obj, "state", 0)
    verb = _VERBS.get(state, "applying")
    return f"{verb} {type(obj).__name__} {keys.key_string(obj.key)}"


def _error(err: grpc.aio.AioRpcError, what: str = "", *, lost: str | None = None) -> EdgeError:
    """A failed CCRM call as our exception, its message unwrapped.

    Args:
        err: The call's error.
        what: A prefix for the message.
        lost: When the CCRM went away, the sentence naming it and the operation (see
            `CcrmClients._lost`); used instead of gRPC's transport text.
    """
    if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{what}{DEADLINE_MESSAGE}")
    if lost is not None and is_transport_loss(err):
        return Unavailable(f"{what}{lost} ({err.details()})")
    return from_status(err.code(), f"{what}{err.details() or err.code().name}")


async def _drain(
    call: Any, on_item: Callable[[T], Awaitable[None]], lost: Callable[[bool], str]
) -> None:
    """Hand each message of a server-streaming call to `on_item`; cancel the call after.

    Args:
        call: The streaming call.
        on_item: Called with each message, in order.
        lost: Words for a lost CCRM, given whether anything had arrived yet.

    Raises:
        EdgeError: The CCRM's error (unwrapped), `DeadlineExceeded` past the deadline,
            `Unavailable` naming the CCRM when it went away.
    """
    started = False
    try:
        async for item in call:
            started = True
            await on_item(item)
    except grpc.aio.AioRpcError as err:
        raise _error(err, lost=lost(started)) from err
    finally:
        call.cancel()


class CcrmClients:
    """Lazily dialled channels to the CCRMs, by platform node type.

    Args:
        addrs: Address by node type.
        tls: Client TLS files, or None for plaintext (the mesh of the original).
    """

    def __init__(self, addrs: Mapping[str, str], tls: TlsFiles | None = None) -> None:
        self._addrs = dict(addrs)
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._cloudlet_of: CloudletLookup | None = None
        self._apply_resources: ApplyInfo | None = None
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._refresh_again: set[str] = set()

    # -- resource snapshots after operations (§5.3) -------------------------------------------

    def on_resources(self, cloudlet_of: CloudletLookup, apply: ApplyInfo) -> None:
        """Refresh a cloudlet's resources after each ClusterInst/AppInst operation.

        Args:
            cloudlet_of: The current Cloudlet of a key (None once it is gone).
            apply: Merges a CloudletInfo carrying the refreshed fields (its `fields`).
        """
        self._cloudlet_of, self._apply_resources = cloudlet_of, apply

    def _after_operation(self, node_type: str, key: cloudletkey_pb2.CloudletKey) -> None:
        """Queue a refresh of the cloudlet's resources (one running per cloudlet)."""
        if self._cloudlet_of is None:
            return
        name = keys.key_string(key)
        if name in self._refreshing:
            self._refresh_again.add(name)  # another operation ended meanwhile: once more
            return
        task = asyncio.create_task(self._refresh(node_type, key), name=f"resources {name}")
        self._refreshing[name] = task
        task.add_done_callback(lambda _: self._refreshing.pop(name, None))

    async def _refresh(self, node_type: str, key: cloudletkey_pb2.CloudletKey) -> None:
        name = keys.key_string(key)
        while True:
            self._refresh_again.discard(name)
            cloudlet = self._cloudlet_of(key) if self._cloudlet_of is not None else None
            if cloudlet is None or cloudlet.crm_on_edge or self._apply_resources is None:
                return  # gone, or its CRM reports its own resources
            try:
                info = await self.get_cloudlet_resources(
                    node_type, cloudlet, timeout=RESOURCES_TIMEOUT
                )
                info.key.CopyFrom(key)
                await self._apply_resources(info)
            except EdgeError as err:
                log.warning("Cloudlet infra resource update failure on %s: %s", name, err)
            if name not in self._refresh_again:
                return

    @property
    def node_types(self) -> list[str]:
        """The node types an address is configured for."""
        return sorted(self._addrs)

    def channel(self, node_type: str) -> grpc.aio.Channel:
        """The channel to the CCRM of a node type.

        Raises:
            FailedPrecondition: `no GRPC address in cache for key <nodeType>` (the
                original's text) when no address is configured for it.
        """
        existing = self._channels.get(node_type)
        if existing is not None:
            return existing
        addr = self._addrs.get(node_type)
        if addr is None:
            raise FailedPrecondition(f"no GRPC address in cache for key {node_type}")
        ch = api.channel(addr, tls=self._tls)
        self._channels[node_type] = ch
        return ch

    async def _unary(self, node_type: str, call: Any, doing: str) -> Any:
        """Await a unary CCRM call; a failure becomes our error, naming `doing` if unreachable."""
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise _error(err, lost=self._lost(node_type, doing)(False)) from err

    def _lost(self, node_type: str, doing: str) -> Callable[[bool], str]:
        """Words for a CCRM that went away during `doing`, or could not be reached for it."""
        addr = self._addrs.get(node_type, "?")

        def words(started: bool) -> str:
            if started:
                return (
                    f"lost contact with the CCRM at {addr} (node type {node_type}) while "
                    f"{doing}; the platform may have done part of the work, check the CCRM "
                    "and retry once it is back"
                )
            return (
                f"cannot reach the CCRM at {addr} (node type {node_type}) for {doing}; check "
                "that it is running, then retry"
            )

        return words

    def cloudlet_api(self, node_type: str) -> ccrm_pb2_grpc.CloudletPlatformAPIStub:
        """A `CloudletPlatformAPI` stub on the CCRM of a node type."""
        return ccrm_pb2_grpc.CloudletPlatformAPIStub(self.channel(node_type))

    async def apply_cloudlet(
        self,
        node_type: str,
        cloudlet: cloudlet_pb2.Cloudlet,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
        on_info: Callable[[cloudlet_pb2.CloudletInfo], Awaitable[None]],
    ) -> None:
        """Run ApplyCloudlet and hand each streamed CloudletInfo to `on_info`, in order.

        Args:
            node_type: The cloudlet's platform node type.
            cloudlet: The cloudlet with the requested state and `fields`.
            timeout: Deadline of the whole call in seconds.
            on_info: Called with each info (merge into etcd, forward progress).

        Raises:
            EdgeError: The CCRM's error (its code and message), `DeadlineExceeded` with
                `context deadline exceeded` when the deadline passed.
        """
        stub = self.cloudlet_api(node_type)
        call: Any = stub.ApplyCloudlet(cloudlet, timeout=timeout)
        await _drain(call, on_info, self._lost(node_type, operation(cloudlet)))

    async def get_cloudlet_manifest(
        self,
        node_type: str,
        key: cloudletkey_pb2.CloudletKey,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> cloudlet_pb2.CloudletManifest:
        """GetCloudletManifest on the CCRM of a node type.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).GetCloudletManifest(key, timeout=timeout)
        manifest: cloudlet_pb2.CloudletManifest = await self._unary(
            node_type, call, f"getting the manifest of cloudlet {keys.key_string(key)}"
        )
        return manifest

    async def get_root_lb_flavor(
        self,
        node_type: str,
        key: cloudletkey_pb2.CloudletKey,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> flavor_pb2.Flavor:
        """GetRootLbFlavor: the size of a root LB VM on the cloudlet (empty: none).

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).GetRootLbFlavor(key, timeout=timeout)
        doing = f"sizing the root LB of cloudlet {keys.key_string(key)}"
        flavor: flavor_pb2.Flavor = await self._unary(node_type, call, doing)
        return flavor

    async def get_cluster_additional_resources(
        self,
        node_type: str,
        key: cloudletkey_pb2.CloudletKey,
        vms: list[refs_pb2.VMResource],
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> dict[str, int]:
        """GetClusterAdditionalResources: platform counters the VMs add, by resource name.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        request = ccrm_pb2.ClusterResourcesReq(cloudlet_key=key, vm_resources=vms)
        call: Any = self.cloudlet_api(node_type).GetClusterAdditionalResources(
            request, timeout=timeout
        )
        doing = f"counting platform resources of cloudlet {keys.key_string(key)}"
        found: ccrm_pb2.InfraResourceMap = await self._unary(node_type, call, doing)
        return {name: res.value for name, res in found.infra_resources.items()}

    async def get_cloudlet_resources(
        self,
        node_type: str,
        cloudlet: cloudlet_pb2.Cloudlet,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> cloudlet_pb2.CloudletInfo:
        """GetCloudletResources on the CCRM of a node type.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).GetCloudletResources(cloudlet, timeout=timeout)
        info: cloudlet_pb2.CloudletInfo = await self._unary(
            node_type, call, f"getting the resources of cloudlet {keys.key_string(cloudlet.key)}"
        )
        return info

    async def refresh_certs(
        self,
        node_type: str,
        cloudlet: cloudlet_pb2.Cloudlet,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """RefreshCerts on the CCRM of a node type.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).RefreshCerts(cloudlet, timeout=timeout)
        await self._unary(
            node_type,
            call,
            f"refreshing the certificates of cloudlet {keys.key_string(cloudlet.key)}",
        )

    async def restricted_cloudlet_status(
        self,
        node_type: str,
        key: cloudletkey_pb2.CloudletKey,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AsyncIterator[ccrm_pb2.StreamStatus]:
        """GetRestrictedCloudletStatus: bring-up progress of a restricted-access cloudlet.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).GetRestrictedCloudletStatus(key, timeout=timeout)
        try:
            async for status in call:
                yield status
        except grpc.aio.AioRpcError as err:
            lost = self._lost(node_type, f"the status of cloudlet {keys.key_string(key)}")(False)
            raise _error(err, lost=lost) from err
        finally:
            call.cancel()

    async def stream(
        self,
        node_type: str,
        start: Callable[[ccrm_pb2_grpc.CloudletPlatformAPIStub, float], Any],
        doing: str,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> AsyncIterator[Any]:
        """The messages of a server-streaming `CloudletPlatformAPI` call, its failure as ours.

        The CCRM's own status (a platform's NotSupported, a missing cloudlet) keeps its code
        and words; a CCRM that cannot be reached is named, with what was being asked of it,
        instead of gRPC's transport text.

        Args:
            node_type: The platform node type whose CCRM serves the call.
            start: Starts the call on the stub, given its deadline in seconds.
            doing: What is asked, for messages ("listing the bare-metal hosts of ...").
            timeout: The deadline in seconds (the `ccrm_api_timeout` setting).

        Yields:
            Each streamed message.

        Raises:
            EdgeError: The CCRM's error; `Unavailable` naming the CCRM when it is
                unreachable, `DeadlineExceeded` when it did not finish in time.
        """
        call = start(self.cloudlet_api(node_type), timeout)
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as err:
            if err.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"the CCRM (node type {node_type}) did not finish {doing} within {timeout:g}s"
                ) from err
            if is_transport_loss(err):
                raise Unavailable(
                    f"cannot reach the CCRM of node type {node_type} for {doing}: "
                    f"{err.details()}; check that it is running, then retry"
                ) from err
            raise from_rpc_error(err) from err
        finally:
            call.cancel()

    async def apply_cluster_inst(
        self,
        node_type: str,
        cluster: clusterinst_pb2.ClusterInst,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
        on_info: Callable[[clusterinst_pb2.ClusterInstInfo], Awaitable[None]],
    ) -> None:
        """Run ClusterPlatformAPI.ApplyClusterInst, handing each streamed info to `on_info`.

        Raises:
            EdgeError: The CCRM's error (unwrapped), `DeadlineExceeded` past the deadline.
        """
        stub = ccrm_pb2_grpc.ClusterPlatformAPIStub(self.channel(node_type))
        lost = self._lost(node_type, operation(cluster))
        await _drain(stub.ApplyClusterInst(cluster, timeout=timeout), on_info, lost)
        # only after success, as the original: a failed operation undid what it built, and
        # a call to a CCRM that just went away would only fail too
        self._after_operation(node_type, cluster.cloudlet_key)

    async def apply_app_inst(
        self,
        node_type: str,
        inst: appinst_pb2.AppInst,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
        on_info: Callable[[appinst_pb2.AppInstInfo], Awaitable[None]],
    ) -> None:
        """Run AppInstPlatformAPI.ApplyAppInst, handing each streamed info to `on_info`.

        Raises:
            EdgeError: The CCRM's error (unwrapped), `DeadlineExceeded` past the deadline.
        """
        stub = ccrm_pb2_grpc.AppInstPlatformAPIStub(self.channel(node_type))
        lost = self._lost(node_type, operation(inst))
        await _drain(stub.ApplyAppInst(inst, timeout=timeout), on_info, lost)
        self._after_operation(node_type, inst.cloudlet_key)

    async def apply_trust_policy_exception(
        self,
        node_type: str,
        state: trustpolicyexception_pb2.TPEInstanceState,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> None:
        """AppInstPlatformAPI.ApplyTrustPolicyException: open or close one cluster's exception.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        stub = ccrm_pb2_grpc.AppInstPlatformAPIStub(self.channel(node_type))
        call: Any = stub.ApplyTrustPolicyException(state, timeout=timeout)
        doing = f"applying trust policy exception {keys.key_string(state.key.tpe_key)}"
        await self._unary(node_type, call, doing)

    async def get_cluster_credentials(
        self,
        node_type: str,
        request: clusterinst_pb2.ClusterCredentialsRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the call's gRPC deadline
    ) -> result_pb2.Result:
        """CloudletPlatformAPI.GetClusterCredentials on the CCRM of a node type.

        Raises:
            EdgeError: The CCRM's error, unwrapped.
        """
        call: Any = self.cloudlet_api(node_type).GetClusterCredentials(request, timeout=timeout)
        try:
            result: result_pb2.Result = await call
        except grpc.aio.AioRpcError as err:
            lost = self._lost(
                node_type, f"the credentials of cluster {keys.key_string(request.key)}"
            )(False)
            raise _error(err, lost=lost) from err
        return result

    async def close(self) -> None:
        """Stop resource refreshes, close every channel. Idempotent."""
        refreshing, self._refreshing = list(self._refreshing.values()), {}
        for task in refreshing:
            task.cancel()
        for task in refreshing:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            try:
                await ch.close()
            except Exception as err:  # closing must not hide the shutdown's own outcome
                log.debug("closing a CCRM channel failed: %s", err)
