"""In-process Controllers with Redis, notify and CCRM wiring, and a CCRM test server.

`ControllerHarness.start()` builds what `ControllerDaemon.start` builds (sync, engine,
tracked runtime with Redis progress and CCRM clients, leased registration, notify server)
and serves every Controller service plus notify on one loopback gRPC port. Several
instances share the test's etcd namespace and Redis database: they are the "controllers A
and B" of the multi-controller tests.

`FakeCcrm` implements `edgeproto.CloudletPlatformAPI` the way a CCRM does: it streams
CloudletInfo progress (status lines) and then READY, or fails with a gRPC error, or hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    common_pb2,
    settings_pb2,
    stream_pb2_grpc,
)

from edge_cloud.errors import from_rpc_error
from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import keys, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from edge_cloud.redis import Redis
from edge_cloud.redis import connect as connect_redis
from edge_cloud.server import new_server
from edge_cloud.store import EtcdStore
from services.controller import api
from services.controller._ccrm import CcrmClients
from services.controller._cloudlet_ops import CloudletRecovery
from services.controller._engine import Engine, Txn
from services.controller._notify import ControllerNotify
from services.controller._progress import Progress
from services.controller._startup import ControllerLease, ensure_settings
from services.controller._sync import Sync
from services.controller._tracked import Recovery, TrackedRuntime, TrackedServices
from services.controller.config import ControllerConfig

SETTINGS = registry.by_class(settings_pb2.Settings)
FEATURES = registry.by_class(cloudlet_pb2.PlatformFeatures)
CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO = registry.by_class(cloudlet_pb2.CloudletInfo)
NODE_TYPE = "ccrm"


# --- the CCRM test server ----------------------------------------------------------------


@dataclass
class FakeCcrm(ccrm_pb2_grpc.CloudletPlatformAPIServicer):
    """A CCRM behind the real `CloudletPlatformAPI` interface.

    Attributes:
        fail_create: Fail creates with this message (after an ERRORS info).
        fail_delete: Fail deletes with this message.
        hang: Seconds a create waits before answering (for timeouts).
        requests: Every ApplyCloudlet request received.
    """

    fail_create: str = ""
    fail_delete: str = ""
    hang: float = 0.0
    requests: list[cloudlet_pb2.Cloudlet] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    async def ApplyCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        self.requests.append(request)
        self.started.set()
        try:
            async for info in self._apply(request, context):
                yield info
        finally:
            self.finished.set()

    async def _apply(
        self, request: cloudlet_pb2.Cloudlet, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        info = cloudlet_pb2.CloudletInfo(key=request.key)
        if request.state == common_pb2.CREATE_REQUESTED:
            info.status.msgs.append("Creating cloudlet")
            info.fields.append("11")
            yield info
            if self.hang:
                await asyncio.sleep(self.hang)
            if self.fail_create:
                failed = cloudlet_pb2.CloudletInfo(
                    key=request.key,
                    state=appcommon_pb2.CLOUDLET_STATE_ERRORS,
                    errors=[self.fail_create],
                )
                failed.fields.extend(["3", "9"])
                yield failed
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_create)
            if request.crm_on_edge:
                return  # the CRM on the site takes over
            info.status.msgs.append("Cloudlet ready")
            yield info
            done = cloudlet_pb2.CloudletInfo(
                key=request.key,
                state=appcommon_pb2.CLOUDLET_STATE_READY,
                container_version="2026-01-01",
                flavors=[cloudlet_pb2.FlavorInfo(name="m1.small", vcpus=2, ram=4096, disk=40)],
            )
            done.fields.extend(["3", "10", "12"])
            yield done
        elif request.state == common_pb2.DELETE_REQUESTED:
            info.status.msgs.append("Deleting cloudlet")
            info.fields.append("11")
            yield info
            if self.fail_delete:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_delete)
        elif "30" in request.fields:  # maintenance: the CRM's part, done by the CCRM
            wanted = {
                appcommon_pb2.CRM_REQUESTED: appcommon_pb2.CRM_UNDER_MAINTENANCE,
                appcommon_pb2.NORMAL_OPERATION_INIT: appcommon_pb2.NORMAL_OPERATION,
            }
            state = request.maintenance_state
            info.maintenance_state = wanted.get(state, state)
            info.fields.append("16")
            yield info
        else:  # an update
            info.status.msgs.append("Updating cloudlet")
            info.state = appcommon_pb2.CLOUDLET_STATE_READY
            info.fields.extend(["3", "11"])
            yield info

    async def GetCloudletManifest(
        self, request: cloudletkey_pb2.CloudletKey, context: grpc.aio.ServicerContext[Any, Any]
    ) -> cloudlet_pb2.CloudletManifest:
        return cloudlet_pb2.CloudletManifest(manifest=f"bring up {request.name}")


@contextlib.asynccontextmanager
async def ccrm_server(ccrm: FakeCcrm) -> AsyncIterator[str]:
    """Serve `ccrm` on loopback; yields its address."""
    server = grpc.aio.server()
    ccrm_pb2_grpc.add_CloudletPlatformAPIServicer_to_server(ccrm, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


# --- controllers -------------------------------------------------------------------------


@dataclass
class Controller:
    """One in-process Controller."""

    store: EtcdStore
    sync: Sync
    engine: Engine
    runtime: TrackedRuntime
    redis: Redis
    services: TrackedServices
    notify: ControllerNotify
    recovery: Recovery
    server: grpc.aio.Server
    port: int
    channel: grpc.aio.Channel
    lease: ControllerLease
    tasks: list[asyncio.Task[None]]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def cloudlets(self) -> cloudlet_pb2_grpc.CloudletApiStub:
        return cloudlet_pb2_grpc.CloudletApiStub(self.channel)

    @property
    def streams(self) -> stream_pb2_grpc.StreamObjApiStub:
        return stream_pb2_grpc.StreamObjApiStub(self.channel)

    async def put_settings(self, **values: Any) -> None:
        def fn(txn: Txn) -> None:
            current = txn.get(SETTINGS, SETTINGS_KEY)
            assert current is not None
            for name, value in values.items():
                setattr(current, name, value)
            txn.put(current)

        await self.engine.apply(fn)

    def cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet | None:
        return self.sync.caches.get(CLOUDLET, keys.key_string(key))

    def info(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.CloudletInfo | None:
        return self.sync.caches.get(CLOUDLET_INFO, keys.key_string(key))


@dataclass
class ControllerHarness:
    """Starts Controllers sharing one etcd namespace and one Redis database."""

    etcd_url: str
    namespace: str
    redis_url: str
    redis_db: int
    ccrm_addr: str = ""
    started: list[Controller] = field(default_factory=list)

    async def start(
        self, controller_id: str | None = None, *, port: int = 0, test_mode: bool = True
    ) -> Controller:
        store = await EtcdStore.connect(self.etcd_url, namespace=self.namespace)
        sync = Sync(store)
        engine = Engine(store, sync)
        await ensure_settings(engine, wait=False)
        await sync.start()
        tasks = [asyncio.create_task(sync.run())]
        redis = await connect_redis(self.redis_url, db=self.redis_db)
        addrs = {NODE_TYPE: self.ccrm_addr} if self.ccrm_addr else {}
        config = ControllerConfig(region="local", test_mode=test_mode)
        runtime = TrackedRuntime(config)
        server = new_server("controller")  # with the interceptor mapping our errors
        api.add_all(server, runtime)
        port = server.add_insecure_port(f"127.0.0.1:{port}")
        cid = controller_id or f"testhost@127.0.0.1:{port}"
        services = TrackedServices(
            progress=Progress(redis, cid),
            ccrm=CcrmClients(addrs),
            controller_id=cid,
            info_cleanup_timeout=1.0,
        )
        runtime.attach(engine)
        runtime.attach_tracked(services)
        lease = ControllerLease(store, cid.partition("@")[2])
        lease.record.hostname = cid.partition("@")[0]
        await lease.register()
        notify = ControllerNotify(
            runtime, store, name=f"ctl {cid}", region="local", lease_id=lambda: lease.lease_id
        )
        notify.server.add_to(server)
        tasks.append(asyncio.create_task(notify.server.run()))
        recovery = Recovery(runtime, [CloudletRecovery(runtime)], interval=3600)
        await server.start()
        async with asyncio.timeout(10):
            await notify.server.wait_ready()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        ctl = Controller(
            store,
            sync,
            engine,
            runtime,
            redis,
            services,
            notify,
            recovery,
            server,
            port,
            channel,
            lease,
            tasks,
        )
        self.started.append(ctl)
        return ctl

    async def stop(self, ctl: Controller) -> None:
        if ctl not in self.started:
            return
        self.started.remove(ctl)
        await ctl.channel.close()
        await ctl.notify.server.close()
        await ctl.server.stop(None)
        assert await ctl.services.wait_idle(15), sorted(ctl.services.running)
        for task in ctl.tasks:
            task.cancel()
        for task in ctl.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ctl.services.ccrm.close()
        with contextlib.suppress(Exception):
            await ctl.lease.revoke()
        await ctl.redis.aclose()
        await ctl.store.close()

    async def stop_all(self) -> None:
        for ctl in list(self.started):
            await self.stop(ctl)


@pytest.fixture
async def harness(
    etcd_store: EtcdStore,
    etcd_server: ServerProcess,
    redis_client: Redis,
    redis_server: ServerProcess,
) -> AsyncIterator[ControllerHarness]:
    """Controllers on the test's etcd namespace and Redis database."""
    info = await redis_client.client_info()
    h = ControllerHarness(
        etcd_server.client_url, etcd_store.namespace, redis_server.client_url, int(info["db"])
    )
    try:
        yield h
    finally:
        await h.stop_all()


