"""Controller cold start: a Controller process on an etcd holding 100,000 objects, until it serves.

Figure (issue 4): seconds from starting `python -m services.controller` until its gRPC health
service says SERVING and a Show RPC answers with every object of its type (ShowCloudlet; then
ShowAppInst, the largest type, timed on its own). Goal: serving within 10 s.

The objects are written straight into etcd with the Controller's own codec and key functions
(`bench/_controller.py`): flavors, platform features, cloudlets with their CloudletInfo and
CloudletRefs, docker clusters with their ClusterRefs, Apps with their AppInstRefs, and
AppInsts spread over the clusters, all READY, byte for byte what the API would have stored.

Baselines, same run: one raw etcd range read of all those keys (aetcd's Range stub, values
included, parsed into the response message), and the start of a Controller on an empty
etcd (the fixed cost: interpreter, imports, connections), so the load's own share shows.
The Controller's modules are compiled to bytecode before anything is timed (into a cache of
the run: a shell with PYTHONDONTWRITEBYTECODE would otherwise make every start compile every
module, which a deployed image never does). The server side (etcd, Redis, Controller) is
pinned to the first CPU, this process to the second. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import _common as common
import _controller as ctl
import aetcd
import aetcd.rpc as rpc

from edge_cloud.store import EtcdStore

GOAL_OBJECTS = 100_000
GOAL_SECONDS = 10.0
QUICK_OBJECTS = 10_000
START_TIMEOUT = 120.0
#: a listing of the whole database in one response is large; let the baseline read it
RAW_MAX_MESSAGE = 1 << 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=GOAL_OBJECTS, help="stored objects")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_OBJECTS} objects")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    args = parser.parse_args(argv)
    if args.quick:
        args.objects = QUICK_OBJECTS
    if args.objects < 1000:
        parser.error("--objects must be at least 1000")
    return args


def size_for(objects: int) -> ctl.WorldSize:
    """A world of about `objects` keys: a cloudlet per 50 objects, 5 clusters each, the
    rest AppInsts, about 50 per App (each App with its AppInstRefs)."""
    cloudlets = max(1, objects // 50)
    clusters = cloudlets * 5
    fixed = 3 + 3 * cloudlets + 2 * clusters  # features, flavors; cloudlet, info, refs; ...
    insts = max(1, objects - fixed)
    apps = max(1, insts // 52)  # 50 AppInsts and the App and its AppInstRefs
    insts = max(1, insts - 2 * apps)
    return ctl.WorldSize(cloudlets, 5, max(apps, -(-insts // clusters)), insts)


async def raw_range(url: str) -> tuple[float, int, int]:
    """One Range of `1/` with values through aetcd's stub: seconds, keys, bytes."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    options = {"grpc.max_receive_message_length": RAW_MAX_MESSAGE}
    client = aetcd.Client(host=host, port=int(port), options=options)
    await client.connect()
    try:
        begin = time.monotonic()
        resp = await client.kvstub.Range(
            rpc.RangeRequest(key=b"1/", range_end=b"10"), timeout=START_TIMEOUT
        )
        took = time.monotonic() - begin
    finally:
        await client.close()
    return took, len(resp.kvs), sum(len(kv.key) + len(kv.value) for kv in resp.kvs)


def start_timed(srv: ctl.Servers, name: str) -> tuple[ctl.Daemon, str, float, float]:
    """Start a Controller; seconds until health SERVING and until ShowCloudlet answered."""
    daemon, addr = ctl.controller(srv, name)
    begin = time.monotonic()
    daemon.start(timeout=START_TIMEOUT)
    serving = ctl.wait_serving(addr, START_TIMEOUT) - begin
    asyncio.run(ctl.show_count(addr, "cloudlet"))
    return daemon, addr, serving, time.monotonic() - begin


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = common.plan_cpus(not args.no_pin)
    size = size_for(args.objects)
    total = ctl.count(size)
    print(common.environment_line(plan, objects=total))
    print(
        f"world: {size.cloudlets} cloudlets (+info, refs), {size.clusters} clusters (+refs), "
        f"{size.apps} apps (+refs), {size.app_insts} appinsts: {total} objects"
    )
    ctl.pin_self(plan)
    with (
        tempfile.TemporaryDirectory(prefix="edge-bench-ctlcold-") as tmp,
        ctl.servers(Path(tmp), plan) as srv,
    ):
        print(f"compiled the Controller's bytecode in {ctl.warm_bytecode(srv):.1f}s (not timed)")
        empty, _, empty_serving, empty_show = start_timed(srv, "empty")
        empty.stop()
        print(f"baseline empty etcd: SERVING after {empty_serving:.2f}s, Show {empty_show:.2f}s")

        async def load() -> None:
            async with await EtcdStore.connect(srv.etcd.client_url, timeout=60) as store:
                await store.delete_prefix("1/")  # the empty run's version and settings
                begin = time.monotonic()
                await common.load(store, ctl.world(size))
                print(f"loaded {total} objects into etcd in {time.monotonic() - begin:.1f}s")

        asyncio.run(load())
        took, n_raw, n_bytes = asyncio.run(raw_range(srv.etcd.client_url))
        print(
            f"baseline raw etcd range of 1/: {n_raw} keys, {common.human_bytes(n_bytes)} "
            f"in {took:.2f}s"
        )
        try:
            daemon, addr, serving, show = start_timed(srv, "loaded")
        except (TimeoutError, ctl.DaemonError) as err:
            print(f"cold start FAILED: {str(err)[-1500:]}")
            return 1
        try:
            n_cloudlets, _ = asyncio.run(ctl.show_count(addr, "cloudlet"))
            n_insts, show_insts = asyncio.run(ctl.show_count(addr, "appinst"))
        finally:
            daemon.stop()
    ok = n_cloudlets == size.cloudlets and n_insts == size.app_insts
    print(f"cold start with {total} objects: SERVING after {serving:.2f}s")
    print(
        f"cold start with {total} objects: SERVING and ShowCloudlet ({n_cloudlets}) "
        f"after {show:.2f}s; goal {GOAL_SECONDS:.0f}s: "
        f"{'met' if show <= GOAL_SECONDS and ok else 'MISSED'}"
    )
    print(f"ShowAppInst streamed {n_insts}/{size.app_insts} in {show_insts:.2f}s")
    print(
        f"ratios: cold start/raw range {common.ratio(show, took)}, "
        f"cold start - empty start = {show - empty_show:.2f}s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
