"""Shared process helpers for end-to-end tests and benchmarks: the Controller and the CCRM as
real processes (`python -m services.<name> --ready-file ...`) on fixed loopback ports, so a
killed daemon restarts at the same address and its peers find it again.

Synchronous (subprocess + poll); every wait is bounded. `stop()` ends only the process this
helper started, by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from edge_cloud import localservers

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class DaemonError(RuntimeError):
    """A daemon exited early or did not become ready in time."""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None; raise after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(step)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without EDGE_* / FAKE_* settings that would leak into a daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "FAKE_"))}
    env.update(extra)
    return env


class Daemon:
    """One `python -m services.<module>` process, restartable at the same ports."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        workdir: Path,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.args = list(args)
        self.workdir = workdir
        self.env = env if env is not None else clean_env()
        self.prefix = list(prefix)
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.module}{self.runs}.log"

    def start(self, timeout: float = 30.0) -> dict[str, int]:
        """Spawn and wait for the ready file; returns its contents (the bound ports)."""
        self.runs += 1
        ready = self.workdir / f"{self.module}{self.runs}.ready.json"
        with self.log.open("wb") as out:
            self.process = process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", f"services.{self.module}", *self.args,
                 "--ready-file", str(ready)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

        def ready_ports() -> dict[str, int] | None:
            if process.poll() is not None:
                raise DaemonError(
                    f"{self.module} exited with {process.returncode}: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            if not ready.exists():
                return None
            try:
                ports: dict[str, int] = json.loads(ready.read_text())
            except ValueError:
                return None  # being written
            return ports

        try:
            return wait_for(ready_ports, timeout, f"{self.module}'s ready file")
        except TimeoutError:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode


class Platform:
    """A Controller and a CCRM wired to each other, on fixed loopback ports."""

    def __init__(
        self,
        etcd_url: str,
        redis_url: str,
        workdir: Path,
        *,
        controller_prefix: Sequence[str] = (),
        ccrm_prefix: Sequence[str] = (),
        ccrm_env: dict[str, str] | None = None,
    ) -> None:
        self.api_port = localservers.free_port()
        self.notify_port = localservers.free_port()
        self.ccrm_port = localservers.free_port()
        self.namespace = f"/e2e/{uuid.uuid4().hex[:12]}/"
        self.controller = Daemon(
            "controller",
            [
                "--api-addr", f"127.0.0.1:{self.api_port}",
                "--notify-addr", f"127.0.0.1:{self.notify_port}",
                "--metrics-addr", "",
                "--redis-standalone-addr", redis_url,
                "--platform-service-addrs", f"ccrm=127.0.0.1:{self.ccrm_port}",
                "--etcd-namespace", self.namespace,
                "--test-mode",
                "--shutdown-grace", "2",
            ],
            workdir,
            env=clean_env(EDGE_ETCD_URLS=etcd_url),
            prefix=controller_prefix,
        )  # fmt: skip
        self.ccrm = Daemon(
            "ccrm",
            [
                "--api-addr", f"127.0.0.1:{self.ccrm_port}",
                "--metrics-addr", "",
                "--notify-addrs", f"127.0.0.1:{self.notify_port}",
                "--shutdown-grace", "2",
            ],
            workdir,
            env=clean_env(**(ccrm_env or {})),
            prefix=ccrm_prefix,
        )  # fmt: skip

    @property
    def api_addr(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    def start(self) -> None:
        try:
            self.controller.start()
            self.ccrm.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.ccrm.stop()
        self.controller.stop()
