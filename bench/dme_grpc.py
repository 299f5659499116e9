"""FindCloudlet over gRPC against a no-op unary RPC on the same kind of server, same run.

A child process serves the DME's gRPC services (the real servicers, pipeline and standard
interceptors, over a World of 1,000 AppInsts of one App) plus a no-op unary method on the
same `grpc.aio` server (`new_server`, uvloop). Rate limiting is on, with the built-in
limiters' structure (Global per-IP and all-requests token buckets) but rates far above the
load, so its cost is measured without it refusing calls. The parent registers once, then
keeps 64 calls in flight for a bounded count (and time) per round, alternating no-op and
FindCloudlet rounds; the server and the load are pinned to different CPUs when there are two.

The same child also serves the no-op on a *bare* `grpc.aio` server (no interceptor, nothing
else registered): the framework's own ceiling on this machine. With N calls in flight,
Little's law bounds the mean latency from below by N / RPS, so a p99 goal is out of reach
for any handler when N / (bare no-op RPS) is above it; the last line says so.

`--canned` adds rounds against a third server like the first whose FindCloudlet returns a
reply computed once: what any FindCloudlet costs in gRPC, interceptor and message handling
alone, so the DME's own share of a call is the difference to the real one.

`--workers N` (N > 1) starts N server processes sharing the port (SO_REUSEPORT; the kernel
spreads connections) and spreads the calls over 4 x N client channels; nothing is pinned
then, since the workers and the load share the machine's CPUs.

Usage: python bench/dme_grpc.py [--calls 20000] [--rounds 2] [--in-flight 64] [--seconds 30]
       [--workers 1] [--canned]

The issue's goal: FindCloudlet >= 70% of the no-op's RPS and p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
from _common import environment_line, pin_process, plan_cpus, ratio, summarize_ns
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, cloudletkey_pb2, common_pb2

from edge_cloud.server import bind, new_server, standard_interceptors
from services.dme._autoprov import AutoProvStats
from services.dme._calls import DmeCalls
from services.dme._clients import AppInstClients, Devices
from services.dme._cookies import TEST_MODE_KEYS, CookieCodec
from services.dme._edgeevents import EdgeEvents
from services.dme._operators import StandaloneOperator
from services.dme._ranking import MatchEngine, SpatialIndex
from services.dme._ratelimit import RateLimitManager, default_flow_settings
from services.dme._world import AppKey, World
from services.dme.api.match_engine import DmeServicer, add_dme_services

ROOT = Path(__file__).resolve().parents[1]
APP = app_pb2.AppKey(organization="devorg", name="bench-app", version="1.0")
NOOP = "/bench.Noop/Call"


def build_world(instances: int) -> World:
    rng = random.Random(7)
    world = World()
    world.update_app(app_pb2.App(key=APP))
    for i in range(instances):
        lat, lon = rng.uniform(25, 49), rng.uniform(-124, -67)
        key = cloudletkey_pb2.CloudletKey(organization=rng.choice(["dmuus", "azure"]), name=f"c{i}")
        world.update_cloudlet(
            cloudlet_pb2.Cloudlet(key=key, location=loc_pb2.Loc(latitude=lat, longitude=lon))
        )
        world.update_cloudlet_info(cloudlet_pb2.CloudletInfo(key=key, state=2))  # READY
        world.update_app_inst(
            appinst_pb2.AppInst(
                key=appinst_pb2.AppInstKey(name=f"inst{i}", organization=APP.organization),
                app_key=APP,
                cloudlet_key=key,
                cloudlet_loc=loc_pb2.Loc(latitude=lat, longitude=lon),
                uri=f"inst{i}.example.net",
                state=common_pb2.TrackedState.READY,
                health_check=3,  # OK
            )
        )
    return world


def add_noop(server: grpc.aio.Server) -> None:
    async def noop(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Noop", {"Call": grpc.unary_unary_rpc_method_handler(noop)}
            )
        ]
    )


async def serve(port: int, reuse_port: bool) -> None:
    world = build_world(1000)
    flows = default_flow_settings()
    for flow in flows:
        flow.settings.reqs_per_second = 1e9
        flow.settings.burst_size = 1_000_000_000
    limiter = RateLimitManager(initial=flows)
    operator = StandaloneOperator()

    def upstream(_: object) -> None:
        """Where the daemon's notify client would queue records: nowhere, here."""

    # everything the daemon wires per call: AppInstClient and Device records, demand counts
    calls = DmeCalls(
        world,
        MatchEngine(world, SpatialIndex(world), rng=None),
        CookieCodec(TEST_MODE_KEYS),
        limiter,
        operator,
        operator,
        clients=AppInstClients(upstream),
        devices=Devices(upstream),
        autoprov=AutoProvStats("bench", upstream),
    )
    if reuse_port:  # workers share one port; new_server refuses that on purpose
        server = grpc.aio.server(
            interceptors=standard_interceptors("dme"), options=[("grpc.so_reuseport", 1)]
        )
        port = server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server = new_server("dme")
        port = bind(server, "127.0.0.1:0")
    add_dme_services(server, calls, EdgeEvents(calls))
    add_noop(server)
    bare = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_noop(bare)
    bare_port = bare.add_insecure_port("127.0.0.1:0")
    canned_reply = calls.find(
        AppKey(APP.organization, APP.name, APP.version), "", loc_pb2.Loc(latitude=40, longitude=-90)
    )

    class Canned(DmeServicer):
        async def FindCloudlet(self, request: Any, context: Any) -> Any:
            return canned_reply

    canned = new_server("dme")
    match_engine_api_pb2_grpc.add_MatchEngineApiServicer_to_server(
        Canned("MatchEngineApi", calls, EdgeEvents(calls)), canned
    )
    canned_port = bind(canned, "127.0.0.1:0")
    for s in (server, bare, canned):
        await s.start()
    sys.stdout.write(f"{port} {bare_port} {canned_port}\n")
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    for s in (canned, bare, server):
        await s.stop(None)


