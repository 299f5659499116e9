"""Shared helpers for the Controller benches: servers, the Controller process, a stored world.

Not a benchmark itself (`make bench` runs it too, and it does nothing as a script).

The world is built with the Controller's own codec and key functions (`edge_cloud.objects`),
so what the cold-start and memory benches write into etcd is byte for byte what the
Controller would have written through its API: the same keys, the same JSON.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _common as common
import grpc
import grpc.aio
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    appinst_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    infraresources_pb2,
    refs_pb2,
)
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_cloud import localservers
from edge_cloud.objects import codec, keys

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.support import Daemon, DaemonError, clean_env  # noqa: E402

__all__ = [
    "Daemon",
    "DaemonError",
    "Servers",
    "WorldSize",
    "controller",
    "controller_env",
    "rss_bytes",
    "show_count",
    "warm_bytecode",
    "world",
]

PLATFORM_TYPE = "fakeccrm"
#: the longest a full Show may stream
SHOW_TIMEOUT = 300.0
ORG_OP = "benchop"
ORG_DEV = "benchdev"
#: the infra flavor every cloudlet reports, big enough for any cluster of the world
INFRA_FLAVOR = cloudlet_pb2.FlavorInfo(name="m1.huge", vcpus=512, ram=1_048_576, disk=1000)
#: the cluster flavor: room for a few hundred one-vCPU AppInsts per cluster
CLUSTER_FLAVOR = flavor_pb2.Flavor(
    key=flavor_pb2.FlavorKey(name="x1.cluster"), vcpus=512, ram=1_048_576, disk=1000
)


# --- processes -------------------------------------------------------------------------------


@dataclass
class Servers:
    """etcd and Redis on loopback, and where their data lives."""

    etcd: localservers.ServerProcess
    redis: localservers.ServerProcess
    tmp: Path
    prefix: list[str]


@contextlib.contextmanager
def servers(tmp: Path, plan: common.CpuPlan | None) -> Iterator[Servers]:
    """A throwaway etcd and Redis (pinned to the server CPU); both stopped by PID on exit."""
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
            yield Servers(etcd, redis, tmp, prefix)
        finally:
            redis.stop()
    finally:
        etcd.stop()


def controller(srv: Servers, name: str = "controller") -> tuple[Daemon, str]:
    """A Controller process on this etcd and Redis (not started); and its API address."""
    api_port = localservers.free_port()
    notify_port = localservers.free_port()
    workdir = srv.tmp / name
    workdir.mkdir(exist_ok=True)
    daemon = Daemon(
        "controller",
        [
            "--api-addr", f"127.0.0.1:{api_port}",
            "--notify-addr", f"127.0.0.1:{notify_port}",
            "--metrics-addr", "",
            "--http-addr", "127.0.0.1:0",
            "--redis-standalone-addr", srv.redis.client_url,
            "--test-mode",
            "--shutdown-grace", "2",
        ],
        workdir,
        env=controller_env(srv),
        prefix=srv.prefix,
    )  # fmt: skip
    return daemon, f"127.0.0.1:{api_port}"


def controller_env(srv: Servers) -> dict[str, str]:
    """The Controller's environment: this etcd, and compiled bytecode kept between starts.

    With PYTHONDONTWRITEBYTECODE set (as in some shells and CI images) every start would
    compile every module again, seconds of work that a deployed image never does; the
    bytecode goes to a cache of this run instead, filled by `warm_bytecode`.
    """
    env = clean_env(EDGE_ETCD_URLS=srv.etcd.client_url)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(srv.tmp / "pycache")
    return env


def warm_bytecode(srv: Servers) -> float:
    """Compile the Controller's modules into the run's bytecode cache; returns seconds."""
    begin = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import services.controller.__main__, services.controller.daemon"],
        cwd=ROOT,
        env=controller_env(srv),
        check=True,
        timeout=600,
    )
    return time.monotonic() - begin


def wait_serving(addr: str, timeout: float) -> float:
    """Poll the gRPC health service until SERVING; returns the monotonic time it answered."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Controller at {addr} was not SERVING within {timeout}s")
            time.sleep(0.02)


