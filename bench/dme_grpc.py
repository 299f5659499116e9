"""FindCloudlet over gRPC against a no-op unary RPC on the same kind of server, same run.

A child process serves the DME's gRPC services (the real servicers, pipeline and standard
interceptors, over a World of 1,000 AppInsts of one App) plus a no-op unary method on the
same `grpc.aio` server (`new_server`, uvloop). Rate limiting is on, with the built-in
limiters' structure (Global per-IP and all-requests token buckets) but rates far above the
load, so its cost is measured without it refusing calls. The parent registers once, then
keeps 64 calls in flight for a bounded count (and time) per round, alternating no-op and
FindCloudlet rounds; the server and the load are pinned to different CPUs when there are two.

Usage: python bench/dme_grpc.py [--calls 20000] [--rounds 2] [--in-flight 64] [--seconds 30]

The issue's goal: FindCloudlet >= 70% of the no-op's RPS and p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

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

from edge_cloud.server import bind, new_server
from services.dme._calls import DmeCalls
from services.dme._cookies import TEST_MODE_KEYS, CookieCodec
from services.dme._edgeevents import EdgeEvents
from services.dme._operators import StandaloneOperator
from services.dme._ranking import MatchEngine, SpatialIndex
from services.dme._ratelimit import RateLimitManager, default_flow_settings
from services.dme._world import World
from services.dme.api.match_engine import add_dme_services

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


async def serve() -> None:
    world = build_world(1000)
    flows = default_flow_settings()
    for flow in flows:
        flow.settings.reqs_per_second = 1e9
        flow.settings.burst_size = 1_000_000_000
    limiter = RateLimitManager(initial=flows)
    operator = StandaloneOperator()
    calls = DmeCalls(
        world,
        MatchEngine(world, SpatialIndex(world), rng=None),
        CookieCodec(TEST_MODE_KEYS),
        limiter,
        operator,
        operator,
    )
    server = new_server("dme")
    add_dme_services(server, calls, EdgeEvents(calls))

    async def noop(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b""

    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Noop", {"Call": grpc.unary_unary_rpc_method_handler(noop)}
            )
        ]
    )
    port = bind(server, "127.0.0.1:0")
    await server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin
    await server.stop(None)


async def run_round(
    channel: grpc.aio.Channel, kind: str, cookie: str, calls: int, in_flight: int, seconds: float
) -> tuple[float, list[int], int]:
    stub = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
    noop = channel.unary_unary(NOOP)
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
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            i += 1
            start = time.monotonic_ns()
            try:
                if kind == "noop":
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


async def main(args: argparse.Namespace) -> None:
    plan = plan_cpus()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__)),
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        port = int(line)
        if plan is not None:
            pin_process(child.pid, plan.server)
            pin_process(os.getpid(), plan.client)
        print(environment_line(plan, instances=1000, in_flight=args.in_flight))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
                session_pb2.RegisterClientRequest(
                    org_name=APP.organization, app_name=APP.name, app_vers=APP.version
                ),
                timeout=10,
            )
            # warm-up
            await run_round(channel, "noop", reg.session_cookie, 2000, args.in_flight, 10)
            await run_round(channel, "find", reg.session_cookie, 2000, args.in_flight, 10)
            results: dict[str, list[tuple[float, list[int], int]]] = {"noop": [], "find": []}
            for _ in range(args.rounds):
                for kind in ("noop", "find"):
                    results[kind].append(
                        await run_round(
                            channel,
                            kind,
                            reg.session_cookie,
                            args.calls,
                            args.in_flight,
                            args.seconds,
                        )
                    )
        figures = {}
        for kind, rounds in results.items():
            rps = max(r[0] for r in rounds)
            lat = summarize_ns(v for r in rounds for v in r[1])
            errors = sum(r[2] for r in rounds)
            figures[kind] = (rps, lat)
            name = "noop unary" if kind == "noop" else "FindCloudlet"
            print(f"{name}: rps={rps:.0f} {lat.describe()} errors={errors}")
        noop_rps, _ = figures["noop"]
        find_rps, find_lat = figures["find"]
        ok = find_rps >= 0.7 * noop_rps and find_lat.p99 <= 20
        print(
            f"FindCloudlet/noop rps: {ratio(find_rps, noop_rps)} (goal >= 0.70x), "
            f"p99 {find_lat.p99:.3f}ms (goal <= 20ms): {'met' if ok else 'NOT met'}"
        )
    finally:
        if child.stdin is not None:
            child.stdin.close()
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
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve())
        return 0
    uvloop.run(main(args))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
