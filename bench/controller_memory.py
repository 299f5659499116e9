"""Controller resident memory with 10,000 cloudlets and 100,000 AppInsts loaded.

Figure (issue 4): the Controller process's resident set size (VmRSS of /proc/<pid>/status)
with 10,000 cloudlets (each with its CloudletInfo, CloudletRefs, one docker cluster and its
ClusterRefs) and 100,000 AppInsts (2,000 Apps with their AppInstRefs) in etcd. Goal: at most
1.5 GB.

It is read three times: once the Controller serves (the caches hold the objects as stored
bytes); after a ShowCloudlet and a ShowAppInst of everything (which decodes every object
they stream); and at the end of a settling period, when the notify server's snapshot and its
background decoding have run (the peak of the three is the figure). Baseline, same run: the
RSS of a Controller on an empty etcd.

The objects are written straight into etcd with the Controller's own codec and keys
(`bench/_controller.py`). The server side (etcd, Redis, Controller) is pinned to the first
CPU, this process to the second. Every wait is bounded.
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

from edge_cloud.store import EtcdStore

GOAL_BYTES = 1_500_000_000
START_TIMEOUT = 300.0
SETTLE_SECONDS = 60.0
SETTLE_STEP = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cloudlets", type=int, default=10_000)
    parser.add_argument("--app-insts", type=int, default=100_000)
    parser.add_argument("--apps", type=int, default=2_000)
    parser.add_argument("--quick", action="store_true", help="a tenth of everything")
    parser.add_argument(
        "--settle", type=float, default=SETTLE_SECONDS, help="most seconds to wait for RSS"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    args = parser.parse_args(argv)
    if args.quick:
        args.cloudlets, args.app_insts, args.apps = (
            args.cloudlets // 10,
            args.app_insts // 10,
            args.apps // 10,
        )
    if min(args.cloudlets, args.app_insts, args.apps) < 1:
        parser.error("--cloudlets, --app-insts and --apps must be positive")
    if args.apps * args.cloudlets < args.app_insts:
        parser.error("an App would run twice on one cluster: raise --apps or --cloudlets")
    return args


def settle(pid: int, within: float) -> tuple[int, float]:
    """Poll the RSS until it stops growing (< 1 % over two polls) or `within` ends."""
    begin = time.monotonic()
    peak = last = ctl.rss_bytes(pid)
    steady = 0
    while time.monotonic() - begin < within and steady < 2:
        time.sleep(SETTLE_STEP)
        now = ctl.rss_bytes(pid)
        peak = max(peak, now)
        steady = steady + 1 if now <= last * 1.01 else 0
        last = now
    return peak, time.monotonic() - begin


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = common.plan_cpus(not args.no_pin)
    size = ctl.WorldSize(args.cloudlets, 1, args.apps, args.app_insts)
    total = ctl.count(size)
    print(common.environment_line(plan, objects=total))
    print(
        f"world: {size.cloudlets} cloudlets (+info, refs), {size.clusters} clusters (+refs), "
        f"{size.apps} apps (+refs), {size.app_insts} appinsts: {total} objects"
    )
    ctl.pin_self(plan)
    fmt = common.human_bytes
    with (
        tempfile.TemporaryDirectory(prefix="edge-bench-ctlmem-") as tmp,
        ctl.servers(Path(tmp), plan) as srv,
    ):
        print(f"compiled the Controller's bytecode in {ctl.warm_bytecode(srv):.1f}s (not timed)")
        empty, addr = ctl.controller(srv, "empty")
        empty.start(timeout=START_TIMEOUT)
        try:
            ctl.wait_serving(addr, START_TIMEOUT)
            assert empty.process is not None
            base, _ = settle(empty.process.pid, 10.0)
        finally:
            empty.stop()
        print(f"baseline: empty Controller RSS {fmt(base)}")

        async def load() -> None:
            async with await EtcdStore.connect(srv.etcd.client_url, timeout=60) as store:
                await store.delete_prefix("1/")  # the empty run's version and settings
                begin = time.monotonic()
                await common.load(store, ctl.world(size))
                print(f"loaded {total} objects into etcd in {time.monotonic() - begin:.1f}s")

        asyncio.run(load())
        daemon, addr = ctl.controller(srv, "loaded")
        begin = time.monotonic()
        daemon.start(timeout=START_TIMEOUT)
        try:
            ctl.wait_serving(addr, START_TIMEOUT)
            assert daemon.process is not None
            pid = daemon.process.pid
            serving = ctl.rss_bytes(pid)
            print(f"SERVING after {time.monotonic() - begin:.1f}s: RSS {fmt(serving)}")
            n_cloudlets, _ = asyncio.run(ctl.show_count(addr, "cloudlet"))
            n_insts, took = asyncio.run(ctl.show_count(addr, "appinst"))
            shown = ctl.rss_bytes(pid)
            print(
                f"after ShowCloudlet ({n_cloudlets}) and ShowAppInst ({n_insts} in {took:.1f}s): "
                f"RSS {fmt(shown)}"
            )
            settled, waited = settle(pid, args.settle)
            print(f"after settling {waited:.0f}s (notify snapshot, decoding): RSS {fmt(settled)}")
        finally:
            daemon.stop()
    peak = max(serving, shown, settled)
    ok = n_cloudlets == size.cloudlets and n_insts == size.app_insts
    verdict = "met" if peak <= GOAL_BYTES and ok else "MISSED"
    print(
        f"Controller RSS with {size.cloudlets} cloudlets and {size.app_insts} AppInsts: "
        f"peak {fmt(peak)} (goal {fmt(GOAL_BYTES)}: {verdict}); "
        f"{common.ratio(peak, base)} the empty Controller's {fmt(base)}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