async def run_round(
    channels: list[grpc.aio.Channel],
    kind: str,
    cookie: str,
    calls: int,
    in_flight: int,
    seconds: float,
) -> tuple[float, list[int], int]:
    stubs = [match_engine_api_pb2_grpc.MatchEngineApiStub(c) for c in channels]
    noops = [c.unary_unary(NOOP) for c in channels]
    rng = random.Random(11)
    requests = [
        app_client_pb2.FindCloudletRequest(
            session_cookie=cookie,
            gps_location=loc_pb2.Loc(
                latitude=rng.uniform(25, 49), longitude=rng.uniform(-124, -67)
            ),
        )
        for _ in range(256)
    ]
    raw = [r.SerializeToString() for r in requests]
    latencies: list[int] = []
    errors = 0
    remaining = calls
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal remaining, errors
        i = w
        stub, noop = stubs[w % len(stubs)], noops[w % len(noops)]
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            i += 1
            start = time.monotonic_ns()
            try:
                if kind in ("noop", "bare"):
                    await noop(raw[i % len(raw)], timeout=10)
                else:
                    reply = await stub.FindCloudlet(requests[i % len(requests)], timeout=10)
                    if reply.status != app_client_pb2.FindCloudletReply.FIND_FOUND:
                        errors += 1
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.monotonic_ns() - start)

    began = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    elapsed = time.monotonic() - began
    return len(latencies) / elapsed, latencies, errors


async def start_worker(
    port: int, reuse_port: bool
) -> tuple[asyncio.subprocess.Process, int, int, int]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__)),
        "--serve",
        "--port",
        str(port),
        *(["--reuse-port"] if reuse_port else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 60)
    port, bare_port, canned_port = map(int, line.split())
    return child, port, bare_port, canned_port


