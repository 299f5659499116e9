"""The DME daemon: gRPC (both service layouts), REST, and the notify client feeding the world."""

from __future__ import annotations

import json
import logging
import random
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import grpc.aio
from edgeproto import (
    app_pb2,
    appinst_pb2,
    appinstclient_pb2,
    autoprovpolicy_pb2,
    cloudlet_pb2,
    clusterinst_pb2,
    operatorcode_pb2,
    ratelimit_pb2,
    settings_pb2,
)

from edge_cloud.debug import attach as attach_debug
from edge_cloud.errors import ConfigError
from edge_cloud.notify import NotifyClient, SyncInfo, key_string
from edge_cloud.server import Daemon, HttpListener
from edge_cloud.svcnode import NODE_TYPE_DME, my_node
from services.dme._autoprov import AutoProvStats
from services.dme._calls import DmeCalls
from services.dme._clients import AppInstClients, Devices
from services.dme._cookies import TEST_MODE_KEYS, CookieCodec, JwtKeys
from services.dme._edgeevents import REQUEST_APPINST_LATENCY, EdgeEvents
from services.dme._operators import StandaloneOperator
from services.dme._ranking import MatchEngine, SpatialIndex
from services.dme._ratelimit import RateLimitManager
from services.dme._reporter import Reporter
from services.dme._rest import rest_app
from services.dme._stats import EdgeEventStats
from services.dme._world import AppInstKey, AppKey, CloudletKey, World
from services.dme.api.match_engine import add_dme_services
from services.dme.config import DmeConfig

__all__ = ["DmeDaemon", "load_keys"]

log = logging.getLogger("services.dme")

OPERATORS = ("standalone",)
"""Operator plugins built in (flag `--carrier`)."""

ACCESS_LOGGER: Final = "edge_cloud.access"
VERBOSE_FAMILIES: Final = frozenset({"access", "dmereq", "all"})
"""`-d` families that keep one access line per device call (`dmereq` is the original's)."""


