"""SvcNode registry, debug commands and live DME rate limits: a Controller and a DME process.

The DME registers its node over notify; the Controller lists both, forwards debug requests
to the DME and streams its replies; a notify client that never answers shows the timeout;
a MaxReqs limit changed through the Controller's API reaches the DME, which refuses the
call over the new limit; a stopped DME disappears from the registry.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from distributed_match_engine import session_pb2, session_pb2_grpc
from edgeproto import (
    debug_pb2,
    debug_pb2_grpc,
    ratelimit_pb2,
    ratelimit_pb2_grpc,
    svcnode_pb2,
    svcnode_pb2_grpc,
)

from edge_cloud import localservers
from edge_cloud.debug import TIMED_OUT
from edge_cloud.localservers import ServerProcess
from edge_cloud.notify import NotifyClient
from edge_cloud.svcnode import SvcNodes, my_node
from tests.e2e.support import ROOT, Daemon, clean_env, wait_for

RL = ratelimit_pb2
LIMITED_KEY = RL.RateLimitSettingsKey(
    api_name="RegisterClient",
    api_endpoint_type=RL.ApiEndpointType.DME,
    rate_limit_target=RL.RateLimitTarget.ALL_REQUESTS,
)


class Region:
    """The Controller and DME processes and the Controller's stubs."""

    def __init__(self, etcd: ServerProcess, redis: ServerProcess, workdir: Path) -> None:
        self.notify_port = localservers.free_port()
        self.controller = Daemon(
            "controller",
            [
                "--api-addr", "127.0.0.1:0",
                "--notify-addr", f"127.0.0.1:{self.notify_port}",
                "--metrics-addr", "",
                "--redis-standalone-addr", redis.client_url,
                "--platform-service-addrs", "ccrm=127.0.0.1:1",
                "--etcd-namespace", f"/e2e/{uuid.uuid4().hex[:12]}/",
                "--shutdown-grace", "2",
            ],
            workdir,
            env=clean_env(EDGE_ETCD_URLS=etcd.client_url),
        )  # fmt: skip
        self.dme = Daemon(
            "dme",
            [
                "--api-addr", "127.0.0.1:0",
                "--http-addr", "",
                "--metrics-addr", "",
                "--notify-addrs", f"127.0.0.1:{self.notify_port}",
                "--shutdown-grace", "2",
                "-d", "notify",
            ],
            workdir,
        )  # fmt: skip
        ports = self.controller.start()
        self.api_addr = f"127.0.0.1:{ports['api']}"
        self.channel = grpc.insecure_channel(self.api_addr)
        self.nodes = svcnode_pb2_grpc.SvcNodeApiStub(self.channel)
        self.debug = debug_pb2_grpc.DebugApiStub(self.channel)
        self.limits = ratelimit_pb2_grpc.RateLimitSettingsApiStub(self.channel)
        self.dme_ports = self.dme.start()

    def shown(self, **key: Any) -> list[svcnode_pb2.SvcNode]:
        flt = svcnode_pb2.SvcNode(key=svcnode_pb2.SvcNodeKey(**key))
        return list(self.nodes.ShowSvcNode(flt, timeout=10))

    def run(self, call: Any, **fields: Any) -> list[tuple[str, str]]:
        """(node type, output) of every reply, sorted by type."""
        replies = call(debug_pb2.DebugRequest(**fields), timeout=20)
        return sorted((r.node.type, r.output) for r in replies)

    def close(self) -> None:
        self.channel.close()
        self.dme.stop()
        self.controller.stop()