async def main(args: argparse.Namespace) -> None:
    multi = args.workers > 1
    plan = None if multi else plan_cpus()
    children: list[asyncio.subprocess.Process] = []
    try:
        child, port, bare_port, canned_port = await start_worker(0, multi)
        children.append(child)
        for _ in range(args.workers - 1):
            children.append((await start_worker(port, True))[0])
        if plan is not None:
            pin_process(child.pid, plan.server)
            pin_process(os.getpid(), plan.client)
        print(
            environment_line(
                plan, instances=1000, in_flight=args.in_flight, server_workers=args.workers
            )
        )
        # one channel per connection; several spread the load over the workers' sockets
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(4 * args.workers if multi else 1)
        ]
        bare_channel = grpc.aio.insecure_channel(f"127.0.0.1:{bare_port}")
        canned_channel = grpc.aio.insecure_channel(f"127.0.0.1:{canned_port}")
        kinds = ("noop", "find", "bare", *(("canned",) if args.canned else ()))
        targets = {"bare": [bare_channel], "canned": [canned_channel]}
        async with contextlib.AsyncExitStack() as stack:
            for ch in (*channels, bare_channel, canned_channel):
                await stack.enter_async_context(ch)
            channel = channels[0]
            reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
                session_pb2.RegisterClientRequest(
                    org_name=APP.organization, app_name=APP.name, app_vers=APP.version
                ),
                timeout=10,
            )
            # warm-up
            await run_round(channels, "noop", reg.session_cookie, 2000, args.in_flight, 10)
            await run_round(channels, "find", reg.session_cookie, 2000, args.in_flight, 10)
            for kind in kinds[2:]:
                await run_round(targets[kind], kind, reg.session_cookie, 2000, args.in_flight, 10)
            results: dict[str, list[tuple[float, list[int], int]]] = {k: [] for k in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    results[kind].append(
                        await run_round(
                            targets.get(kind, channels),
                            kind,
                            reg.session_cookie,
                            args.calls,
                            args.in_flight,
                            args.seconds,
                        )
                    )
        names = {
            "noop": "noop unary",
            "find": "FindCloudlet",
            "bare": "noop on a bare grpc.aio server (worker 1 only)",
            "canned": "FindCloudlet returning a reply computed once (worker 1 only)",
        }
        figures = {}
        for kind, rounds in results.items():
            rps = max(r[0] for r in rounds)
            lat = summarize_ns(v for r in rounds for v in r[1])
            errors = sum(r[2] for r in rounds)
            figures[kind] = (rps, lat)
            print(f"{names[kind]}: rps={rps:.0f} {lat.describe()} errors={errors}")
        noop_rps, _ = figures["noop"]
        find_rps, find_lat = figures["find"]
        bare_rps, _ = figures["bare"]
        ok = find_rps >= 0.7 * noop_rps and find_lat.p99 <= 20
        print(
            f"FindCloudlet/noop rps: {ratio(find_rps, noop_rps)} (goal >= 0.70x), "
            f"p99 {find_lat.p99:.3f}ms (goal <= 20ms): {'met' if ok else 'NOT met'}"
        )
        if args.canned:
            canned_rps, _ = figures["canned"]
            print(
                f"canned FindCloudlet/noop rps: {ratio(canned_rps, noop_rps)}: the most any "
                "FindCloudlet could reach here"
            )
        floor_ms = args.in_flight / max(bare_rps, noop_rps) * 1000
        print(
            f"Little's law: {args.in_flight} in flight at the best no-op rate "
            f"({max(bare_rps, noop_rps):.0f}/s) means a mean latency of at least "
            f"{floor_ms:.1f}ms for any handler on this server"
        )
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 15)
            except TimeoutError:
                child.kill()
                await child.wait()


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1, help="server processes (SO_REUSEPORT)")
    parser.add_argument(
        "--canned", action="store_true", help="also time a FindCloudlet with a fixed reply"
    )
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(args.port, args.reuse_port))
        return 0
    uvloop.run(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
