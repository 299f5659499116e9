"""AppInst create, end to end: the CreateAppInst call to READY through the Controller and the
CCRM on fake cloudlets, many at once.

Figure (issue 6): 1,000 AppInsts created concurrently on fake cloudlets, each timed from the
CreateAppInst call to the end of its stream (the Controller ends it successfully when the
instance is READY); p50, p99, max and the total wall time.

Setup: a throwaway etcd and Redis (loopback, temp dirs), a Controller and a CCRM as processes
(`python -m services.<name>`), `--cloudlets` fake cloudlets with one docker ClusterInst each,
one docker App. The AppInsts are spread round-robin over the clusters and created with at most
`--concurrency` calls in flight, from this process (grpc.aio). The server side (etcd, Redis,
Controller, CCRM) is pinned to the first CPU and this process to the second when there are two.

Baseline, same run, same concurrency: as many CreateFlavor calls (a unary call that validates
and commits one object to etcd), which is the floor of any Controller create.

Where the time goes: the CPU seconds each server process (Controller, CCRM, etcd, Redis)
spent during the AppInst phase, the etcd writes and KV RPCs (etcd's /metrics) and Redis
commands per AppInst (`INFO commandstats`, script-internal calls included), so the remaining
cost can be attributed. `--workdir DIR` keeps the daemons' logs (and lets a profiler such
as py-spy attach to the Controller by its `--ready-file` path).

Last figures (2026-11-26, 2 shared vCPUs, load average ~11 from other work, 1,000 AppInsts,
concurrency 64): all READY, total 37.8 s, p50 2.33 s, p99 4.04 s, max 4.41 s (before issue
6: p50 22.7 s, p99 50.4 s, 13 ABORTED). One create alone (`--count 30 --concurrency 1`)
takes 65 ms to READY, so at 64 in flight the rest is queueing for the one server CPU:
~29 ms of server CPU per AppInst (Controller 15-21 ms, CCRM 4-5 ms, etcd 2 ms, Redis 0.5
ms; 5 etcd writes in 7 KV RPCs, ~20 Redis commands). A py-spy profile of the Controller
during the phase splits its share as: ~35% asyncio/uvloop and gRPC call machinery plus
~12% gRPC's poller thread (7 etcd RPCs, the CCRM stream, Redis I/O), ~11% the notify
fan-out of each AppInst change to the CCRM, ~9% decoding watch events into the caches,
~9% merging worker reports, ~6% the create commit itself (cluster fit, ports, refs), ~9%
Redis progress lines and reports, ~4% the API call's own checks and stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import _common as common
import grpc
import grpc.aio
import redis.asyncio
from distributed_match_engine import loc_pb2
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    appinst_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    clusterinst_pb2,
    clusterinst_pb2_grpc,
    common_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
)

from edge_cloud import localservers
from edge_cloud.store import EtcdStore

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.support import Platform  # noqa: E402

GOAL_COUNT = 1_000
QUICK_COUNT = 50
#: the cluster node flavor: big enough that 100+ AppInsts fit on one docker cluster
NODE_FLAVOR = flavor_pb2.Flavor(
    key=flavor_pb2.FlavorKey(name="bench.node"), vcpus=256, ram=262144, disk=100
)
#: the App's flavor, what each AppInst takes from its cluster
APP_FLAVOR = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="bench.app"), vcpus=1, ram=256, disk=1)
#: the fake cloudlet's infra flavors (the second is the root LB's) and capacity
CLOUDLET_ENV = {
    "FAKE_STEP_DELAY": "0.005",
    "FLAVORS": json.dumps(
        [
            {"name": "bench.node", "vcpus": 256, "ram": 262144, "disk": 100},
            {"name": "bench.lb", "vcpus": 2, "ram": 4096, "disk": 40},
        ]
    ),
    "FAKE_VCPUS_MAX": "1024",
    "FAKE_RAM_MAX": "2097152",
}
ORG = "benchdev"
CALL_TIMEOUT = 300.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=GOAL_COUNT, help="AppInsts to create")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_COUNT} AppInsts")
    parser.add_argument("--cloudlets", type=int, default=10, help="fake cloudlets (1 cluster each)")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument(
        "--workdir", type=Path, help="keep the daemons' logs and data here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.count = QUICK_COUNT
    if args.count < 1 or args.cloudlets < 1 or args.concurrency < 1:
        parser.error("--count, --cloudlets and --concurrency must be positive")
    return args


@dataclass
class Servers:
    """What the bench runs against, with the pids it measures."""

    platform: Platform
    etcd: localservers.ServerProcess
    redis: localservers.ServerProcess

    def pids(self) -> dict[str, int]:
        out = {"etcd": self.etcd.pid, "redis": self.redis.pid}
        for name, daemon in (
            ("controller", self.platform.controller),
            ("ccrm", self.platform.ccrm),
        ):
            if daemon.process is not None:
                out[name] = daemon.process.pid
        return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def etcd_rpcs(client_url: str) -> dict[str, int]:
    """etcd KV RPCs served so far, by method (from its /metrics on the client port)."""
    with urllib.request.urlopen(f"{client_url}/metrics", timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if (
            line.startswith("grpc_server_handled_total{")
            and 'grpc_service="etcdserverpb.KV"' in line
        ):
            method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
            out[method] = out.get(method, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


async def redis_calls(url: str) -> dict[str, int]:
    """Calls per Redis command so far (`INFO commandstats`)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@contextlib.contextmanager
