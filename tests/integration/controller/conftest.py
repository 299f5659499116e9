"""Controller instances on the real etcd: a Sync, an Engine and the API servicers, in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from edge_cloud.localservers import ServerProcess
from edge_cloud.store import EtcdStore
from services.controller._engine import Engine
from services.controller._runtime import Runtime
from services.controller._startup import ensure_settings
from services.controller._sync import Sync
from services.controller.config import ControllerConfig


@dataclass
class Instance:
    """One controller's engine and runtime, as the daemon wires them."""

    store: EtcdStore
    sync: Sync
    engine: Engine
    runtime: Runtime
    task: asyncio.Task[None]


StartInstance = Callable[[], Awaitable[Instance]]


@pytest.fixture
async def start_instance(
    etcd_store: EtcdStore, etcd_server: ServerProcess
) -> AsyncIterator[StartInstance]:
    """Start controller instances sharing the test's etcd namespace (each its own client)."""
    started: list[Instance] = []

    async def start() -> Instance:
        store = await EtcdStore.connect(etcd_server.client_url, namespace=etcd_store.namespace)
        sync = Sync(store)
        engine = Engine(store, sync)
        await ensure_settings(engine, wait=False)
        await sync.start()
        task = asyncio.create_task(sync.run())
        runtime = Runtime(ControllerConfig())
        runtime.attach(engine)
        instance = Instance(store, sync, engine, runtime, task)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await instance.task
        await instance.store.close()
