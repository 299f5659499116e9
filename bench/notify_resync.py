"""Notify reconnect resync: what a client holding many objects costs to bring up to date.

Figure (issue): reconnect resync of a client holding 100,000 objects after 100 changes, time
and bytes sent, full resend vs delta; goal: delta sends at least 50x fewer bytes.

Setup: a throwaway etcd (loopback, temp dir) holding `--objects` Flavors at `1/Flavor/<key>`,
a `NotifyServer` fed by `EtcdNotifySource` on a grpc.aio server in this process, and two
client subprocesses pinned to another CPU, each a `NotifyClient` with a Flavor cache: one
asks for a delta on reconnect (the default), the other does not (`delta=False`, what an
original client does). Both sync, both disconnect (`close()`, caches kept), `--changes`
changes are committed to etcd one by one (70% updates, 20% deletes, 10% creates), then each
reconnects in turn (`start()`), timed in the client from `start()` to the end of its resync
(`wait_resynced`; `stats` tells which kind), while the server counts the bytes of every notice
it serializes.

Two situations, each measured separately (`--scenario`):

- `restart`: the notify server is replaced by a fresh one (a Controller restart, the storm
  the delta is for), which learns the deletes since the client's revision from etcd history.
- `reconnect`: the same server stays up (a dropped connection); deletes come from its log.

Baseline in the same run: a bare `EtcdStore.range` of every object (time and key+value
bytes), the least any full reload costs. Afterwards both caches are checked equal to etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import _common as common
import grpc
import grpc.aio
from edgeproto import flavor_pb2, notice_pb2

from edge_cloud.notify import SERVICE_NAME, EtcdNotifySource, NotifyClient, NotifyServer
from edge_cloud.notify import key_string as notify_key_string
from edge_cloud.objects import codec, keys
from edge_cloud.store import EtcdStore

Flavor = flavor_pb2.Flavor
Notice = notice_pb2.Notice

GOAL_BYTES_RATIO = 50.0
GOAL_OBJECTS = 100_000
GOAL_CHANGES = 100
PREFIX = keys.store_prefix("Flavor")


def flavor(i: int, ram: int = 1024) -> Flavor:
    return Flavor(key=flavor_pb2.FlavorKey(name=f"flavor-{i:06d}"), ram=ram, vcpus=2, disk=20)


def entries(count: int) -> Iterator[tuple[str, bytes]]:
    for i in range(count):
        obj = flavor(i)
        yield keys.object_store_key(obj), codec.encode(obj)


def digest(objects: Iterable[tuple[str, Flavor]]) -> str:
    """A hash of a whole cache: key strings and deterministic serializations, in key order."""
    h = hashlib.sha256()
    for key, obj in sorted(objects, key=lambda item: item[0]):
        h.update(key.encode())
        h.update(b"\0")
        h.update(obj.SerializeToString(deterministic=True))
        h.update(b"\n")
    return h.hexdigest()


# --- the server side (this process) ----------------------------------------------------------


class Meter:
    """Counts what a server serializes onto its streams."""

    def __init__(self) -> None:
        self.notices = 0
        self.bytes = 0

    def serialize(self, notice: Notice) -> bytes:
        data: bytes = notice.SerializeToString()
        self.notices += 1
        self.bytes += len(data)
        return data


class Controller:
    """A NotifyServer on a grpc.aio server, metered; `NotifyServer.add_to` with our serializer."""

    def __init__(self, store: EtcdStore, meter: Meter) -> None:
        self.notify = NotifyServer(
            EtcdNotifySource(store, [Flavor]), name="bench-ctrl", send_types=[Flavor]
        )
        self.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "StreamNotice": grpc.stream_stream_rpc_method_handler(
                    self.notify.StreamNotice,
                    request_deserializer=Notice.FromString,
                    response_serializer=meter.serialize,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))

    async def start(self, port: int, within: float) -> tuple[int, float]:
        """Serve on `port` (0: any); returns the port and the seconds the snapshot took."""
        bound = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        started = time.monotonic()
        await self.notify.start()
        async with asyncio.timeout(within):
            await self.notify.wait_ready()
        return bound, time.monotonic() - started

    async def stop(self) -> None:
        await self.notify.close()
        await self.server.stop(None)


@dataclass
class Resync:
    kind: str
    ms: float
    notices: int
    bytes: int
    updates: int
    deletes: int


class World:
    """What etcd holds, by object index, and how to change it."""

    def __init__(self, store: EtcdStore, count: int, seed: int) -> None:
        self.store = store
        self.alive: set[int] = set(range(count))
        self.next_index = count
        self.rng = random.Random(seed)

    async def change(self, count: int) -> dict[str, int]:
        """`count` single-key commits: 70% updates, 20% deletes, 10% creates."""
        done = {"update": 0, "delete": 0, "create": 0}
        victims = self.rng.sample(sorted(self.alive), k=min(count, len(self.alive)))
        for j, i in enumerate(victims):
            match j % 10:
                case 3 | 7:
                    await self.store.delete(keys.object_store_key(flavor(i)))
                    self.alive.discard(i)
                    done["delete"] += 1
                case 9:
                    obj = flavor(self.next_index, ram=4096)
                    await self.store.put(keys.object_store_key(obj), codec.encode(obj))
                    self.alive.add(self.next_index)
                    self.next_index += 1
                    done["create"] += 1
                case _:
                    obj = flavor(i, ram=2048 + self.rng.randrange(1 << 20))
                    await self.store.put(keys.object_store_key(obj), codec.encode(obj))
                    done["update"] += 1
        return done

    async def reference(self) -> tuple[str, int]:
        """The digest and size a cache equal to etcd has."""
        items, _ = await self.store.range(PREFIX)
        decoded = [codec.decode(Flavor, kv.value) for kv in items]
        return digest((notify_key_string(obj), obj) for obj in decoded), len(decoded)


async def resync(client: common.Child, meter: Meter, within: float) -> Resync:
    notices, sent = meter.notices, meter.bytes
    kind, ms, _, updates, deletes = await client.request("start", "synced", within)
    return Resync(
        kind, float(ms), meter.notices - notices, meter.bytes - sent, int(updates), int(deletes)
    )


async def scenario(
    name: str,
    args: argparse.Namespace,
    world: World,
    clients: Mapping[str, common.Child],
    controller: Controller,
    meter: Meter,
    port: int,
) -> Controller:
    """Disconnect, change, (restart,) reconnect, compare; returns the controller now serving."""
    for client in clients.values():
        await client.request("close", "closed")
    changed = await world.change(args.changes)
    restart_s = None
    if name == "restart":
        await controller.stop()
        controller = Controller(world.store, meter)
        _, restart_s = await controller.start(port, args.setup_timeout)
    delta = await resync(clients["delta"], meter, args.setup_timeout)
    full = await resync(clients["full"], meter, args.setup_timeout)
    if delta.kind != "delta" or full.kind != "full":
        raise common.ChildError(f"{name}: expected a delta and a full resync, got {delta} {full}")
    reference, size = await world.reference()
    for label, client in clients.items():
        got, held = await client.request("digest", "digest")
        if got != reference or int(held) != size:
            raise AssertionError(f"{name}: the {label} client's cache differs from etcd")

    what = ", ".join(f"{n} {k}s" for k, n in changed.items())
    server = "same server"
    if restart_s is not None:
        server = f"server restarted (snapshot {restart_s:.2f}s)"
    for res in (full, delta):
        print(
            f"resync.{name}.{res.kind}: {size} objects after {what}, {server}: "
            f"{res.ms:.1f}ms, {res.notices} notices, {res.bytes} bytes "
            f"({common.human_bytes(res.bytes)}), callbacks {res.updates} updates "
            f"{res.deletes} deletes",
            flush=True,
        )
    bytes_ratio = full.bytes / delta.bytes if delta.bytes else float("inf")
    verdict = "met" if bytes_ratio >= GOAL_BYTES_RATIO else "MISSED"
    if args.objects != GOAL_OBJECTS or args.changes != GOAL_CHANGES:
        verdict = f"not judged (set for {GOAL_OBJECTS} objects and {GOAL_CHANGES} changes)"
    print(
        f"resync.{name}.ratio full/delta: bytes {bytes_ratio:.1f}x, time "
        f"{common.ratio(full.ms, delta.ms)} | goal delta >= {GOAL_BYTES_RATIO:g}x fewer bytes "
        f"{verdict} | caches equal etcd: yes",
        flush=True,
    )
    return controller


async def bench(args: argparse.Namespace, plan: common.CpuPlan | None, etcd_url: str) -> None:
    store = await EtcdStore.connect(etcd_url, timeout=60.0)
    try:
        started = time.monotonic()
        await common.load(store, entries(args.objects))
        load_s = time.monotonic() - started

        started_ns = time.monotonic_ns()
        items, _ = await store.range(PREFIX)
        range_ms = common.elapsed_ms(started_ns)
        range_bytes = sum(len(kv.key) + len(kv.value) for kv in items)
        del items
        print(
            f"resync.baseline bare etcd range of {args.objects} objects: {range_ms:.1f}ms, "
            f"{range_bytes} key+value bytes ({common.human_bytes(range_bytes)})",
            flush=True,
        )

        meter = Meter()
        controller = Controller(store, meter)
        try:
            port, ready_s = await controller.start(0, args.setup_timeout)
            async with common.children() as kids:
                clients: dict[str, common.Child] = {}
                first_sync: dict[str, float] = {}
                for label in ("delta", "full"):
                    flags = ["--child", "--notify", f"127.0.0.1:{port}"]
                    if label == "full":
                        flags.append("--no-delta")
                    client = await common.Child.spawn(
                        f"{label} client", Path(__file__), flags, plan.client if plan else None
                    )
                    kids.append(client)
                    clients[label] = client
                    sync_ms, held, _ = await client.expect("ready", args.setup_timeout)
                    if int(held) != args.objects:
                        raise common.ChildError(f"{label} client holds {held}/{args.objects}")
                    first_sync[label] = float(sync_ms)
                print(
                    f"setup: loaded {args.objects} objects in {load_s:.2f}s, server snapshot "
                    f"{ready_s:.2f}s, first (full) syncs: delta client "
                    f"{first_sync['delta']:.0f}ms, full client {first_sync['full']:.0f}ms",
                    flush=True,
                )
                world = World(store, args.objects, args.seed)
                for name in args.scenarios:
                    controller = await scenario(name, args, world, clients, controller, meter, port)
        finally:
            await controller.stop()
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> None:
    plan = common.plan_cpus(not args.no_pin)
    print(
        common.environment_line(
            plan, objects=args.objects, changes=args.changes, scenarios=",".join(args.scenarios)
        ),
        flush=True,
    )
    if plan is not None:
        common.pin_process(os.getpid(), plan.server)
    with common.throwaway_etcd(plan.server if plan else None) as etcd:
        await bench(args, plan, etcd.client_url)


# --- the client side (a subprocess) ----------------------------------------------------------


async def child_main(args: argparse.Namespace) -> None:
    client = NotifyClient(
        [args.notify], name="bench-client", delta=not args.no_delta, backoff_initial=0.05
    )
    cache = client.cache(Flavor)
    seen = {"updates": 0, "deletes": 0}

    @cache.on_update
    async def updated(new: Flavor, old: Flavor | None) -> None:
        seen["updates"] += 1

    @cache.on_delete
    async def deleted(old: Flavor) -> None:
        seen["deletes"] += 1

    async def start() -> tuple[str, float]:
        before = client.sync_generation, client.stats.delta_syncs
        started = time.monotonic_ns()
        await client.start()
        await client.wait_resynced(before[0])
        ms = common.elapsed_ms(started)
        return ("delta" if client.stats.delta_syncs > before[1] else "full"), ms

    try:
        _, ms = await start()
        common.reply("ready", f"{ms:.1f}", len(cache), client.synced_revision)
        async for line in common.stdin_lines():
            if line == "close":
                await client.close()
                common.reply("closed", client.synced_revision)
            elif line == "start":
                seen.update(updates=0, deletes=0)
                kind, ms = await start()
                common.reply(
                    "synced", kind, f"{ms:.3f}", len(cache), seen["updates"], seen["deletes"]
                )
            elif line == "digest":
                common.reply("digest", digest(cache.items()), len(cache))
            else:
                common.reply("error", "unknown request", repr(line))
    finally:
        await client.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--objects", type=int, default=100_000, help="objects loaded (100000)")
    parser.add_argument(
        "--changes", "--updates", type=int, default=100, help="changes while away (100)"
    )
    parser.add_argument(
        "--scenario",
        choices=("restart", "reconnect", "both"),
        default="both",
        help="server restarted, same server, or both in turn (both)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2000 objects")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--seed", type=int, default=1, help="which objects change (1)")
    parser.add_argument(
        "--setup-timeout", type=float, default=600.0, help="give up on one step after this"
    )
    # the client subprocesses
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--notify", help=argparse.SUPPRESS)
    parser.add_argument("--no-delta", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.objects = 2_000
    if args.objects < 1 or args.changes < 1:
        parser.error("--objects and --changes must be positive")
    args.scenarios = ["restart", "reconnect"] if args.scenario == "both" else [args.scenario]
    return args


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(common.run(child_main(arguments) if arguments.child else main(arguments)))