@pytest.fixture
async def ccrm(harness: ControllerHarness) -> AsyncIterator[FakeCcrm]:
    """A `FakeCcrm` served on loopback, the address the harness's Controllers dial."""
    fake = FakeCcrm()
    async with ccrm_server(fake) as addr:
        harness.ccrm_addr = addr
        yield fake


# --- objects and calls ---------------------------------------------------------------------


def unique_org() -> str:
    """Pub/sub channels are shared by every Redis database: names must not collide."""
    return f"oper{uuid.uuid4().hex[:8]}"


def features(platform_type: str = "fakeccrm", **flags: Any) -> cloudlet_pb2.PlatformFeatures:
    return cloudlet_pb2.PlatformFeatures(platform_type=platform_type, node_type=NODE_TYPE, **flags)


async def put_features(ctl: Controller, pf: cloudlet_pb2.PlatformFeatures) -> None:
    def fn(txn: Txn) -> None:
        txn.put(pf)

    await ctl.engine.apply(fn)


def new_cloudlet(org: str, name: str = "c1", **values: Any) -> cloudlet_pb2.Cloudlet:
    fields: dict[str, Any] = {
        "location": loc_pb2.Loc(latitude=37.1, longitude=-122.4),
        "num_dynamic_ips": 10,
        "platform_type": "fakeccrm",
        **values,
    }
    return cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization=org, name=name), **fields
    )


async def collect(call: Any) -> tuple[list[str], Exception | None]:
    """The messages of a streamed call, and the error it ended with (as our exception)."""
    lines: list[str] = []
    try:
        async for result in call:
            lines.append(result.message)
    except grpc.aio.AioRpcError as err:
        return lines, from_rpc_error(err)
    return lines, None
