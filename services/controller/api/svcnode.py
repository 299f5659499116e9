"""SvcNodeApi and the Controller's node registry (aux_services.md §5.2, controller.md §6).

The Controller's `DebugNode` (with its `SvcNodes`) is one per runtime (`node_hub`): the
servicers here and in `api.debug` are registered before the notify server exists, and all
three find the same registry through the runtime they share. It holds the Controller's own
node and every node its notify clients (CCRMs, CRMs, DMEs) report, each tagged with the
reporting connection's notify id, stamped with this region, and dropped when that
connection ends. Not persisted: each Controller shows the nodes connected to it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import grpc.aio
import yaml
from edgeproto import controller_pb2, debug_pb2, svcnode_pb2, svcnode_pb2_grpc

from edge_cloud.debug import DebugNode
from edge_cloud.notify import NotifyServer, Peer
from edge_cloud.objects import codec, registry
from edge_cloud.svcnode import NODE_TYPE_CONTROLLER, SvcNodes, my_node
from services.controller._runtime import Runtime

__all__ = ["SHOW_CONTROLLERS", "NodeReceiver", "SvcNodeApi", "add", "node_hub"]

log = logging.getLogger(__name__)

SHOW_CONTROLLERS: Final = "show-controllers"
CONTROLLER: Final = registry.by_class(controller_pb2.Controller)
_HUBS: Final[weakref.WeakKeyDictionary[Runtime, DebugNode]] = weakref.WeakKeyDictionary()
_Ctx = grpc.aio.ServicerContext[Any, Any]


def node_hub(runtime: Runtime) -> DebugNode:
    """The Controller's debug node and node registry, created on first use."""
    hub = _HUBS.get(runtime)
    if hub is None:
        cfg = runtime.config
        me = my_node(NODE_TYPE_CONTROLLER, region=cfg.region, tls=cfg.tls is not None)
        hub = _HUBS[runtime] = DebugNode(SvcNodes(me, set_region=cfg.region))

        def show_controllers(req: debug_pb2.DebugRequest) -> str:
            found = [codec.to_dict(c) for _, c in runtime.caches.items(CONTROLLER)]
            return yaml.safe_dump(found, sort_keys=False)

        hub.add(SHOW_CONTROLLERS, show_controllers)
    return hub


class NodeReceiver:
    """The notify side of the registry: SvcNodes and DebugReplies from the children.

    Args:
        runtime: The runtime whose `node_hub` it feeds.
        server: The notify server debug requests go out through.
    """

    def __init__(self, runtime: Runtime, server: NotifyServer) -> None:
        self._debug = node_hub(runtime)
        self._debug.attach_server(server)

    async def update(self, peer: Peer, node: svcnode_pb2.SvcNode) -> None:
        """A child reported a node (its own or one below it)."""
        stored = self._debug.nodes.update(node, peer.notify_id)
        log.info("node %s (%s) reported by %s", stored.key.name, stored.key.type, peer.name)

    async def delete(self, peer: Peer, node: svcnode_pb2.SvcNode) -> None:
        """A child reported a node gone."""
        self._debug.nodes.remove(node, peer.notify_id)

    async def flush(self, peer: Peer, nodes: Mapping[str, svcnode_pb2.SvcNode]) -> None:
        """A child disconnected: every node that came through it is gone."""
        self._debug.nodes.flush(peer.notify_id)

    async def reply(self, peer: Peer, reply: debug_pb2.DebugReply) -> None:
        """A debug reply from below, for the request waiting for it."""
        await self._debug.receive_reply(reply)


class SvcNodeApi(svcnode_pb2_grpc.SvcNodeApiServicer):
    """ShowSvcNode: the nodes this Controller knows."""

    def __init__(self, runtime: Runtime) -> None:
        self._nodes = node_hub(runtime).nodes

    async def ShowSvcNode(
        self, request: svcnode_pb2.SvcNode, context: _Ctx
    ) -> AsyncIterator[svcnode_pb2.SvcNode]:
        """Every known node whose set key (and other) fields match the filter."""
        for node in self._nodes.show(request):
            yield node


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    svcnode_pb2_grpc.add_SvcNodeApiServicer_to_server(SvcNodeApi(runtime), server)
    return ["edgeproto.SvcNodeApi"]