async def show_count(addr: str, what: str) -> tuple[int, float]:
    """How many objects a full Show streams, and how long it takes."""
    async with grpc.aio.insecure_channel(addr) as channel:
        begin = time.monotonic()
        if what == "cloudlet":
            call = cloudlet_pb2_grpc.CloudletApiStub(channel).ShowCloudlet(
                cloudlet_pb2.Cloudlet(), timeout=SHOW_TIMEOUT
            )
        else:
            call = appinst_pb2_grpc.AppInstApiStub(channel).ShowAppInst(
                appinst_pb2.AppInst(), timeout=SHOW_TIMEOUT
            )
        n = 0
        async for _ in call:
            n += 1
        return n, time.monotonic() - begin


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pin_self(plan: common.CpuPlan | None) -> None:
    """This process is the client side."""
    if plan is not None:
        common.pin_process(os.getpid(), plan.client)


# --- the stored world ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldSize:
    """How many objects of each kind `world` writes."""

    cloudlets: int
    clusters_per_cloudlet: int
    apps: int
    app_insts: int

    @property
    def clusters(self) -> int:
        return self.cloudlets * self.clusters_per_cloudlet


def _kv(obj: Message) -> tuple[str, bytes]:
    return keys.object_store_key(obj), codec.encode(obj)


def _ts(i: int) -> loc_pb2.Timestamp:
    return loc_pb2.Timestamp(seconds=1_780_000_000 + i, nanos=(i * 7919) % 1_000_000_000)


def cloudlet_key(c: int) -> cloudletkey_pb2.CloudletKey:
    return cloudletkey_pb2.CloudletKey(organization=ORG_OP, name=f"cloudlet{c:05d}")


def cluster_key(c: int, k: int) -> cluster_pb2.ClusterKey:
    return cluster_pb2.ClusterKey(name=f"cluster{c:05d}-{k}", organization=ORG_DEV)


def app_key(a: int) -> app_pb2.AppKey:
    return app_pb2.AppKey(organization=ORG_DEV, name=f"app{a:05d}", version="1.0")