def load_keys(path: Path | None, *, test_mode: bool) -> JwtKeys:
    """The cookie signing keys: from `--session-key-file`, else the test-mode key.

    The file holds JSON `{"current": <kid>, "secrets": {"<kid>": "<secret>", ...}}` (older
    kids kept for verifying cookies issued before a rotation) or one secret as plain text,
    used as kid 1.

    Args:
        path: The key file, or None.
        test_mode: Whether `--test-mode` is on (only changes the log line).

    Returns:
        The key set.

    Raises:
        ConfigError: When the file cannot be read or holds no usable key.
    """
    if path is None:
        log.warning(
            "cookies are signed with the public test-mode key (kid 0)%s; pass "
            "--session-key-file for a real deployment",
            "" if test_mode else " because no --session-key-file was given",
        )
        return TEST_MODE_KEYS
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read --session-key-file {path}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        try:
            secrets = {int(k): str(v).encode() for k, v in data["secrets"].items()}
            current = int(data["current"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError(
                f'--session-key-file {path}: expected {{"current": kid, "secrets": {{...}}}}'
            ) from None
        if current not in secrets:
            raise ConfigError(f"--session-key-file {path}: no secret for current kid {current}")
        return JwtKeys(secrets, current)
    secret = text.strip()
    if not secret:
        raise ConfigError(f"--session-key-file {path} is empty")
    return JwtKeys.single(1, secret)


class DmeDaemon(Daemon[DmeConfig]):
    """The DME: serves devices from what the Controller sends over notify.

    It serves before the first sync (with an empty world: RegisterClient answers "app not
    found" until the Apps arrive) and logs the notify connection state as it changes.
    """

    name = "dme"
    _access_level: int | None = None

    def __init__(self, config: DmeConfig) -> None:
        super().__init__(config)
        if config.carrier not in OPERATORS:
            raise ConfigError(
                f"unknown --carrier {config.carrier!r}; built in: {', '.join(OPERATORS)}"
            )
        self.world = World()
        self.engine = MatchEngine(
            self.world,
            SpatialIndex(self.world),
            rng=None if config.no_random else random.Random(),  # noqa: S311 - tie-breaking
        )
        self.codec = CookieCodec(
            load_keys(config.session_key_file, test_mode=config.test_mode),
            session_lifetime=config.cookie_expiration,
            edge_events_lifetime=config.edge_events_cookie_expiration,
        )
        self.limiter = RateLimitManager(test_mode=config.test_mode)
        self.notify = NotifyClient(config.notify_addrs, name="dme", tls=config.tls, backoff_max=5.0)
        self.debug = attach_debug(self.notify, my_node(NODE_TYPE_DME, tls=config.tls is not None))
        dme_id = config.scale_id or socket.gethostname()
        self.clients = AppInstClients(self.notify.send_message)
        self.devices = Devices(self.notify.send)
        self.autoprov = AutoProvStats(dme_id, self.notify.send_message)
        operator = StandaloneOperator(qos_session_addr=config.qossesaddr)
        self.calls = DmeCalls(
            self.world,
            self.engine,
            self.codec,
            self.limiter,
            operator,
            operator,
            token_server_uri=config.toksrvurl,
            qos_session_addr=config.qossesaddr,
            clients=self.clients,
            devices=self.devices,
            autoprov=self.autoprov,
        )
        self.events = EdgeEvents(self.calls, EdgeEventStats())
        self.debug.add(
            REQUEST_APPINST_LATENCY, lambda req: self.events.request_latency_command(req.args)
        )
        self.reporter = Reporter(
            lambda: self.world.settings,
            self.notify.send_message,
            api_stats=self.calls.stats,
            edge_stats=self.events.stats or EdgeEventStats(),
            autoprov=self.autoprov,
            clients=self.clients,
            dme_id=dme_id,
        )
        self._http: HttpListener | None = None
        self._wire_notify()

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """Register the split services and the legacy all-in-one MatchEngineApi."""
        return add_dme_services(server, self.calls, self.events)

    async def start(self) -> None:
        """Quiet the per-call access log, open the REST listener (notify connects later).

        Devices call at thousands per second and an access line costs about as much as a
        FindCloudlet's own work (JSON formatting and a write, ~40 us here), so, as the
        original logs device requests only at its `dmereq` debug level, the standard
        interceptor's access lines are off unless `-d access` (or `dmereq`, `all`) or
        `--log-level debug` asks for them; restored on close.
        """
        cfg = self.config
        if cfg.log_level != "debug" and not VERBOSE_FAMILIES & set(cfg.debug):
            access = logging.getLogger(ACCESS_LOGGER)
            self._access_level = access.level
            access.setLevel(logging.WARNING)
        if self.config.http_addr:
            self._http = await HttpListener.start(
                rest_app(self.calls, self.events), self.config.http_addr
            )

    def extra_ports(self) -> dict[str, int]:
        """The REST port as `http`."""
        return {"http": self._http.port} if self._http is not None else {}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The notify client, its connection-state log, and the upstream reports."""
        return [self.notify.run(), self._log_connection(), self.reporter.run()]

    async def close(self) -> None:
        """Close the REST listener, restore the access log level."""
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._access_level is not None:
            logging.getLogger(ACCESS_LOGGER).setLevel(self._access_level)
            self._access_level = None

    async def _log_connection(self) -> None:
        """Log the first connection; the client logs losses, `synced` each (re)sync."""
        log.info("waiting for the Controller at %s", ",".join(self.config.notify_addrs))
        await self.notify.wait_connected()
        log.info("notify connected to %s", self.notify.server_addr)

    def _usable_apps(self, cloudlet: CloudletKey) -> set[tuple[AppKey, AppInstKey]]:
        """(App, instance) pairs usable on a cloudlet now, to spot ones that became usable."""
        return {(i.app_key, i.key) for i in self.world.instances_on(cloudlet) if i.usable}

    def _wire_notify(self) -> None:
        world, limiter, events, client = self.world, self.limiter, self.events, self.notify
        autoprov, clients = self.autoprov, self.clients

        apps = client.cache(app_pb2.App)
        insts = client.cache(appinst_pb2.AppInst)
        cloudlets = client.cache(cloudlet_pb2.Cloudlet)
        infos = client.cache(cloudlet_pb2.CloudletInfo)
        codes = client.cache(operatorcode_pb2.OperatorCode)
        settings = client.cache(settings_pb2.Settings)
        flows = client.cache(ratelimit_pb2.FlowRateLimitSettings)
        max_reqs = client.cache(ratelimit_pb2.MaxReqsRateLimitSettings)
        policies = client.cache(autoprovpolicy_pb2.AutoProvPolicy)
        clusters = client.cache(clusterinst_pb2.ClusterInst)
        wanted = client.cache(appinstclient_pb2.AppInstClientKey)

        @apps.on_update
        async def app_updated(new: app_pb2.App, old: app_pb2.App | None) -> None:
            world.update_app(new)

        @apps.on_delete
        async def app_deleted(old: app_pb2.App) -> None:
            world.delete_app(old.key)
            autoprov.forget_app(old.key)

        @insts.on_update
        async def inst_updated(new: appinst_pb2.AppInst, old: appinst_pb2.AppInst | None) -> None:
            before = world.instance(AppInstKey.of(new.key))
            was_usable = before is not None and before.usable
            inst = world.update_app_inst(new)
            events.app_inst_changed(inst, None if old is None else old.health_check)
            if inst.usable and not was_usable:
                events.instances_usable([inst.app_key])

        @insts.on_delete
        async def inst_deleted(old: appinst_pb2.AppInst) -> None:
            world.delete_app_inst(old.key)
            events.app_inst_deleted(AppInstKey.of(old.key))
            app = old.app_key
            clients.purge(
                (app.organization, app.name, app.version), (old.key.name, old.key.organization)
            )

        @cloudlets.on_update
        async def cloudlet_updated(
            new: cloudlet_pb2.Cloudlet, old: cloudlet_pb2.Cloudlet | None
        ) -> None:
            key = CloudletKey.of(new.key)
            usable = self._usable_apps(key)
            world.update_cloudlet(new)
            autoprov.update_cloudlet(new)
            if old is not None and old.maintenance_state != new.maintenance_state:
                events.cloudlet_maintenance_changed(key, new.maintenance_state)
            events.instances_usable({app for app, _ in self._usable_apps(key) - usable})

        @cloudlets.on_delete
        async def cloudlet_deleted(old: cloudlet_pb2.Cloudlet) -> None:
            world.delete_cloudlet(old.key)
            autoprov.delete_cloudlet(
                (old.key.organization, old.key.name, old.key.federated_organization)
            )
            events.cloudlet_state_changed(CloudletKey.of(old.key), 4)  # NOT_PRESENT

        @infos.on_update
        async def info_updated(
            new: cloudlet_pb2.CloudletInfo, old: cloudlet_pb2.CloudletInfo | None
        ) -> None:
            key = CloudletKey.of(new.key)
            usable = self._usable_apps(key)
            world.update_cloudlet_info(new)
            if old is not None and old.state != new.state:
                events.cloudlet_state_changed(key, new.state)
            events.instances_usable({app for app, _ in self._usable_apps(key) - usable})

        @infos.on_delete
        async def info_deleted(old: cloudlet_pb2.CloudletInfo) -> None:
            world.delete_cloudlet_info(old.key)
            events.cloudlet_state_changed(CloudletKey.of(old.key), 4)  # NOT_PRESENT

        @codes.on_update
        async def code_updated(
            new: operatorcode_pb2.OperatorCode, old: operatorcode_pb2.OperatorCode | None
        ) -> None:
            world.update_operator_code(new)

        @codes.on_delete
        async def code_deleted(old: operatorcode_pb2.OperatorCode) -> None:
            world.delete_operator_code(old.code)

        @settings.on_update
        async def settings_updated(
            new: settings_pb2.Settings, old: settings_pb2.Settings | None
        ) -> None:
            world.update_settings(new)
            limiter.update_settings(new)

        @flows.on_update
        async def flow_updated(
            new: ratelimit_pb2.FlowRateLimitSettings,
            old: ratelimit_pb2.FlowRateLimitSettings | None,
        ) -> None:
            limiter.update_flow(new)

        @flows.on_delete
        async def flow_deleted(old: ratelimit_pb2.FlowRateLimitSettings) -> None:
            limiter.delete_flow(old.key)

        @max_reqs.on_update
        async def max_reqs_updated(
            new: ratelimit_pb2.MaxReqsRateLimitSettings,
            old: ratelimit_pb2.MaxReqsRateLimitSettings | None,
        ) -> None:
            limiter.update_max_reqs(new)

        @max_reqs.on_delete
        async def max_reqs_deleted(old: ratelimit_pb2.MaxReqsRateLimitSettings) -> None:
            limiter.delete_max_reqs(old.key)

        @policies.on_update
        async def policy_updated(
            new: autoprovpolicy_pb2.AutoProvPolicy, old: autoprovpolicy_pb2.AutoProvPolicy | None
        ) -> None:
            autoprov.update_policy(new)

        @policies.on_delete
        async def policy_deleted(old: autoprovpolicy_pb2.AutoProvPolicy) -> None:
            autoprov.delete_policy(old.key.organization, old.key.name)

        @clusters.on_update
        async def cluster_updated(
            new: clusterinst_pb2.ClusterInst, old: clusterinst_pb2.ClusterInst | None
        ) -> None:
            autoprov.update_cluster_inst(new)

        @clusters.on_delete
        async def cluster_deleted(old: clusterinst_pb2.ClusterInst) -> None:
            autoprov.delete_cluster_inst(old)

        @wanted.on_update
        async def client_wanted(
            new: appinstclient_pb2.AppInstClientKey, old: appinstclient_pb2.AppInstClientKey | None
        ) -> None:
            clients.want(key_string(new), new)

        @wanted.on_delete
        async def client_unwanted(old: appinstclient_pb2.AppInstClientKey) -> None:
            clients.unwant(key_string(old))

        @client.on_synced
        async def synced(info: SyncInfo) -> None:
            log.info(
                "notify sync %d from %s complete (%s): %d apps, %d app instances, %d cloudlets",
                info.generation,
                info.server_name,
                "delta" if info.delta else "full",
                len(apps),
                len(insts),
                len(cloudlets),
            )
