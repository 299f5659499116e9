"""The CCRM's sizing facts for a cloudlet's resource accounting (controller.md §4.1).

Two numbers of the accounting are known only to the platform: the infra flavor of a root LB
VM (`GetRootLbFlavor`, matched to one of the cloudlet's infra flavors as any node is) and the
platform counters a VM adds (`GetClusterAdditionalResources`: `Instances`, `Floating IPs`,
...). The create transactions are synchronous and may re-run, so these are fetched before a
transaction and kept per cloudlet until its flavors or platform VMs change: the LB flavor,
and the counters per (node type, infra flavor) of one VM, which the accounting multiplies by
the VM count (every platform's counters are per VM, so the sum over VMs is the same answer the
original gets by sending the whole VM list).

A CCRM that does not implement a call (UNIMPLEMENTED) has nothing to add; any other failure
fails the operation that needed the answer, with the CCRM named, as in the original.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from collections.abc import Callable
from typing import Final

import grpc
from edgeproto import cloudlet_pb2, refs_pb2, resources_pb2, restagtable_pb2

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects import keys, registry
from services.controller import _clusterinst
from services.controller._ccrm import CcrmClients
from services.controller._cloudletinfo import CLOUDLET_INFO
from services.controller._clusterinst import NO_SIZING, SiteSizing
from services.controller._sync import Caches
from services.controller._tracked import TrackedRuntime
from services.controller._usage import PLATFORM_FEATURES

__all__ = ["SiteSizer", "sizer"]

log = logging.getLogger(__name__)

RES_TAG_TABLE: Final = registry.by_class(restagtable_pb2.ResTagTable)
_SIZERS: weakref.WeakKeyDictionary[CcrmClients, SiteSizer] = weakref.WeakKeyDictionary()

#: Above this many VM kinds to ask about, a cloudlet's platform counters are not fetched
#: (a public cloud reporting hundreds of instance types); its LB and VMs still count.
MAX_EXTRA_QUERIES: Final = 160
#: The node types a cluster or VM app puts on a cloudlet (`Tally`), sized on every flavor.
NODE_TYPES: Final = ("appvm", "docker-cluster-node", "k8s-cluster-master", "k8s-cluster-node")


def _fingerprint(info: cloudlet_pb2.CloudletInfo, features: cloudlet_pb2.PlatformFeatures) -> bytes:
    """What the sizing facts depend on: node type, root LB use, flavors and platform VMs."""
    digest = hashlib.sha256(features.node_type.encode())
    digest.update(b"lb" if features.uses_root_lb else b"-")
    for flavor in info.flavors:
        digest.update(flavor.SerializeToString(deterministic=True))
    for vm in info.resources_snapshot.platform_vms:
        digest.update(f"|{vm.type}/{vm.infraFlavor}".encode())
    return digest.digest()


class SiteSizer:
    """Per-cloudlet sizing facts, fetched from the cloudlet's CCRM and kept.

    Args:
        ccrm: The CCRM clients.
        timeout: Seconds one CCRM call may take (Settings' CCRM API timeout).
    """

    def __init__(self, ccrm: CcrmClients, timeout: Callable[[], float]) -> None:
        self._ccrm = ccrm
        self._timeout = timeout
        self._known: dict[str, tuple[bytes, SiteSizing]] = {}
        self._no_extras: set[str] = set()  # node types whose CCRM adds no counters
        self._locks: dict[str, asyncio.Lock] = {}

    def cached(self, key_string: str) -> SiteSizing:
        """What is known of a cloudlet so far (nothing yet: no LB, no extras)."""
        entry = self._known.get(key_string)
        return entry[1] if entry is not None else NO_SIZING

    def forget(self, key_string: str) -> None:
        """Drop a deleted cloudlet's facts."""
        self._known.pop(key_string, None)
        self._locks.pop(key_string, None)

    async def prepare(self, caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> SiteSizing:
        """Fetch what the accounting of `cloudlet` needs, once per change of its flavors.

        Every kind of VM the cloudlet can hold is sized up front: its platform VMs, and each
        node type a cluster, VM app or root LB uses on each infra flavor (a create picks its
        infra flavor inside the transaction, so it cannot say in advance which it needs).
        Later calls only compare the fingerprint, so a create pays nothing more.

        Returns:
            The facts, also kept for `cached`.

        Raises:
            EdgeError: The CCRM's error, or its root LB flavor matching no infra flavor.
        """
        ks = keys.key_string(cloudlet.key)
        info = caches.get(CLOUDLET_INFO, ks)
        features = caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
        if info is None or features is None or not features.node_type:
            return self.cached(ks)
        lock = self._locks.setdefault(ks, asyncio.Lock())
        async with lock:
            fingerprint = _fingerprint(info, features)
            entry = self._known.get(ks)
            if entry is not None and entry[0] == fingerprint:
                return entry[1]
            lb = await self._lb_flavor(caches, cloudlet, info, features)
            extras = await self._all_extras(cloudlet, info, features, with_lb=bool(lb))
            sizing = SiteSizing(lb_flavor=lb, extras=extras)
            self._known[ks] = (fingerprint, sizing)
            return sizing

    async def _all_extras(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        info: cloudlet_pb2.CloudletInfo,
        features: cloudlet_pb2.PlatformFeatures,
        *,
        with_lb: bool,
    ) -> dict[tuple[str, str], dict[str, int]]:
        """The CCRM's counters for one VM of every kind the cloudlet can hold."""
        if features.node_type in self._no_extras:
            return {}
        types = NODE_TYPES + (("dedicatedrootlb",) if with_lb else ())
        kinds = {(t, f.name) for t in types for f in info.flavors}
        kinds.update((vm.type, vm.infraFlavor) for vm in info.resources_snapshot.platform_vms)
        if len(kinds) > MAX_EXTRA_QUERIES:
            log.warning(
                "cloudlet %s: %d VM kinds to size, more than %d; platform counters "
                "(GetClusterAdditionalResources) are left out of its accounting",
                keys.key_string(cloudlet.key),
                len(kinds),
                MAX_EXTRA_QUERIES,
            )
            return {}
        ordered = sorted(kinds)
        found = await asyncio.gather(
            *(self._extras(cloudlet, features.node_type, kind) for kind in ordered)
        )
        return {kind: values for kind, values in zip(ordered, found, strict=True) if values}

    async def _lb_flavor(
        self,
        caches: Caches,
        cloudlet: cloudlet_pb2.Cloudlet,
        info: cloudlet_pb2.CloudletInfo,
        features: cloudlet_pb2.PlatformFeatures,
    ) -> str:
        if not features.uses_root_lb:
            return ""
        try:
            flavor = await self._ccrm.get_root_lb_flavor(
                features.node_type, cloudlet.key, timeout=self._timeout()
            )
        except EdgeError as err:
            if err.code == grpc.StatusCode.UNIMPLEMENTED:
                return ""
            raise
        if not flavor.vcpus and not flavor.ram and not flavor.disk:
            return ""
        nodes = resources_pb2.NodeResources(vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk)
        tables = _clusterinst.res_tag_tables(
            cloudlet, lambda key: caches.get(RES_TAG_TABLE, keys.key_string(key))
        )
        try:
            return _clusterinst.select_infra_flavor(
                nodes, info.flavors, tables, cloudlet_name=cloudlet.key.name
            )
        except InvalidArgument as err:
            raise InvalidArgument(
                f"failed to get infra flavor for root LB flavor {flavor.key.name}: {err.message}"
            ) from None

    async def _extras(
        self, cloudlet: cloudlet_pb2.Cloudlet, node_type: str, pair: tuple[str, str]
    ) -> dict[str, int] | None:
        vm = refs_pb2.VMResource(type=pair[0], vm_flavor=pair[1], count=1)
        try:
            return await self._ccrm.get_cluster_additional_resources(
                node_type, cloudlet.key, [vm], timeout=self._timeout()
            )
        except EdgeError as err:
            if err.code == grpc.StatusCode.UNIMPLEMENTED:
                log.info("the CCRM of node type %s counts no platform resources", node_type)
                self._no_extras.add(node_type)
                return None
            raise


def sizer(runtime: TrackedRuntime) -> SiteSizer:
    """The runtime's sizer (one per set of CCRM clients, so per Controller)."""
    ccrm = runtime.tracked.ccrm
    found = _SIZERS.get(ccrm)
    if found is None:

        def timeout() -> float:
            limit = runtime.settings().ccrm_api_timeout
            return limit / 1e9 if limit > 0 else 30.0

        found = _SIZERS[ccrm] = SiteSizer(ccrm, timeout)
    return found
