"""REST gateway overhead: ShowFlavor over `/edgeproto/v1/show/flavor` against direct gRPC.

Figure (issue 4): the mean and p50/p99 latency of one ShowFlavor of `--flavors` flavors
through the Controller's REST gateway (aiohttp client, keep-alive, JSON body, one
`{"result": ...}` line per flavor), and the same call made directly over gRPC in the same
run, alternating in rounds so load drifts hit both alike. The ratio REST/gRPC is the cost of
the HTTP hop, the JSON encoding and the gateway's own loopback gRPC call.

Setup: a throwaway etcd and Redis and a Controller process with `--http-addr` on a free
port; the flavors are created over gRPC. One client, one request at a time. Every loop is
bounded by `--requests` per side and by `--max-seconds` in all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as common
import _controller as ctl
import aiohttp
import grpc.aio
from edgeproto import flavor_pb2, flavor_pb2_grpc

ROUNDS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavors", type=int, default=10, help="flavors each Show returns")
    parser.add_argument("--requests", type=int, default=500, help="Shows per side")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="bound on the loops")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    return parser.parse_args(argv)


async def bench(srv: ctl.Servers, args: argparse.Namespace) -> None:
    daemon, api = ctl.controller(srv)  # its REST gateway on a free port
    ports = daemon.start(timeout=60)
    try:
        ctl.wait_serving(api, 60)
        url = f"http://127.0.0.1:{ports['http']}/edgeproto/v1/show/flavor"
        async with (
            grpc.aio.insecure_channel(api) as channel,
            aiohttp.ClientSession() as session,
        ):
            stub = flavor_pb2_grpc.FlavorApiStub(channel)
            for i in range(args.flavors):
                await stub.CreateFlavor(
                    flavor_pb2.Flavor(
                        key=flavor_pb2.FlavorKey(name=f"bench{i}"), ram=1024, vcpus=2, disk=10
                    ),
                    timeout=10,
                )

            async def grpc_show() -> int:
                return len([f async for f in stub.ShowFlavor(flavor_pb2.Flavor(), timeout=10)])

            async def rest_show() -> int:
                async with session.post(url, data=b"{}") as response:
                    text = await response.text()
                    if response.status != 200:
                        raise RuntimeError(f"REST ShowFlavor answered {response.status}: {text}")
                return len(text.splitlines())

            for show in (grpc_show, rest_show):  # warm both paths, and check what they return
                if (n := await show()) != args.flavors:
                    raise RuntimeError(f"{show.__name__} returned {n} flavors")
            times: dict[str, list[int]] = {"grpc": [], "rest": []}
            deadline = time.monotonic() + args.max_seconds
            per_round = max(1, args.requests // ROUNDS)
            for _ in range(ROUNDS):
                for name, show in (("grpc", grpc_show), ("rest", rest_show)):
                    for _ in range(per_round):
                        begin = time.perf_counter_ns()
                        await show()
                        times[name].append(time.perf_counter_ns() - begin)
                if time.monotonic() > deadline:
                    break
    finally:
        daemon.stop()
    grpc_s, rest_s = common.summarize_ns(times["grpc"]), common.summarize_ns(times["rest"])
    print(f"ShowFlavor of {args.flavors} flavors, direct gRPC: {grpc_s.describe()}", flush=True)
    print(f"ShowFlavor of {args.flavors} flavors, REST gateway: {rest_s.describe()}", flush=True)
    print(f"ratio REST/gRPC (mean): {common.ratio(rest_s.mean, grpc_s.mean)}", flush=True)
    print(f"REST overhead per request (mean): {rest_s.mean - grpc_s.mean:.3f}ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = common.plan_cpus(not args.no_pin)
    print(common.environment_line(plan, flavors=args.flavors, requests=args.requests))
    ctl.pin_self(plan)
    with (
        tempfile.TemporaryDirectory(prefix="edge-bench-restgw-") as tmp,
        ctl.servers(Path(tmp), plan) as srv,
    ):
        return common.run(bench(srv, args))


if __name__ == "__main__":
    sys.exit(main())
