"""The daemon skeleton: `Daemon` to subclass, `serve` to run one, `run_daemon` for `__main__`."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import grpc.aio
import uvloop

from edge_cloud import logs
from edge_cloud.config import CommonConfig, HelpRequested, describe, load
from edge_cloud.errors import ConfigError, DeadlineExceeded, Unavailable
from edge_cloud.server._interceptor import leaves
from edge_cloud.server._listeners import Health, HttpListener, bind, metrics_app, new_server

__all__ = ["Daemon", "run_daemon", "serve"]

C = TypeVar("C", bound=CommonConfig)

log = logging.getLogger("edge_cloud.server")


class Daemon(abc.ABC, Generic[C]):
    """One service process; `serve` calls its hooks in a fixed order.

    Order: `add_services` → ports bound and listening (health NOT_SERVING) → `start` →
    `background` tasks → SERVING and ready → (signal) → NOT_SERVING → in-flight RPCs finish
    → `background` tasks cancelled → `close`, which runs even when anything before failed.

    A daemon with more listeners (the Controller's notify port, the DME's REST port) opens
    them in `start` with `new_server`/`bind` or `HttpListener`, reports them in
    `extra_ports` and closes them in `close`.

    Attributes:
        name: Daemon name: the logger `service` field, metrics label and `--help` program.
        config: The loaded configuration.
        ports: Bound ports by role: `api` and `metrics` before `start` runs, the
            `extra_ports` added once serving; what the ready file holds.
    """

    name: ClassVar[str]

    def __init__(self, config: C) -> None:
        self.config = config
        self.ports: dict[str, int] = {}

    @abc.abstractmethod
    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """Register the servicers on the main server.

        Returns:
            Full names of the services added (`"edgeproto.FlavorApi"`), for health and
            reflection.
        """

    async def start(self) -> None:
        """Reach dependencies and warm caches; RPCs already arrive but health says NOT_SERVING."""

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """Long-running loops (watches, reconcilers), run as tasks until shutdown.

        A loop that raises stops the daemon with exit status 1; loops are cancelled on a
        normal shutdown, after in-flight RPCs have finished.
        """
        return []

    def extra_ports(self) -> dict[str, int]:
        """Ports of listeners opened in `start`, by role, for the ready file."""
        return {}

    async def close(self) -> None:
        """Release clients and extra listeners; also called after a failed or partial start."""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGTERM or SIGINT; a second signal exits at once, skipping cleanup."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signum.name)
            os._exit(128 + signum)
        log.info("%s: shutting down", signum.name)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield stop
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _write_ready_file(daemon: Daemon[Any]) -> None:
    """Publish the ports atomically, so a reader never sees half a file."""
    path = daemon.config.ready_file
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(daemon.ports) + "\n")
        tmp.replace(path)
    except OSError as err:
        raise ConfigError(f"cannot write --ready-file {path}: {err.strerror}") from None


async def serve(
    daemon: Daemon[Any], ready: asyncio.Event | None = None, *, stop: asyncio.Event | None = None
) -> None:
    """Run a daemon until stopped: listeners, health, reflection, metrics, ordered shutdown.

    Args:
        daemon: The daemon to run.
        ready: Set once the daemon serves and `daemon.ports` is complete (for in-process use).
        stop: Set it to shut down; without one, SIGTERM and SIGINT do.

    Raises:
        ConfigError: When a listener cannot be opened (address taken or malformed, TLS files).
    """
    cfg = daemon.config
    with contextlib.ExitStack() as stack:
        stopping = stop if stop is not None else stack.enter_context(_stop_on_signals())
        server = new_server(daemon.name)
        http: HttpListener | None = None
        announced = False
        try:
            health = Health(server, daemon.add_services(server))
            await health.set_all_not_serving()
            daemon.ports = {"api": bind(server, cfg.api_addr, cfg.tls)}
            if cfg.metrics_addr:
                http = await HttpListener.start(
                    metrics_app(lambda: health.serving), cfg.metrics_addr
                )
                daemon.ports["metrics"] = http.port
            await server.start()
            await daemon.start()
            async with asyncio.TaskGroup() as tasks:
                loops = [tasks.create_task(c) for c in daemon.background()]
                await health.set_all_serving()
                daemon.ports.update(daemon.extra_ports())
                announced = True
                _write_ready_file(daemon)
                log.info("serving", extra={"ports": daemon.ports})
                if ready is not None:
                    ready.set()
                await stopping.wait()
                log.info("stopping: in-flight RPCs get up to %ss", cfg.shutdown_grace)
                await health.enter_graceful_shutdown()  # probes fail first, balancers drain
                await server.stop(cfg.shutdown_grace)  # refuse new RPCs, finish in-flight ones
                for task in loops:
                    task.cancel()
        finally:
            await server.stop(None)
            if http is not None:
                await http.close()
            await daemon.close()
            if cfg.ready_file is not None and announced:
                cfg.ready_file.unlink(missing_ok=True)  # a stale file would announce dead ports


def _refuse(name: str, message: str, status: int = 2) -> int:
    """Bad configuration or an unreachable dependency: one line on stderr, no traceback."""
    sys.stderr.write(f"{name}: error: {message}\n")
    return status


def _check_otel(cfg: CommonConfig) -> None:
    if cfg.otel_endpoint and importlib.util.find_spec("opentelemetry.sdk") is None:
        raise ConfigError(
            "--otel-endpoint needs the otel extra: pip install 'edge-cloud-platform[otel]'"
        )


def run_daemon(
    daemon_cls: type[Daemon[C]],
    config_cls: type[C],
    argv: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> int:
    """Load config, set up logging, run the daemon on its event loop; the body of `__main__`.

    Args:
        daemon_cls: The daemon to run.
        config_cls: Its config dataclass.
        argv: Command-line arguments after the program name.
        environ: The environment; `os.environ` when None.

    Returns:
        The exit status: 0 after a signal (or `--help`), 1 on a fatal error (logged once
        with its traceback), 2 on bad configuration (one line on stderr).
    """
    name = daemon_cls.name
    try:
        cfg = load(config_cls, argv, os.environ if environ is None else environ, prog=name)
    except HelpRequested as help_:
        sys.stdout.write(help_.text)
        return 0
    except ConfigError as err:
        return _refuse(name, str(err))
    logs.setup(name, cfg.log_level, cfg.log_format, cfg.debug)
    log.info("starting %s", name, extra={"config": describe(cfg)})

    async def main() -> None:
        _check_otel(cfg)
        await serve(daemon_cls(cfg))

    try:
        if cfg.event_loop == "uvloop":
            uvloop.run(main())
        else:
            asyncio.run(main())
    except Exception as error:
        found = leaves(error)
        if all(isinstance(leaf, ConfigError) for leaf in found):
            return _refuse(name, "; ".join(map(str, found)))
        if all(isinstance(leaf, Unavailable | DeadlineExceeded) for leaf in found):
            # a dependency (etcd, Redis, ...) is down: the operator needs where, not a traceback
            log.error("%s cannot start: %s", name, "; ".join(map(str, found)))
            return _refuse(name, "; ".join(map(str, found)), status=1)
        log.critical("%s failed", name, exc_info=error)
        return 1
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the signal handlers were installed
    log.info("stopped")
    return 0
