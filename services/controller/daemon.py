"""Wiring of the Controller daemon: etcd, version, caches, settings, registration, servicers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import grpc.aio

from edge_cloud.errors import EdgeError
from edge_cloud.server import Daemon
from edge_cloud.store import EtcdStore
from services.controller import api
from services.controller._engine import Engine
from services.controller._runtime import Runtime
from services.controller._startup import (
    ControllerLease,
    check_version,
    ensure_settings,
    external_addr,
)
from services.controller._sync import Sync
from services.controller.config import ControllerConfig

__all__ = ["ControllerDaemon"]

log = logging.getLogger(__name__)


class ControllerDaemon(Daemon[ControllerConfig]):
    """The regional Controller (slice 1: the object-API engine and the simple objects).

    Start-up (controller.md §1.2, the steps that apply so far): connect to etcd (an
    unreachable etcd fails the start), check or write the data-model version, fill the
    Settings defaults, load the caches (list of `1/`), register under a lease. Background:
    the etcd watch feeding the caches, and the lease keep-alive.
    """

    name = "controller"

    def __init__(self, config: ControllerConfig) -> None:
        super().__init__(config)
        self.runtime = Runtime(config)
        self._store: EtcdStore | None = None
        self._sync: Sync | None = None
        self._lease: ControllerLease | None = None

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """Every Controller service; they answer UNAVAILABLE until `start` is done."""
        return api.add_all(server, self.runtime)

    async def start(self) -> None:
        """Reach etcd, check the version, load the caches, fill Settings, register."""
        cfg = self.config
        self._store = store = await EtcdStore.connect(
            cfg.etcd_urls, timeout=cfg.etcd_timeout, namespace=cfg.etcd_namespace
        )
        await check_version(store)
        self._sync = sync = Sync(store)
        engine = Engine(store, sync)
        # Before the listing, so the caches start with the settings (no watch runs yet to
        # wait for).
        await ensure_settings(engine, wait=False)
        await sync.start()
        addr = external_addr(cfg.external_api_addr, cfg.api_addr, self.ports["api"])
        self._lease = ControllerLease(store, addr)
        await self._lease.register()
        self.runtime.attach(engine)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The cache watch and the lease keep-alive."""
        if self._sync is None or self._lease is None:
            return []
        return [self._sync.run(), self._lease.keep_alive()]

    async def close(self) -> None:
        """Revoke the lease (peers see us gone at once) and close etcd."""
        if self._lease is not None:
            with contextlib.suppress(EdgeError):
                await self._lease.revoke()
        if self._store is not None:
            await self._store.close()