@pytest.fixture
def region(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> Iterator[Region]:
    started = Region(etcd_server, redis_server, tmp_path)
    try:
        yield started
    finally:
        started.close()


def dme_node(region: Region) -> svcnode_pb2.SvcNode | None:
    found = region.shown(type="dme")
    return found[0] if found else None


def check_nodes_and_debug_commands(region: Region) -> None:
    dme = wait_for(lambda: dme_node(region), 20, "the DME's SvcNode")
    ctl = region.shown(type="controller")
    assert len(ctl) == 1
    assert ctl[0].notify_id == 0
    assert dme.notify_id > 0
    assert dme.key.region == ctl[0].key.region == "local"  # stamped by the Controller
    assert dme.hostname
    assert dme.build_head
    assert dme.internal_pki == "none"
    assert len(region.shown()) == 2
    assert region.shown(name="no-such-node") == []

    on_dme: dict[str, Any] = {"node": svcnode_pb2.SvcNodeKey(type="dme")}
    assert region.run(region.debug.ShowDebugLevels, **on_dme) == [("dme", "notify")]
    assert region.run(region.debug.EnableDebugLevels, levels="api,dmereq", **on_dme) == [
        ("dme", "enabled debug levels, now api,dmereq,notify")
    ]
    assert region.run(region.debug.DisableDebugLevels, levels="notify", **on_dme) == [
        ("dme", "disabled debug levels, now api,dmereq")
    ]
    assert region.run(region.debug.ShowDebugLevels, **on_dme) == [("dme", "api,dmereq")]
    # the levels are the DME's real logging: `debug` (edge_cloud.debug) logs only once on
    assert "running debug command" not in region.dme.log.read_text()
    region.run(region.debug.EnableDebugLevels, levels="debug", **on_dme)
    (stack,) = region.run(region.debug.RunDebug, cmd="dump-stack-trace", args="4,false", **on_dme)
    assert "running debug command dump-stack-trace" in region.dme.log.read_text()
    assert "thread " in stack[1]
    assert len(stack[1]) <= 4 * 1024

    unknown = region.run(region.debug.RunDebug, cmd="no-such-cmd")
    assert [t for t, _ in unknown] == ["controller", "dme"]
    ctl_cmds, dme_cmds = (out for _, out in unknown)
    assert ctl_cmds.startswith("Unknown cmd no-such-cmd, cmds are ")
    assert "show-controllers" in ctl_cmds.split(", cmds are ")[1].split(",")
    assert dme_cmds.startswith("Unknown cmd no-such-cmd, cmds are ")
    listed = dme_cmds.split(", cmds are ")[1].split(",")
    assert listed == sorted(listed)
    assert {"disable-debug-levels", "dump-stack-trace", "enable-debug-levels"} < set(listed)
    assert "show-controllers" not in listed  # the Controller's own command
    # the same through the CLI, as the README shows it
    cli = subprocess.run(
        [sys.executable, "-m", "edge_cloud.cli", "ctl", "debug", "enablelevels",
         "node.type=dme", "levels=api,notify", "--addr", region.api_addr, "-o", "json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT, env=clean_env(),
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "enabled debug levels, now api,debug,dmereq,notify" in cli.stdout
    nothing = svcnode_pb2.SvcNodeKey(name="no-such-node")
    assert region.run(region.debug.RunDebug, cmd="show-debug-levels", node=nothing) == []
    (shown,) = region.run(
        region.debug.RunDebug,
        cmd="show-controllers",
        node=svcnode_pb2.SvcNodeKey(type="controller"),
    )
    assert "addr: 127.0.0.1:" in shown[1]
    with pytest.raises(grpc.RpcError) as refused:
        region.run(region.debug.RunDebug)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "no cmd specified"

    region.dme.stop()
    wait_for(lambda: True if dme_node(region) is None else None, 10, "the DME to be gone")
    assert region.run(region.debug.ShowDebugLevels, **on_dme) == []


async def check_silent_node_times_out(region: Region) -> None:
    wait_for(lambda: dme_node(region), 20, "the DME's SvcNode")
    client = NotifyClient([f"127.0.0.1:{region.notify_port}"], name="silent crm")
    SvcNodes(my_node("crm", name="silent")).attach_client(client)

    async def ignore(req: debug_pb2.DebugRequest) -> None:
        return None  # wants debug requests, never answers

    client.on_message(debug_pb2.DebugRequest, ignore)
    async with client:
        await asyncio.to_thread(
            wait_for, lambda: region.shown(name="silent") or None, 20, "the silent node"
        )
        replies = await asyncio.to_thread(
            region.run,
            region.debug.ShowDebugLevels,
            node=svcnode_pb2.SvcNodeKey(type="crm"),
            timeout=500_000_000,
        )
    assert replies == [("crm", TIMED_OUT)]
    # its connection ended: the Controller forgets the nodes that came through it
    wait_for(lambda: True if not region.shown(name="silent") else None, 10, "silent node gone")


def check_dme_applies_changed_max_reqs(region: Region) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{region.dme_ports['api']}") as channel:
        session = session_pb2_grpc.SessionStub(channel)
        request = session_pb2.RegisterClientRequest(org_name="org", app_name="app", app_vers="1")
        refusal: list[str] = []

        def register() -> grpc.StatusCode:
            try:
                session.RegisterClient(request, timeout=5)
            except grpc.RpcError as err:
                code: grpc.StatusCode = err.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refusal.append(err.details() or "")
                return code
            return grpc.StatusCode.OK

        wait_for(lambda: dme_node(region), 20, "the DME to connect")
        limit = RL.MaxReqsRateLimitSettings(
            key=RL.MaxReqsRateLimitSettingsKey(
                max_reqs_settings_name="register-e2e", rate_limit_key=LIMITED_KEY
            ),
            settings=RL.MaxReqsSettings(
                max_reqs_algorithm=RL.MaxReqsRateLimitAlgorithm.FIXED_WINDOW_ALGORITHM,
                max_requests=1000,
                interval=60 * 10**9,
            ),
        )
        region.limits.CreateMaxReqsRateLimitSettings(limit, timeout=10)
        # the unknown App is refused on its own merits while under the limit
        assert [register() for _ in range(3)] == [grpc.StatusCode.NOT_FOUND] * 3
        limit.settings.max_requests = 2
        limit.fields[:] = ["3.2"]
        region.limits.UpdateMaxReqsRateLimitSettings(limit, timeout=10)

        def exhausted() -> bool | None:
            return True if register() == grpc.StatusCode.RESOURCE_EXHAUSTED else None

        wait_for(exhausted, 10, "the DME to apply the new limit")
        assert refusal[-1].startswith(
            "Request for /distributed_match_engine.Session/RegisterClient rate limited, "
            "please retry later. Error is: Exceeded limit of 2, retry again in "
        )


async def test_svcnodes_debug_and_live_rate_limits(region: Region) -> None:
    """One Controller and DME for all three checks; the one that stops the DME goes last."""
    check_dme_applies_changed_max_reqs(region)
    await check_silent_node_times_out(region)
    check_nodes_and_debug_commands(region)
