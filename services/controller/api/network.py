"""NetworkApi: extra networks ClusterInsts on a cloudlet may attach to (controller.md §3.16).

Create, update and delete are server-streaming like the other cloudlet-scoped objects;
they finish in one transaction each, so the stream carries no progress lines.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import clusterinst_pb2, network_pb2, network_pb2_grpc, result_pb2

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import keys, registry
from services.controller import _validate
from services.controller._cloudletinfo import CLOUDLET
from services.controller._engine import Txn
from services.controller._runtime import Runtime
from services.controller._sync import Caches

__all__ = ["UPDATABLE", "NetworkApi", "add", "check_network", "network_user"]

CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
UPDATABLE: Final = frozenset({"3", "4"})
"""routes, connection_type."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


def check_network(network: network_pb2.Network) -> None:
    """The original's `Network.Validate`.

    Raises:
        InvalidArgument: `Invalid network name`, `Invalid connection type`,
            `Invalid route destination cidr`, `Invalid next hop` (or a key error).
    """
    keys.validate_key(network)
    if network.connection_type == network_pb2.UNDEFINED:
        raise InvalidArgument("Invalid connection type")
    for route in network.routes:
        try:
            _validate.check_cidr(route.destination_cidr)
        except InvalidArgument:
            raise InvalidArgument("Invalid route destination cidr") from None
        try:
            ipaddress.ip_address(route.next_hop_ip)
        except ValueError:
            raise InvalidArgument("Invalid next hop") from None


def network_user(caches: Caches, key: network_pb2.NetworkKey) -> str | None:
    """The key string of a ClusterInst on the network's cloudlet that uses it, or None."""
    for ckey, cluster in caches.items(CLUSTER_INST):
        if cluster.cloudlet_key == key.cloudlet_key and key.name in cluster.networks:
            return ckey
    return None


class NetworkApi(network_pb2_grpc.NetworkApiServicer):
    """Create, update, delete and show networks."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateNetwork(
        self, request: network_pb2.Network, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Store a new network of an existing cloudlet (not being deleted)."""
        check_network(request)

        def cloudlet_exists(txn: Txn, network: network_pb2.Network) -> None:
            txn.require(CLOUDLET, network.key.cloudlet_key)

        await self._rt.engine.create(request, check=cloudlet_exists)
        for _ in ():
            yield result_pb2.Result()

    async def UpdateNetwork(
        self, request: network_pb2.Network, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Change routes or connection type; refused while a ClusterInst uses the network."""
        engine = self._rt.engine
        if network_user(engine.caches, request.key) is not None:
            raise FailedPrecondition(
                "Network cannot be modified while associated with a Cluster Instance"
            )

        def check(txn: Txn, merged: network_pb2.Network, current: network_pb2.Network) -> None:
            check_network(merged)

        await engine.update(request, updatable=UPDATABLE, check=check)
        for _ in ():
            yield result_pb2.Result()

    async def DeleteNetwork(
        self, request: network_pb2.Network, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Delete-prepare, refuse while a ClusterInst uses it, delete."""
        engine = self._rt.engine

        def in_use(network: network_pb2.Network) -> None:
            user = network_user(engine.caches, network.key)
            if user is not None:
                raise FailedPrecondition(f"Network in use by ClusterInst {user}")

        await engine.delete(request, in_use=in_use)
        for _ in ():
            yield result_pb2.Result()

    async def ShowNetwork(
        self, request: network_pb2.Network, context: _Ctx
    ) -> AsyncIterator[network_pb2.Network]:
        """Every cached network matching the filter."""
        for network in self._rt.engine.show(request):
            yield network


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    network_pb2_grpc.add_NetworkApiServicer_to_server(NetworkApi(runtime), server)
    return ["edgeproto.NetworkApi"]
