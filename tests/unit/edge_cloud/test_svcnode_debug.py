"""The SvcNode registry and the debug commands, in-process (no notify connection)."""

from __future__ import annotations

import pytest
from edgeproto import cloudletkey_pb2, debug_pb2, svcnode_pb2

from edge_cloud import logs
from edge_cloud.debug import DebugNode
from edge_cloud.errors import InvalidArgument
from edge_cloud.svcnode import SvcNodes, my_node, node_matches

Key = svcnode_pb2.SvcNodeKey
Req = debug_pb2.DebugRequest


def test_node_matches_ignores_the_region_of_nodes_that_do_not_know_it() -> None:
    below = Key(name="dme1", type="dme")
    assert node_matches(below, Key(region="eu", type="dme"))
    assert not node_matches(Key(name="dme1", type="dme", region="us"), Key(region="eu"))
    assert not node_matches(below, Key(type="crm"))
    assert node_matches(below, Key())


def test_registry_stamps_region_and_flushes_by_notify_id() -> None:
    nodes = SvcNodes(my_node("controller", region="eu"), set_region="eu")
    crm = my_node("crm", cloudlet_key=cloudletkey_pb2.CloudletKey(organization="op", name="c1"))
    stored = nodes.update(crm, 3)
    assert (stored.key.region, stored.notify_id) == ("eu", 3)
    nodes.update(my_node("dme", name="dme-a"), 4)
    assert sorted(n.key.type for n in nodes.show(svcnode_pb2.SvcNode())) == [
        "controller",
        "crm",
        "dme",
    ]
    assert [n.key.name for n in nodes.show(svcnode_pb2.SvcNode(key=Key(type="dme")))] == ["dme-a"]
    assert not nodes.remove(crm, 4)  # another connection cannot remove it
    assert nodes.flush(3) == 1
    assert sorted(n.key.type for n in nodes) == ["controller", "dme"]
    assert nodes.flush(0) == 0  # our own node is never flushed


async def test_commands_and_levels() -> None:
    debug = DebugNode(SvcNodes(my_node("dme")))
    debug.add("hello", lambda req: f"hi {req.args}")
    before = logs.debug_families()
    try:
        logs.set_debug_families(["notify"])
        assert await debug.run(Req(cmd="enable-debug-levels", levels="api, etcd")) == (
            "enabled debug levels, now api,etcd,notify"
        )
        assert await debug.run(Req(cmd="disable-debug-levels", levels="etcd,nope")) == (
            "disabled debug levels, now api,notify"
        )
        assert await debug.run(Req(cmd="show-debug-levels")) == "api,notify"
    finally:
        logs.set_debug_families(before)
    assert await debug.run(Req(cmd="hello", args="there")) == "hi there"
    assert await debug.run(Req(cmd="x")) == (
        "Unknown cmd x, cmds are disable-debug-levels,dump-stack-trace,enable-debug-levels,"
        "hello,show-debug-levels"
    )
    assert (await debug.run(Req(cmd="dump-stack-trace", args="1"))).startswith("thread ")
    assert len(await debug.run(Req(cmd="dump-stack-trace", args="1,false"))) <= 1024
    assert (await debug.run(Req(cmd="dump-stack-trace", args="lots"))).startswith("Args should")


async def test_request_runs_locally_when_the_filter_matches() -> None:
    debug = DebugNode(SvcNodes(my_node("ccrm", name="ccrm-1")))
    replies = [r async for r in debug.request(Req(cmd="show-debug-levels"))]
    assert [(r.node.name, r.id) for r in replies] == [("ccrm-1", 0)]
    other = Req(cmd="show-debug-levels", node=Key(type="crm"))
    assert [r async for r in debug.request(other)] == []
    with pytest.raises(InvalidArgument, match="no cmd specified"):
        _ = [r async for r in debug.request(Req())]
