"""Notify propagation: an etcd commit to the client's `on_update` callback, with many objects.

Figure (issue): with 10,000 objects loaded and 1,000 updates, p50 and p99 of the time from
the commit of a change to the callback for that object in a `NotifyClient`; goal p99 <= 50 ms.

Setup: a throwaway etcd (loopback, temp dir) holding `--objects` Flavors at `1/Flavor/<key>`,
a `NotifyServer` fed by `EtcdNotifySource` on a grpc.aio server at 127.0.0.1:0 in this
process, and a client subprocess (its own event loop and GIL, pinned to another CPU) that
runs a `NotifyClient` with a Flavor cache *and* a bare `EtcdStore.watch` on `1/Flavor/`.

Each update is timed from just before the etcd put is issued (this process) to the moment
the client process sees it: once in the bare watch (the baseline: what etcd alone costs)
and once in the notify callback (etcd -> watch in the server -> notify stream -> client
cache). Both clocks are CLOCK_MONOTONIC, which one machine shares across processes. The
updates are sequential (the next put waits for both sightings of the last), each carries its
sequence number in `ram`, and both paths see the same updates, so the ratio between them is
what this noisy, shared machine can compare.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import _common as common
import grpc.aio
from edgeproto import flavor_pb2

from edge_cloud.notify import EtcdNotifySource, NotifyClient, NotifyServer
from edge_cloud.objects import codec, keys
from edge_cloud.store import EtcdStore, EventType, WatchEvent

Flavor = flavor_pb2.Flavor

#: `ram` values from here on carry an update's sequence number (loaded objects stay below).
MARK = 1 << 40
GOAL_P99_MS = 50.0
GOAL_OBJECTS = 10_000
GOAL_UPDATES = 1_000
PREFIX = keys.store_prefix("Flavor")


def flavor(i: int, ram: int = 1024) -> Flavor:
    return Flavor(key=flavor_pb2.FlavorKey(name=f"flavor-{i:06d}"), ram=ram, vcpus=2, disk=20)


def entries(count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        obj = flavor(i)
        yield keys.object_store_key(obj), codec.encode(obj)


# --- the server side (this process) ----------------------------------------------------------


async def bench(args: argparse.Namespace, plan: common.CpuPlan | None, etcd_url: str) -> None:
    store = await EtcdStore.connect(etcd_url)
    try:
        started = time.monotonic()
        await common.load(store, entries(args.objects))
        load_s = time.monotonic() - started

        notify = NotifyServer(
            EtcdNotifySource(store, [Flavor]), name="bench-ctrl", send_types=[Flavor]
        )
        server = grpc.aio.server()
        notify.add_to(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with notify:
                started = time.monotonic()
                async with asyncio.timeout(args.setup_timeout):
                    await notify.wait_ready()
                ready_s = time.monotonic() - started
                async with common.children() as kids:
                    child = await common.Child.spawn(
                        "client",
                        Path(__file__),
                        ["--child", "--etcd", etcd_url, "--notify", f"127.0.0.1:{port}"],
                        plan.client if plan else None,
                    )
                    kids.append(child)
                    sync_ms, held = await child.expect("ready", args.setup_timeout)
                    if int(held) != args.objects:
                        raise common.ChildError(f"client holds {held} of {args.objects} objects")
                    print(
                        f"setup: loaded {args.objects} objects in {load_s:.2f}s, server snapshot "
                        f"ready in {ready_s:.2f}s, client initial sync {float(sync_ms):.0f}ms",
                        flush=True,
                    )
                    await updates(args, store, child)
        finally:
            await server.stop(None)
    finally:
        await store.close()


async def updates(args: argparse.Namespace, store: EtcdStore, child: common.Child) -> None:
    watch_ns: list[int] = []
    notify_ns: list[int] = []
    put_ns: list[int] = []
    deadline = time.monotonic() + args.max_seconds
    total = args.warmup + args.updates
    done = 0
    for seq in range(total):
        if time.monotonic() > deadline:
            break
        obj = flavor(seq % args.objects, ram=MARK + seq)
        key, value = keys.object_store_key(obj), codec.encode(obj)
        sent = time.monotonic_ns()
        await store.put(key, value)
        committed = time.monotonic_ns()
        seen: dict[str, int] = {}
        while len(seen) < 2:
            kind, got, at = await child.read(args.update_timeout)
            if int(got) != seq or kind not in ("W", "N") or kind in seen:
                raise common.ChildError(f"update {seq}: unexpected sighting {kind} {got}")
            seen[kind] = int(at)
        if seq >= args.warmup:
            watch_ns.append(seen["W"] - sent)
            notify_ns.append(seen["N"] - sent)
            put_ns.append(committed - sent)
            done += 1
    if done == 0:
        raise SystemExit("no update completed within --max-seconds")
    cut = "" if done == args.updates else f" (cut short by --max-seconds: {done}/{args.updates})"
    base, put, measured = (
        common.summarize_ns(watch_ns),
        common.summarize_ns(put_ns),
        common.summarize_ns(notify_ns),
    )
    print(
        f"propagation.baseline etcd put -> bare watch event in the client process: "
        f"{base.describe()} (put round trip p50={put.p50:.3f}ms){cut}",
        flush=True,
    )
    verdict = "met" if measured.p99 <= GOAL_P99_MS else "MISSED"
    if args.objects != GOAL_OBJECTS or args.updates != GOAL_UPDATES:
        verdict = f"not judged (set for {GOAL_OBJECTS} objects and {GOAL_UPDATES} updates)"
    print(
        f"propagation.notify etcd put -> NotifyClient on_update, {args.objects} objects: "
        f"{measured.describe()} | vs baseline p50 {common.ratio(measured.p50, base.p50)} "
        f"p99 {common.ratio(measured.p99, base.p99)} | goal p99<={GOAL_P99_MS:g}ms {verdict}"
        f"{cut}",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    plan = common.plan_cpus(not args.no_pin)
    print(
        common.environment_line(
            plan, objects=args.objects, updates=args.updates, warmup=args.warmup
        ),
        flush=True,
    )
    if plan is not None:
        common.pin_process(os.getpid(), plan.server)
    with common.throwaway_etcd(plan.server if plan else None) as etcd:
        await bench(args, plan, etcd.client_url)


# --- the client side (a subprocess) ----------------------------------------------------------


async def child_main(args: argparse.Namespace) -> None:
    store = await EtcdStore.connect(args.etcd)
    client = NotifyClient([args.notify], name="bench-client", backoff_initial=0.05)
    cache = client.cache(Flavor)

    @cache.on_update
    async def sighted(new: Flavor, old: Flavor | None) -> None:
        at = time.monotonic_ns()
        if new.ram >= MARK:
            common.reply("N", new.ram - MARK, at)

    async def follow(start: int) -> None:
        async with contextlib.aclosing(store.watch(PREFIX, start)) as events:
            async for event in events:
                at = time.monotonic_ns()
                if isinstance(event, WatchEvent) and event.type is EventType.PUT:
                    ram = int(json.loads(event.value).get("ram", 0))  # uint64: a JSON string
                    if ram >= MARK:
                        common.reply("W", ram - MARK, at)

    watcher = asyncio.create_task(follow(await store.revision() + 1))
    try:
        started = time.monotonic_ns()
        await client.start()
        await client.wait_synced()
        common.reply("ready", f"{common.elapsed_ms(started):.1f}", len(cache))
        async for line in common.stdin_lines():
            if line == "quit":
                break
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.close()
        await store.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=10_000, help="objects loaded (10000)")
    parser.add_argument("--updates", type=int, default=1_000, help="timed updates (1000)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed updates first (50)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1000 objects, 100 updates, 10 warm-up"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="stop the update loop after this"
    )
    parser.add_argument(
        "--update-timeout", type=float, default=10.0, help="give up on one update after this"
    )
    parser.add_argument(
        "--setup-timeout", type=float, default=300.0, help="give up on loading/syncing after this"
    )
    # the client subprocess
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--etcd", help=argparse.SUPPRESS)
    parser.add_argument("--notify", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.objects, args.updates, args.warmup = 1_000, 100, 10
    if args.objects < 1 or args.updates < 1 or args.warmup < 0:
        parser.error("--objects and --updates must be positive, --warmup not negative")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(common.run(child_main(arguments) if arguments.child else main(arguments)))
