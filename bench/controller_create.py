"""Controller create throughput: CreateFlavor and CreateAppInst (CRM override) against raw etcd.

Figures (issue 4): creates per second through the Controller's gRPC API, for Flavor (a unary
create: validate, one guarded transaction, caches caught up) and for AppInst with
`crm_override=IGNORE_CRM` (references, resources, ports, refs objects: no infrastructure),
each against the raw etcd transaction rate measured in the same run at the same
concurrency. Goal: at least 50 % of raw.

Raw baseline: aetcd's own Txn stub from this process, one transaction per "create" that does
what the smallest create must: compare the new key's mod revision with 0 and put the value.
It is the ceiling any create built on etcd transactions can reach from Python here.

gRPC no-op ceiling: a process pinned like the Controller (its CPU, the same event loop and
`edge_cloud.server.new_server` wrapping: error mapping, access log at INFO as JSON into a
file, metrics) serving `CreateFlavor` with a handler that only returns. It is called exactly
as the Controller is, so "no-op/raw" is the upper bound any gRPC create can reach here, and
`1 / no-op rate` is the server CPU that gRPC and Python cost per call before any work.

Server-streaming no-op ceiling: the same server's `CreateAppInst`, a server-streaming call
like the Controller's, answering with as many `Result` messages as the Controller's
CreateAppInst (IGNORE_CRM) sent per call in this run (two if that phase did not run), and
doing nothing else. It is the bound for the AppInst shape of call; run after the
Controller phases, with the Controller stopped.

Setup: a throwaway etcd and Redis, a Controller process (`python -m services.controller`),
no CCRM. The platform features are written into etcd before the Controller starts; the
cloudlets (IGNORE_CRM) and their clusters (IGNORE_CRM) are created through the API, and a
READY CloudletInfo with an infra flavor injected for each cloudlet. The server side (etcd,
Redis, Controller) is pinned to the first CPU and this process to the second.

Every loop is bounded by its count and by `--max-seconds` per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import _common as common
import _controller as ctl
import aetcd
import aetcd.rpc as rpc
import grpc
import grpc.aio
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    appinst_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    clusterinst_pb2,
    clusterinst_pb2_grpc,
    common_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    result_pb2,
)

from edge_cloud import logs
from edge_cloud.objects import codec, keys
from edge_cloud.server import bind, new_server
from edge_cloud.store import EtcdStore

CALL_TIMEOUT = 60.0
QUICK_COUNT = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="creates per phase")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_COUNT} per phase")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight")
    parser.add_argument("--cloudlets", type=int, default=10, help="cloudlets (1 cluster each)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="bound of each phase")
    parser.add_argument(
        "--only", choices=("flavor", "appinst"), help="run one create phase (for profiling)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        type=Path,
        help="profile the Controller during each phase with py-spy (raw stacks into DIR)",
    )
    parser.add_argument(
        "--py-spy-rate", type=int, default=100, help="py-spy samples per second (with --py-spy)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--serve-noop", metavar="LOG", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--noop-results", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.count = QUICK_COUNT
    if (
        min(args.count, args.concurrency, args.cloudlets, args.noop_results) < 1
        or args.max_seconds <= 0
    ):
        parser.error("--count, --concurrency, --cloudlets and --max-seconds must be positive")
    return args


async def timed_all(
    count: int, concurrency: int, max_seconds: float, one: Callable[[int], Awaitable[None]]
) -> tuple[int, float, list[str]]:
    """`one(i)` for i < count, `concurrency` workers; stops starting new ones after the bound.

    Returns:
        How many succeeded, the wall time, and the errors.
    """
    done = 0
    errors: list[str] = []
    next_i = 0
    stop_at = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal done, next_i
        while next_i < count and time.monotonic() < stop_at:
            i = next_i
            next_i += 1
            try:
                await one(i)
            except grpc.aio.AioRpcError as err:
                errors.append(f"{i}: {err.code().name} {err.details()}")
                continue
            done += 1

    begin = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.monotonic() - begin, errors


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named server process."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_line(pids: dict[str, int], before: dict[str, float], calls: int) -> dict[str, float]:
    """Print (and return) the CPU each server process spent per successful call since `before`.

    CPU time, unlike the rate, hardly depends on what else runs on this shared machine, so
    it is the figure to compare between runs (the 10 ms tick makes short phases coarse).

    Returns:
        Microseconds per call by process name (empty when no call succeeded).
    """
    if not calls:
        return {}
    used = {name: (cpu_seconds(pid) - before[name]) / calls * 1e6 for name, pid in pids.items()}
    text = ", ".join(f"{name} {us:.0f}" for name, us in used.items())
    print(f"  server CPU per call (us): {text}", flush=True)
    return used


def rate_line(name: str, done: int, wall: float, errors: list[str]) -> float:
    rate = done / wall if wall > 0 else 0.0
    line = f"{name}: {done} in {wall:.2f}s = {rate:.0f}/s"
    if errors:
        line += f" ({len(errors)} failed, first: {errors[0][:300]})"
    print(line, flush=True)
    return rate


async def raw_etcd(url: str, prefix: str, args: argparse.Namespace) -> float:
    """Raw aetcd: compare mod_revision == 0 and put, `count` new keys at `concurrency`."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    client = aetcd.Client(host=host, port=int(port))
    await client.connect()
    value = codec.encode(
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="raw"), ram=1024, vcpus=1, disk=10)
    )
    try:

        async def one(i: int) -> None:
            key = f"{prefix}{i:07d}".encode()
            request = rpc.TxnRequest(
                compare=[
                    rpc.Compare(
                        key=key,
                        result=rpc.Compare.EQUAL,
                        target=rpc.Compare.MOD,
                        mod_revision=0,
                    )
                ],
                success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
            )
            resp = await client.kvstub.Txn(request, timeout=CALL_TIMEOUT)
            if not resp.succeeded:
                raise RuntimeError(f"raw txn on {key!r} failed its compare")

        done, wall, errors = await timed_all(args.count, args.concurrency, args.max_seconds, one)
    finally:
        await client.close()
    return rate_line("raw aetcd txn (compare+put)", done, wall, errors)


