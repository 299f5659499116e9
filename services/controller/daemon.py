"""Wiring of the Controller daemon: etcd, version, caches, Redis, CCRMs, notify, servicers."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any, Final

import grpc.aio
from redis.exceptions import RedisError

from edge_cloud import redis
from edge_cloud.errors import EdgeError
from edge_cloud.secrets import SecretsBackend, open_backend
from edge_cloud.server import Daemon, bind, new_server
from edge_cloud.store import EtcdStore
from services.controller import api
from services.controller._ccrm import (
    CcrmClients,
    follow_resources,
    parse_platform_service_addrs,
)
from services.controller._cloudlet_ops import CloudletRecovery
from services.controller._engine import Engine
from services.controller._inst_ops import APP_INST, CLUSTER_INST, InstRecovery
from services.controller._notify import ControllerNotify
from services.controller._progress import Progress
from services.controller._startup import (
    ControllerLease,
    check_version,
    ensure_settings,
    external_addr,
)
from services.controller._sync import Sync
from services.controller._tpe import TpeApplier
from services.controller._tracked import Recovery, TrackedRuntime, TrackedServices
from services.controller.api.ratelimit import ensure_defaults as ensure_rate_limit_defaults
from services.controller.api.settings import create_continuous_queries
from services.controller.config import ControllerConfig
from services.controller.http.server import ControllerHttp, dial_target

__all__ = ["ControllerDaemon"]

log = logging.getLogger(__name__)

NOTIFY_GRACE: Final = 2.0
OPERATIONS_GRACE: Final = 10.0
"""Seconds cancelled operations get to leave their objects in a terminal state."""
RECOVERY_INTERVAL: Final = 30.0


def controller_id(addr: str) -> str:
    """The original's ControllerId, `<hostname>@<external API address>`."""
    return f"{socket.gethostname()}@{addr}"


