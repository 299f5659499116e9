"""The SvcNode registry: which daemons run, and where (aux_services.md §5.2).

Every daemon describes itself as one `SvcNode` (`my_node`: name = hostname, type, region,
cloudlet, build and container version, internal PKI mode) and keeps it in its `SvcNodes`
together with every node reported from below. A notify client sends the whole registry
upward (`attach_client`) and keeps sending changes, so a parent knows every node beneath
it; a parent stores what a child sends tagged with that child's notify id (`update`) and
drops all of it when the child disconnects (`flush`). The Controller sets its region on
every entry it stores, as the original's `RegionSvcNodeCache`.

Nothing is persisted: nodes are live state, rebuilt by the notify connections.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
from collections.abc import Iterator
from typing import Final

from edgeproto import cloudletkey_pb2, svcnode_pb2

from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys, match

__all__ = [
    "NODE_TYPE_CCRM",
    "NODE_TYPE_CONTROLLER",
    "NODE_TYPE_CRM",
    "NODE_TYPE_DME",
    "SvcNodes",
    "my_node",
    "node_matches",
]

NODE_TYPE_CONTROLLER: Final = "controller"
NODE_TYPE_CCRM: Final = "ccrm"
NODE_TYPE_CRM: Final = "crm"
NODE_TYPE_DME: Final = "dme"
_DIST: Final = "edge-cloud-platform"

SvcNode = svcnode_pb2.SvcNode
SvcNodeKey = svcnode_pb2.SvcNodeKey


def _version() -> str:
    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        return ""


def my_node(
    node_type: str,
    *,
    region: str = "",
    cloudlet_key: cloudletkey_pb2.CloudletKey | None = None,
    container_version: str = "",
    tls: bool = False,
    name: str = "",
) -> svcnode_pb2.SvcNode:
    """This process's SvcNode, as the original's `SvcNodeMgr.Init` fills it.

    Args:
        node_type: `controller`, `ccrm`, `crm`, `dme`, ...
        region: The region; empty below the Controller, which fills it in.
        cloudlet_key: The cloudlet a CRM runs for.
        container_version: The version of the container the daemon runs in, if any.
        tls: Whether internal connections use TLS files (`internal_pki` "from-file";
            otherwise "none", our daemons' only other mode).
        name: The node name; the hostname by default.

    Returns:
        A new message; build fields carry this package's version.
    """
    host = socket.gethostname()
    version = _version()
    node = SvcNode(
        key=SvcNodeKey(name=name or host, type=node_type, region=region),
        build_master=version,
        build_head=version,
        hostname=host,
        container_version=container_version,
        internal_pki="from-file" if tls else "none",
        properties={"python": platform.python_version()},
    )
    if cloudlet_key is not None:
        node.key.cloudlet_key.CopyFrom(cloudlet_key)
    return node


def node_matches(key: svcnode_pb2.SvcNodeKey, flt: svcnode_pb2.SvcNodeKey) -> bool:
    """The original's `nodeMatches`: the filter's set fields must match the key.

    A node that does not know its region (below a Controller) matches any region.
    """
    if not key.region and flt.region:
        relaxed = SvcNodeKey()
        relaxed.CopyFrom(flt)
        relaxed.region = ""
        flt = relaxed
    return match.matches(flt, key)


class SvcNodes:
    """The nodes one daemon knows: its own (notify id 0) and those reported from below.

    Args:
        me: This process's node (`my_node`).
        set_region: A region to stamp on every stored node (the Controller's).
    """

    def __init__(self, me: svcnode_pb2.SvcNode, *, set_region: str = "") -> None:
        self._region = set_region
        self._nodes: dict[str, svcnode_pb2.SvcNode] = {}
        self._clients: list[NotifyClient] = []
        self.me = self._stamp(me, 0)
        self._nodes[keys.key_string(self.me.key)] = self.me

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[svcnode_pb2.SvcNode]:
        return iter(list(self._nodes.values()))

    def _stamp(self, node: svcnode_pb2.SvcNode, notify_id: int) -> svcnode_pb2.SvcNode:
        stored = SvcNode()
        stored.CopyFrom(node)
        stored.notify_id = notify_id
        if self._region:
            stored.key.region = self._region
        return stored

    def attach_client(self, client: NotifyClient) -> None:
        """Send every node upward over `client`, now, after each reconnect, and on change.

        The original's `RegisterSendSvcNodeCache`.
        """
        self._clients.append(client)
        for node in self._nodes.values():
            client.send(_upward(node))

    def update(self, node: svcnode_pb2.SvcNode, notify_id: int) -> svcnode_pb2.SvcNode:
        """Store a node a child reported over connection `notify_id`; returns the entry."""
        stored = self._stamp(node, notify_id)
        self._nodes[keys.key_string(stored.key)] = stored
        for client in self._clients:
            client.send(_upward(stored))
        return stored

    def remove(self, node: svcnode_pb2.SvcNode, notify_id: int) -> bool:
        """Drop a node its child reported gone; only that child's entry is dropped."""
        key = keys.key_string(self._stamp(node, notify_id).key)
        found = self._nodes.get(key)
        if found is None or found.notify_id != notify_id or notify_id == 0:
            return False
        del self._nodes[key]
        for client in self._clients:
            client.send_delete(_upward(found))
        return True

    def flush(self, notify_id: int) -> int:
        """Drop every node that came over connection `notify_id` (the child is gone)."""
        gone = [n for n in self._nodes.values() if n.notify_id == notify_id and notify_id]
        for node in gone:
            self.remove(node, notify_id)
        return len(gone)

    def show(self, flt: svcnode_pb2.SvcNode) -> list[svcnode_pb2.SvcNode]:
        """Copies of the nodes matching a Show filter (set fields must match), sorted."""
        out = []
        for key in sorted(self._nodes):
            node = self._nodes[key]
            if match.matches(flt, node):
                copy = SvcNode()
                copy.CopyFrom(node)
                out.append(copy)
        return out

    def matching(self, flt: svcnode_pb2.SvcNodeKey) -> list[svcnode_pb2.SvcNode]:
        """The nodes a debug request's node filter selects (`node_matches`)."""
        return [n for n in self._nodes.values() if node_matches(n.key, flt)]


def _upward(node: svcnode_pb2.SvcNode) -> svcnode_pb2.SvcNode:
    """The node as sent to a parent: the notify id is the receiver's to set."""
    sent = SvcNode()
    sent.CopyFrom(node)
    sent.notify_id = 0
    return sent