def servers(tmp: Path, plan: common.CpuPlan | None) -> Iterator[Servers]:
    """etcd, Redis, Controller and CCRM, all stopped (by PID) on exit."""
    prefix: list[str] = []
    if plan is not None and shutil.which("taskset"):
        prefix = ["taskset", "-c", ",".join(map(str, sorted(plan.server)))]
    etcd = localservers.start_etcd(tmp / "etcd", tmp / "etcd.log")
    try:
        redis = localservers.start_redis(tmp / "redis", tmp / "redis.log")
        try:
            if plan is not None:
                common.pin_process(etcd.pid, plan.server)
                common.pin_process(redis.pid, plan.server)
            platform = Platform(
                etcd.client_url,
                redis.client_url,
                tmp,
                controller_prefix=prefix,
                ccrm_prefix=prefix,
            )
            platform.start()
            try:
                yield Servers(platform, etcd, redis)
            finally:
                platform.stop()
        finally:
            redis.stop()
    finally:
        etcd.stop()


async def drain(call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
    async for _ in call:
        pass


async def timed_all(
    count: int, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> tuple[list[int], float, list[str]]:
    """Run `one(i)` for every i with at most `concurrency` in flight; per-call ns, total s."""
    gate = asyncio.Semaphore(concurrency)
    durations: list[int] = []
    errors: list[str] = []

    async def timed(i: int) -> None:
        async with gate:
            start = time.monotonic_ns()
            try:
                await one(i)
            except grpc.aio.AioRpcError as err:
                errors.append(f"{i}: {err.code().name} {err.details()}")
                return
            durations.append(time.monotonic_ns() - start)

    begin = time.monotonic()
    await asyncio.gather(*(timed(i) for i in range(count)))
    return durations, time.monotonic() - begin, errors


def report(name: str, durations: list[int], total: float, errors: list[str], count: int) -> None:
    if errors:
        first = errors[0] if len(errors[0]) <= 300 else errors[0][:300] + "..."
        print(f"{name}: {len(errors)} of {count} failed, first: {first}")
    if durations:
        summary = common.summarize_ns(durations)
        print(f"{name}: {summary.describe()} total={total:.2f}s rate={count / total:.1f}/s")


async def bench(srv: Servers, args: argparse.Namespace) -> None:
    platform = srv.platform
    async with grpc.aio.insecure_channel(platform.api_addr) as channel:
        flavors = flavor_pb2_grpc.FlavorApiStub(channel)
        cloudlets = cloudlet_pb2_grpc.CloudletApiStub(channel)
        clusters = clusterinst_pb2_grpc.ClusterInstApiStub(channel)
        apps = app_pb2_grpc.AppApiStub(channel)
        insts = appinst_pb2_grpc.AppInstApiStub(channel)
        features = cloudlet_pb2_grpc.PlatformFeaturesApiStub(channel)
        deadline = time.monotonic() + 30
        while True:
            shown = features.ShowPlatformFeatures(cloudlet_pb2.PlatformFeatures(), timeout=5)
            if "fake" in {f.platform_type async for f in shown}:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the CCRM did not register the fake platform in 30s")
            await asyncio.sleep(0.1)

        for flavor in (NODE_FLAVOR, APP_FLAVOR):
            await flavors.CreateFlavor(flavor, timeout=10)
        cluster_keys = []
        for c in range(args.cloudlets):
            cloudlet = cloudlet_pb2.Cloudlet(
                key=cloudletkey_pb2.CloudletKey(organization="benchop", name=f"cloudlet{c}"),
                platform_type="fake",
                location=loc_pb2.Loc(latitude=50 + c * 0.01, longitude=8),
                num_dynamic_ips=254,
            )
            cloudlet.env_var.update(CLOUDLET_ENV)
            await drain(cloudlets.CreateCloudlet(cloudlet, timeout=60))
            cluster = clusterinst_pb2.ClusterInst(deployment="docker", flavor=NODE_FLAVOR.key)
            cluster.key.name, cluster.key.organization = f"cluster{c}", ORG
            cluster.cloudlet_key.CopyFrom(cloudlet.key)
            await drain(clusters.CreateClusterInst(cluster, timeout=60))
            cluster_keys.append((cluster.key, cloudlet.key))
        # an App may run once per cluster: one App per round over the clusters
        app_keys = []
        for a in range(-(-args.count // len(cluster_keys))):
            app = app_pb2.App(
                deployment="docker",
                image_type=app_pb2.IMAGE_TYPE_DOCKER,
                image_path="docker.io/library/nginx:latest",
                access_ports="tcp:8080",
                default_flavor=APP_FLAVOR.key,
            )
            app.key.organization, app.key.name, app.key.version = ORG, f"app{a:05d}", "1.0"
            await apps.CreateApp(app, timeout=10)
            app_keys.append(app.key)

        # baseline: CreateFlavor, same count and concurrency
        async def create_flavor(i: int) -> None:
            await flavors.CreateFlavor(
                flavor_pb2.Flavor(
                    key=flavor_pb2.FlavorKey(name=f"base{i:06d}"), ram=1024, vcpus=1, disk=10
                ),
                timeout=CALL_TIMEOUT,
            )

        base = await timed_all(args.count, args.concurrency, create_flavor)

        async def create_inst(i: int) -> None:
            cluster_key, cloudlet_key = cluster_keys[i % len(cluster_keys)]
            inst = appinst_pb2.AppInst(
                app_key=app_keys[i // len(cluster_keys)],
                cluster_key=cluster_key,
                cloudlet_key=cloudlet_key,
            )
            inst.key.name, inst.key.organization = f"inst{i:06d}", ORG
            await drain(insts.CreateAppInst(inst, timeout=CALL_TIMEOUT))

        pids = srv.pids()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        redis_before = await redis_calls(srv.redis.client_url)
        rpcs_before = etcd_rpcs(srv.etcd.client_url)
        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(await EtcdStore.connect(srv.etcd.client_url))
            revision_before = await store.revision()
            measured = await timed_all(args.count, args.concurrency, create_inst)
            revisions = await store.revision() - revision_before
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        redis_after = await redis_calls(srv.redis.client_url)
        rpcs_after = etcd_rpcs(srv.etcd.client_url)
        rpcs = {
            k: v - rpcs_before.get(k, 0) for k, v in rpcs_after.items() if v > rpcs_before.get(k, 0)
        }
        redis_delta = {
            k: v - redis_before.get(k, 0)
            for k, v in redis_after.items()
            if v > redis_before.get(k, 0)
        }

        async def ready_count() -> int:
            shown = insts.ShowAppInst(appinst_pb2.AppInst(), timeout=60)
            return len([i async for i in shown if i.state == common_pb2.READY])

        ready = await ready_count()

    print(f"setup: {args.cloudlets} fake cloudlets, 1 docker cluster each, concurrency "
          f"{args.concurrency}")  # fmt: skip
    report("baseline CreateFlavor (unary, etcd commit)", *base, args.count)
    report("CreateAppInst call -> READY", *measured, args.count)
    print(f"AppInsts READY after the run: {ready}/{args.count}")
    n = args.count
    print(
        "server CPU during the AppInst phase: "
        + " ".join(f"{k}={v:.1f}s({v / n * 1000:.1f}ms/inst)" for k, v in sorted(cpu.items()))
        + f" total={sum(cpu.values()):.1f}s in {measured[1]:.1f}s wall"
    )
    top = sorted(redis_delta.items(), key=lambda kv: -kv[1])
    print(
        f"per AppInst: {revisions / n:.1f} etcd writes (revisions) in "
        + " ".join(f"{k}={v / n:.1f}" for k, v in sorted(rpcs.items()))
        + " etcd RPCs, "
        f"{sum(redis_delta.values()) / n:.1f} Redis commands ("
        + " ".join(f"{k}={v / n:.1f}" for k, v in top[:8])
        + ")"
    )
    if base[0] and measured[0]:
        b = common.summarize_ns(base[0])
        m = common.summarize_ns(measured[0])
        print(
            f"ratio AppInst/CreateFlavor: p50 {common.ratio(m.p50, b.p50)} "
            f"p99 {common.ratio(m.p99, b.p99)} total {common.ratio(measured[1], base[1])}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = common.plan_cpus(not args.no_pin)
    print(common.environment_line(plan, count=args.count, concurrency=args.concurrency))
    if plan is not None:
        common.pin_process(os.getpid(), plan.client)  # this process: the client side
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = args.workdir
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-bench-")))
        srv = stack.enter_context(servers(tmp, plan))
        return common.run(bench(srv, args))


if __name__ == "__main__":
    sys.exit(main())