class ControllerDaemon(Daemon[ControllerConfig]):
    """The regional Controller.

    Start-up (controller.md §1.2, the steps that apply so far): connect to etcd (an
    unreachable etcd fails the start), check or write the data-model version, fill the
    Settings defaults, load the caches (list of `1/`), connect to Redis (unreachable: the
    start fails with one line), register under a lease, open the notify listener. Background:
    the etcd watch feeding the caches, the lease keep-alive, the notify server following
    etcd, and the recovery of operations a dead controller left behind.
    """

    name = "controller"

    def __init__(self, config: ControllerConfig) -> None:
        super().__init__(config)
        self.runtime = TrackedRuntime(config)
        self._store: EtcdStore | None = None
        self._secrets: SecretsBackend | None = None
        self._sync: Sync | None = None
        self._lease: ControllerLease | None = None
        self._redis: redis.Redis | None = None
        self._ccrm: CcrmClients | None = None
        self._notify: ControllerNotify | None = None
        self._notify_grpc: grpc.aio.Server | None = None
        self._recovery: Recovery | None = None
        self._tracked: TrackedServices | None = None
        self._tpe: TpeApplier | None = None
        self._notify_port = 0
        self._services: list[str] = []
        self._http: ControllerHttp | None = None

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """Every Controller service; they answer UNAVAILABLE until `start` is done."""
        self._services = api.add_all(server, self.runtime)
        return self._services

    async def start(self) -> None:
        """Reach etcd and Redis, load the caches, register, open the notify listener."""
        cfg = self.config
        self._store = store = await EtcdStore.connect(
            cfg.etcd_urls, timeout=cfg.etcd_timeout, namespace=cfg.etcd_namespace
        )
        if cfg.skip_version_check:
            log.warning("skipping the data-model version check (--skip-version-check)")
        else:
            await check_version(
                store,
                auto_upgrade=cfg.auto_upgrade,
                holder=controller_id(cfg.external_api_addr or cfg.api_addr),
            )
        secrets = cfg.secrets_settings()
        if secrets.configured:
            self._secrets = open_backend(secrets, store)
            self.runtime.attach_secrets(self._secrets)
            log.info("secrets backend: %s", self._secrets.kind)
        self._sync = sync = Sync(store)
        engine = Engine(store, sync)
        # Before the listing, so the caches start with the settings (no watch runs yet to
        # wait for).
        await ensure_settings(engine, wait=False)
        await ensure_rate_limit_defaults(engine, wait=False)  # §1.2 step 14
        await sync.start()
        self._redis = await redis.connect(cfg.redis_standalone_addr)
        addr = external_addr(cfg.external_api_addr, cfg.api_addr, self.ports["api"])
        self._ccrm = CcrmClients(parse_platform_service_addrs(cfg.platform_service_addrs), cfg.tls)
        follow_resources(self._ccrm, self.runtime)  # resources after each CCRM operation
        self._tracked = services = TrackedServices(
            progress=Progress(self._redis, controller_id(addr)),
            ccrm=self._ccrm,
            controller_id=controller_id(addr),
        )
        self._lease = lease = ControllerLease(store, addr)
        await lease.register()
        self.runtime.attach(engine)
        self.runtime.attach_tracked(services)
        self._tpe = TpeApplier(self.runtime)
        self._tpe.follow()  # TrustPolicyExceptions follow TPE, pool and AppInst changes
        self._recovery = Recovery(
            self.runtime,
            [
                CloudletRecovery(self.runtime),
                InstRecovery(self.runtime, CLUSTER_INST),
                InstRecovery(self.runtime, APP_INST),
            ],
            interval=RECOVERY_INTERVAL,
        )
        # Notify only once the caches are loaded: its handlers read and write through them.
        self._notify = ControllerNotify(
            self.runtime,
            store,
            name=f"controller {addr}",
            region=cfg.region,
            lease_id=lambda: lease.lease_id,
        )
        self._notify_grpc = server = new_server(self.name)
        self._notify.server.add_to(server)
        self._notify_port = bind(server, cfg.notify_addr, cfg.tls)
        await server.start()
        log.info("notify listening on port %d", self._notify_port)
        if cfg.http_addr:  # REST gateway and NBI: clients of the API port opened before start
            self._http = await ControllerHttp.start(
                cfg.http_addr,
                api_target=dial_target(cfg.api_addr, self.ports["api"]),
                services=self._services,
                region=cfg.region,
                app_dns_root=cfg.app_dns_root,
                tls=cfg.tls,
            )
            log.info("REST gateway and NBI listening on port %d", self._http.port)

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The cache watch, the lease keep-alive, notify, and recovery."""
        if self._sync is None or self._lease is None:
            return []
        loops = [self._sync.run(), self._lease.keep_alive()]
        if self._notify is not None:
            loops.append(self._notify.server.run())
        if self._recovery is not None:
            loops.append(self._recovery.run())
        # §1.2 step 15: in the background, retried until InfluxDB takes them
        loops.append(create_continuous_queries(self.runtime))
        return loops

    def extra_ports(self) -> dict[str, int]:
        """The notify listener's port, and the REST gateway's as `http`."""
        ports = {"notify": self._notify_port} if self._notify_port else {}
        if self._http is not None:
            ports["http"] = self._http.port
        return ports

    async def close(self) -> None:
        """Close the REST gateway, notify, the CCRM channels and Redis, revoke the lease, etcd."""
        if self._http is not None:
            await self._http.close()
        if self._tracked is not None and not await self._tracked.wait_idle(OPERATIONS_GRACE):
            log.warning("operations still running at shutdown: %s", sorted(self._tracked.running))
        if self._tpe is not None:
            await self._tpe.close()
        if self._notify is not None:
            await self._notify.server.close()
            await self._notify.close()
        if self._notify_grpc is not None:
            await self._notify_grpc.stop(NOTIFY_GRACE)
        if self._ccrm is not None:
            await self._ccrm.close()
        if self._redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.aclose()
        if self._lease is not None:
            with contextlib.suppress(EdgeError):
                await self._lease.revoke()
        if self._secrets is not None:
            await self._secrets.close()
        if self._store is not None:
            await self._store.close()