def _cluster_of(i: int, size: WorldSize) -> int:
    """The cluster of AppInst i: the instances of one App (i % apps) go to distinct clusters,
    and all clusters get about as many."""
    rounds = -(-size.app_insts // size.apps)
    return ((i % size.apps) * rounds + i // size.apps) % size.clusters


def world(size: WorldSize) -> Iterator[tuple[str, bytes]]:
    """Every stored object of a world of `size`, as etcd key/value pairs.

    Per cloudlet: the Cloudlet (READY), its CloudletInfo (READY, an infra flavor, a
    resources snapshot), its CloudletRefs; per cluster: the ClusterInst (docker, READY) and
    its ClusterRefs; the Apps with their AppInstRefs; the AppInsts (AppInst i runs App
    i % apps, spread so that no App runs twice on one cluster as long as
    apps * clusters >= app_insts). Fields are the ones a create fills in (state, flavor, URIs,
    ports, timestamps, unique ids), so values are the size they are in a real database.
    """
    yield _kv(
        cloudlet_pb2.PlatformFeatures(
            platform_type=PLATFORM_TYPE, node_type="ccrm", supports_multi_tenant_cluster=True
        )
    )
    yield _kv(
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10)
    )
    yield _kv(
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.medium"), ram=4096, vcpus=2, disk=20)
    )
    if size.apps * size.clusters < size.app_insts:
        raise ValueError("an App would run twice on one cluster: more apps or clusters needed")
    per_cluster: dict[int, list[int]] = {}
    for i in range(size.app_insts):
        per_cluster.setdefault(_cluster_of(i, size), []).append(i)
    for c in range(size.cloudlets):
        ckey = cloudlet_key(c)
        yield _kv(
            cloudlet_pb2.Cloudlet(
                key=ckey,
                location=loc_pb2.Loc(latitude=40 + (c % 1000) * 0.01, longitude=2 + c // 1000),
                ip_support=common_pb2.IP_SUPPORT_DYNAMIC,
                num_dynamic_ips=254,
                platform_type=PLATFORM_TYPE,
                state=common_pb2.READY,
                flavor=flavor_pb2.FlavorKey(name="x1.medium"),
                physical_name=ckey.name,
                container_version="2026-01-01",
                deployment="docker",
                root_lb_fqdn=f"{ckey.name}.{ORG_OP}.benchroot.net",
                created_at=_ts(c),
                dns_label=f"{ckey.name}-{ORG_OP}",
                obj_id=f"{c:032x}",
            )
        )
        yield _kv(
            cloudlet_pb2.CloudletInfo(
                key=ckey,
                state=appcommon_pb2.CLOUDLET_STATE_READY,
                notify_id=c,
                controller="bench-controller",
                os_max_ram=1_048_576,
                os_max_vcores=512,
                os_max_vol_gb=10_000,
                flavors=[INFRA_FLAVOR],
                container_version="2026-01-01",
                compatibility_version=1,
                resources_snapshot=infraresources_pb2.InfraResourcesSnapshot(
                    info=[
                        infraresources_pb2.InfraResource(
                            name="vCPUs", value=40, infra_max_value=512
                        ),
                        infraresources_pb2.InfraResource(
                            name="RAM", value=81920, infra_max_value=1_048_576, units="MB"
                        ),
                    ]
                ),
            )
        )
        refs = refs_pb2.CloudletRefs(key=ckey, used_dynamic_ips=1)
        for k in range(size.clusters_per_cloudlet):
            g = c * size.clusters_per_cloudlet + k
            ck = cluster_key(c, k)
            refs.cluster_insts.append(ck)
            yield _kv(
                clusterinst_pb2.ClusterInst(
                    key=ck,
                    cloudlet_key=ckey,
                    flavor=flavor_pb2.FlavorKey(name="x1.medium"),
                    deployment="docker",
                    ip_access=common_pb2.IP_ACCESS_SHARED,
                    state=common_pb2.READY,
                    node_flavor=INFRA_FLAVOR.name,
                    num_masters=1,
                    created_at=_ts(g),
                    obj_id=f"{g:032x}",
                    fqdn=f"{ck.name}.{ckey.name}.{ORG_OP}.benchroot.net",
                    reservable=False,
                )
            )
            crefs = refs_pb2.ClusterRefs(key=ck)
            for i in per_cluster.get(g, []):
                crefs.apps.append(appinst_pb2.AppInstKey(name=f"inst{i:06d}", organization=ORG_DEV))
            yield _kv(crefs)
        yield _kv(refs)
    app_insts: dict[int, list[int]] = {}
    for i in range(size.app_insts):
        app_insts.setdefault(i % size.apps, []).append(i)
    for a in range(size.apps):
        ak = app_key(a)
        yield _kv(
            app_pb2.App(
                key=ak,
                image_path=f"registry.example.com/{ORG_DEV}/{ak.name}:1.0",
                image_type=app_pb2.IMAGE_TYPE_DOCKER,
                access_ports="tcp:8080,udp:9000",
                default_flavor=flavor_pb2.FlavorKey(name="x1.small"),
                deployment="docker",
                deployment_manifest="",
                access_type=app_pb2.ACCESS_TYPE_LOAD_BALANCER,
                created_at=_ts(a),
                global_id=f"{ORG_DEV}{ak.name}10",
                obj_id=f"{a:032x}",
            )
        )
        arefs = refs_pb2.AppInstRefs(key=ak)
        for i in app_insts.get(a, []):
            arefs.insts[
                keys.key_string(appinst_pb2.AppInstKey(name=f"inst{i:06d}", organization=ORG_DEV))
            ] = 1
        yield _kv(arefs)
    for i in range(size.app_insts):
        g = _cluster_of(i, size)
        c, k = divmod(g, size.clusters_per_cloudlet)
        ckey = cloudlet_key(c)
        inst = appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(name=f"inst{i:06d}", organization=ORG_DEV),
            app_key=app_key(i % size.apps),
            cluster_key=cluster_key(c, k),
            cloudlet_key=ckey,
            cloudlet_loc=loc_pb2.Loc(latitude=40 + (c % 1000) * 0.01, longitude=2 + c // 1000),
            uri=f"shared.{ckey.name}-{ORG_OP}.benchroot.net",
            flavor=flavor_pb2.FlavorKey(name="x1.small"),
            state=common_pb2.READY,
            health_check=appcommon_pb2.HEALTH_CHECK_OK,
            power_state=appinst_pb2.POWER_ON,
            created_at=_ts(i),
            unique_id=f"{ORG_DEV}-inst{i:06d}-{ckey.name}",
            dedicated_ip=False,
            obj_id=f"{i:032x}",
        )
        inst.mapped_ports.add(
            proto=appcommon_pb2.L_PROTO_TCP,
            internal_port=8080,
            public_port=10000 + i % 50000,
        )
        inst.mapped_ports.add(proto=appcommon_pb2.L_PROTO_UDP, internal_port=9000, public_port=9000)
        yield _kv(inst)


def count(size: WorldSize) -> int:
    """How many keys `world(size)` yields (without building them)."""
    return sum(1 for _ in world(size))


if __name__ == "__main__":
    print("bench/_controller.py holds helpers for the Controller benches; nothing to run")