class NoopFlavors(flavor_pb2_grpc.FlavorApiServicer):
    """CreateFlavor that does nothing: what gRPC and the server wrapping alone cost."""

    async def CreateFlavor(
        self,
        request: flavor_pb2.Flavor,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> result_pb2.Result:
        return result_pb2.Result()


class NoopAppInsts(appinst_pb2_grpc.AppInstApiServicer):
    """CreateAppInst that only streams `results` empty Results: the server-streaming bound.

    Args:
        results: How many Result messages each call answers with.
    """

    def __init__(self, results: int) -> None:
        self._results = results

    async def CreateAppInst(
        self,
        request: appinst_pb2.AppInst,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> AsyncIterator[result_pb2.Result]:
        for _ in range(self._results):
            yield result_pb2.Result()


async def serve_noop(log_file: Path, results: int) -> None:
    """The no-op server (child side): print its port, serve until the parent closes stdin."""
    server = new_server("noop")
    flavor_pb2_grpc.add_FlavorApiServicer_to_server(NoopFlavors(), server)
    appinst_pb2_grpc.add_AppInstApiServicer_to_server(NoopAppInsts(results), server)
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        common.reply("port", port)
        async for _ in common.stdin_lines():
            pass
    finally:
        await server.stop(1)
        logging.getLogger().handlers[0].flush()


def run_noop_server(log_file: Path, results: int) -> int:
    """Logging and event loop as `run_daemon` sets them up for a daemon, then `serve_noop`."""
    import uvloop

    with log_file.open("a") as out:
        logs.setup("noop", "info", "json", stream=out)
        uvloop.run(serve_noop(log_file, results))
    return 0


async def noop_ceiling(
    srv: ctl.Servers, plan: common.CpuPlan | None, args: argparse.Namespace
) -> tuple[float, float]:
    """CreateFlavor against the no-op server, called the same way as the Controller's.

    Returns:
        The rate, and the no-op server's CPU per call in microseconds.
    """
    cpus = None if plan is None else plan.server
    log_file = srv.tmp / "noop.log"
    async with common.children() as spawned:
        child = await common.Child.spawn(
            "noop", Path(__file__), ["--serve-noop", str(log_file)], cpus
        )
        spawned.append(child)
        (port,) = await child.expect("port", within=60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            flavors = flavor_pb2_grpc.FlavorApiStub(channel)

            async def one(i: int) -> None:
                await flavors.CreateFlavor(
                    flavor_pb2.Flavor(
                        key=flavor_pb2.FlavorKey(name=f"noop{i:07d}"), ram=1024, vcpus=1, disk=10
                    ),
                    timeout=CALL_TIMEOUT,
                )

            await timed_all(min(args.count, 200), args.concurrency, args.max_seconds, one)  # warm
            pids = {"noop": child.pid, "etcd": srv.etcd.pid}
            before = cpu_snapshot(pids)
            measured = await timed_all(args.count, args.concurrency, args.max_seconds, one)
            rate = rate_line("gRPC no-op CreateFlavor (same server wrapping, pinned)", *measured)
            used = cpu_line(pids, before, measured[0])
    return rate, used.get("noop", 0.0)


async def noop_stream_ceiling(
    srv: ctl.Servers, plan: common.CpuPlan | None, args: argparse.Namespace, results: int
) -> tuple[float, float]:
    """Server-streaming no-op: CreateAppInst answering `results` Results, called like the real.

    Returns:
        The rate, and the no-op server's CPU per call in microseconds.
    """
    cpus = None if plan is None else plan.server
    log_file = srv.tmp / "noop-stream.log"
    async with common.children() as spawned:
        child = await common.Child.spawn(
            "noop-stream",
            Path(__file__),
            ["--serve-noop", str(log_file), "--noop-results", str(results)],
            cpus,
        )
        spawned.append(child)
        (port,) = await child.expect("port", within=60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            insts = appinst_pb2_grpc.AppInstApiStub(channel)

            async def one(i: int) -> None:
                inst = appinst_pb2.AppInst(
                    key=appinst_pb2.AppInstKey(name=f"noop{i:06d}", organization=ctl.ORG_DEV),
                    crm_override=common_pb2.IGNORE_CRM,
                )
                got = await drain(insts.CreateAppInst(inst, timeout=CALL_TIMEOUT))
                if got != results:
                    raise RuntimeError(f"the no-op stream sent {got} Results, not {results}")

            await timed_all(min(args.count, 200), args.concurrency, args.max_seconds, one)  # warm
            pids = {"noop": child.pid}
            before = cpu_snapshot(pids)
            measured = await timed_all(args.count, args.concurrency, args.max_seconds, one)
            rate = rate_line(
                f"gRPC no-op CreateAppInst stream ({results} Result{'s' * (results != 1)},"
                " same wrapping, pinned)",
                *measured,
            )
            used = cpu_line(pids, before, measured[0])
    return rate, used.get("noop", 0.0)


@contextlib.asynccontextmanager
async def profiled(args: argparse.Namespace, pid: int | None, phase: str) -> AsyncIterator[None]:
    """Run `py-spy record` on the Controller while the body runs, when asked to."""
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if args.py_spy is None or pid is None or exe is None:
        yield
        return
    out = args.py_spy / f"{phase}.txt"
    spy = await asyncio.create_subprocess_exec(
        exe, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "--nonblocking",
        "-r", str(args.py_spy_rate),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        async with asyncio.timeout(30):
            await spy.wait()
        print(f"py-spy stacks of {phase}: {out}")


async def drain(call: grpc.aio.UnaryStreamCall) -> int:  # type: ignore[type-arg]
    """Read a server stream to its end; returns how many messages it sent."""
    got = 0
    async for _ in call:
        got += 1
    return got


async def setup_world(
    channel: grpc.aio.Channel, args: argparse.Namespace
) -> tuple[list[clusterinst_pb2.ClusterInst], list[app_pb2.AppKey]]:
    """Flavors, cloudlets (IGNORE_CRM, READY CloudletInfo injected), one cluster each, Apps."""
    flavors = flavor_pb2_grpc.FlavorApiStub(channel)
    cloudlets = cloudlet_pb2_grpc.CloudletApiStub(channel)
    infos = cloudlet_pb2_grpc.CloudletInfoApiStub(channel)
    clusters = clusterinst_pb2_grpc.ClusterInstApiStub(channel)
    apps = app_pb2_grpc.AppApiStub(channel)
    await flavors.CreateFlavor(ctl.CLUSTER_FLAVOR, timeout=CALL_TIMEOUT)
    await flavors.CreateFlavor(
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10),
        timeout=CALL_TIMEOUT,
    )
    made: list[clusterinst_pb2.ClusterInst] = []
    for c in range(args.cloudlets):
        cloudlet = cloudlet_pb2.Cloudlet(
            key=ctl.cloudlet_key(c),
            location=loc_pb2.Loc(latitude=50 + c * 0.01, longitude=8),
            num_dynamic_ips=254,
            platform_type=ctl.PLATFORM_TYPE,
            crm_override=common_pb2.IGNORE_CRM,
        )
        await drain(cloudlets.CreateCloudlet(cloudlet, timeout=CALL_TIMEOUT))
        info = cloudlet_pb2.CloudletInfo(
            key=cloudlet.key,
            state=appcommon_pb2.CLOUDLET_STATE_READY,
            flavors=[ctl.INFRA_FLAVOR],
            os_max_ram=1 << 30,
            os_max_vcores=1 << 20,
            os_max_vol_gb=1 << 30,
        )
        await infos.InjectCloudletInfo(info, timeout=CALL_TIMEOUT)
        cluster = clusterinst_pb2.ClusterInst(
            key=ctl.cluster_key(c, 0),
            cloudlet_key=cloudlet.key,
            flavor=ctl.CLUSTER_FLAVOR.key,
            deployment="docker",
            crm_override=common_pb2.IGNORE_CRM,
        )
        await drain(clusters.CreateClusterInst(cluster, timeout=CALL_TIMEOUT))
        made.append(cluster)
    gate = asyncio.Semaphore(args.concurrency)

    async def create_app(a: int) -> app_pb2.AppKey:
        app = app_pb2.App(
            key=ctl.app_key(a),
            image_type=app_pb2.IMAGE_TYPE_DOCKER,
            deployment="docker",
            image_path=f"registry.example.com/{ctl.ORG_DEV}/app{a:05d}:1.0",
            access_ports="tcp:8080",
            default_flavor=flavor_pb2.FlavorKey(name="x1.small"),
        )
        async with gate:
            await apps.CreateApp(app, timeout=CALL_TIMEOUT)
        return app.key

    # an App runs once per cluster: as many Apps as rounds over the clusters
    app_keys = await asyncio.gather(*(create_app(a) for a in range(-(-args.count // len(made)))))
    return made, list(app_keys)


async def bench(srv: ctl.Servers, plan: common.CpuPlan | None, args: argparse.Namespace) -> None:
    async with await EtcdStore.connect(srv.etcd.client_url) as store:
        features = cloudlet_pb2.PlatformFeatures(platform_type=ctl.PLATFORM_TYPE, node_type="ccrm")
        await store.put(keys.object_store_key(features), codec.encode(features))
    raw_before = await raw_etcd(srv.etcd.client_url, "bench/raw-a/", args)
    noop, noop_us = await noop_ceiling(srv, plan, args)
    ctl.warm_bytecode(srv)
    daemon, addr = ctl.controller(srv)
    daemon.start(timeout=60)
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            clusters, app_keys = await setup_world(channel, args)
            flavors = flavor_pb2_grpc.FlavorApiStub(channel)
            insts = appinst_pb2_grpc.AppInstApiStub(channel)

            async def create_flavor(i: int) -> None:
                await flavors.CreateFlavor(
                    flavor_pb2.Flavor(
                        key=flavor_pb2.FlavorKey(name=f"bench{i:07d}"), ram=1024, vcpus=1, disk=10
                    ),
                    timeout=CALL_TIMEOUT,
                )

            flavor = inst = 0.0
            per_call = args.noop_results
            flavor_us: dict[str, float] = {}
            inst_us: dict[str, float] = {}
            pid = None if daemon.process is None else daemon.process.pid
            pids = {"etcd": srv.etcd.pid, "redis": srv.redis.pid}
            if pid is not None:
                pids = {"controller": pid, **pids}
            if args.only in (None, "flavor"):
                before = cpu_snapshot(pids)
                async with profiled(args, pid, "flavor"):
                    measured = await timed_all(
                        args.count, args.concurrency, args.max_seconds, create_flavor
                    )
                flavor = rate_line("CreateFlavor", *measured)
                flavor_us = cpu_line(pids, before, measured[0])

            results = [0]  # Result messages of all successful CreateAppInst calls

            async def create_inst(i: int) -> None:
                cluster = clusters[i % len(clusters)]
                inst = appinst_pb2.AppInst(
                    key=appinst_pb2.AppInstKey(name=f"inst{i:06d}", organization=ctl.ORG_DEV),
                    app_key=app_keys[i // len(clusters)],
                    cluster_key=cluster.key,
                    cloudlet_key=cluster.cloudlet_key,
                    crm_override=common_pb2.IGNORE_CRM,
                )
                results[0] += await drain(insts.CreateAppInst(inst, timeout=CALL_TIMEOUT))

            if args.only in (None, "appinst"):
                before = cpu_snapshot(pids)
                async with profiled(args, pid, "appinst"):
                    measured = await timed_all(
                        args.count, args.concurrency, args.max_seconds, create_inst
                    )
                inst = rate_line("CreateAppInst (IGNORE_CRM)", *measured)
                inst_us = cpu_line(pids, before, measured[0])
                if measured[0]:
                    per_call = max(1, round(results[0] / measured[0]))
    finally:
        daemon.stop()
    stream, stream_us = await noop_stream_ceiling(srv, plan, args, per_call)
    raw_after = await raw_etcd(srv.etcd.client_url, "bench/raw-b/", args)
    raw = (raw_before + raw_after) / 2
    print(f"raw baseline (mean of before and after): {raw:.0f}/s")
    print(
        f"ratio gRPC no-op ceiling/raw: {common.ratio(noop, raw)}"
        f" (a no-op call costs its server {noop_us:.0f} us of CPU; 0.5x raw leaves"
        f" {1e6 / (0.5 * raw):.0f} us of the server CPU per create, etcd's share included)"
        if raw > 0
        else "no raw baseline"
    )
    if raw > 0:
        print(
            f"ratio gRPC no-op stream ceiling/raw: {common.ratio(stream, raw)}"
            f" (a no-op stream of {per_call} Result{'s' * (per_call != 1)} costs its server"
            f" {stream_us:.0f} us of CPU)"
        )
    for name, rate, used, ceiling, ceiling_us, shape in (
        ("CreateFlavor", flavor, flavor_us, noop, noop_us, "no-op"),
        ("CreateAppInst", inst, inst_us, stream, stream_us, "no-op stream"),
    ):
        if not rate:
            continue
        ctl_us = used.get("controller", 0.0)
        print(
            f"ratio {name}/{shape}: {common.ratio(rate, ceiling)}"
            f" (Controller CPU per create {ctl_us:.0f} us = {common.ratio(ctl_us, ceiling_us)}"
            f" of a {shape} call)"
        )
        verdict = "meets" if rate >= 0.5 * raw else "misses"
        print(f"ratio {name}/raw: {common.ratio(rate, raw)} ({verdict} the goal of 0.50x)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_noop is not None:
        return run_noop_server(args.serve_noop, args.noop_results)
    plan = common.plan_cpus(not args.no_pin)
    print(common.environment_line(plan, count=args.count, concurrency=args.concurrency))
    ctl.pin_self(plan)
    with (
        tempfile.TemporaryDirectory(prefix="edge-bench-ctlcreate-") as tmp,
        ctl.servers(Path(tmp), plan) as srv,
    ):
        return common.run(bench(srv, plan, args))


if __name__ == "__main__":
    sys.exit(main())
