"""Local CRM processes for test and demo cloudlets (crm_platforms.md §6.5).

The original's `process.StartCRMService`: a `deployment_local` cloudlet has its CRM on the
same host, started by whoever onboards it and stopped when it is deleted. The process is
`edge serve crm ...` (the daemon is found through its entry point; the core names no
service module), logs to a file per cloudlet, and is reaped when it exits.

It is spawned with `subprocess.Popen` in a worker thread, with the arguments that let
Python use `posix_spawn`: a plain `fork()` from a process with busy gRPC threads (which is
what an event loop's own subprocess support does) runs gRPC's fork handlers and can crash
the child before it ever runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edgeproto import cloudletkey_pb2

from edge_cloud.errors import FailedPrecondition
from edge_cloud.objects import keys

__all__ = ["LocalCrmSettings", "LocalCrms"]

log = logging.getLogger(__name__)

STOP_GRACE: Final = 10.0
_EARLY_EXIT: Final = 0.5
"""Seconds a new CRM is watched for an immediate exit (bad flags, missing daemon)."""


@dataclass(frozen=True, slots=True)
class LocalCrmSettings:
    """What every local CRM is started with.

    Attributes:
        notify_addrs: The Controller notify addresses the CRM dials.
        region: The region name.
        app_dns_root: DNS root of generated names.
        test_mode: Start it in test mode.
        log_dir: Where `<cloudlet>.<org>.crm.log` files go (the temp dir by default).
    """

    notify_addrs: Sequence[str]
    region: str = "local"
    app_dns_root: str = "appdnsroot.net"
    test_mode: bool = False
    log_dir: Path | None = None


def _child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without its own EDGE_* settings (ports, keys, ...)."""
    return {k: v for k, v in environ.items() if not k.startswith("EDGE_")}


class LocalCrms:
    """The local CRM processes this daemon started, by cloudlet.

    Args:
        settings: Flags every CRM gets.
        environ: The environment to start them from (minus EDGE_*).
    """

    def __init__(self, settings: LocalCrmSettings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._env = _child_env(environ)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._reapers: set[asyncio.Task[None]] = set()

    def running(self, key: cloudletkey_pb2.CloudletKey) -> int | None:
        """The PID of the cloudlet's CRM while it runs."""
        proc = self._procs.get(keys.key_string(key))
        return proc.pid if proc is not None and proc.poll() is None else None

    def log_path(self, key: cloudletkey_pb2.CloudletKey) -> Path:
        """Where the cloudlet's CRM logs."""
        base = self._settings.log_dir or Path(tempfile.gettempdir())
        return base / f"{key.name}.{key.organization}.crm.log"

    def args(self, key: cloudletkey_pb2.CloudletKey, platform_type: str) -> list[str]:
        """The CRM's flags (the original's `process.Crm.GetArgs`, in our spelling)."""
        s = self._settings
        args = [
            f"--cloudlet-key={keys.key_string(key)}",
            f"--notify-addrs={','.join(s.notify_addrs)}",
            f"--platform={platform_type}",
            f"--region={s.region}",
            f"--app-dns-root={s.app_dns_root}",
            "--api-addr=127.0.0.1:0",
            "--metrics-addr=",
        ]
        if s.test_mode:
            args.append("--test-mode")
        return args

    async def start(self, key: cloudletkey_pb2.CloudletKey, platform_type: str) -> int:
        """Start the cloudlet's CRM unless it runs already; returns its PID.

        Raises:
            FailedPrecondition: It exited at once (its log's tail says why).
        """
        name = keys.key_string(key)
        pid = self.running(key)
        if pid is not None:
            return pid
        path = self.log_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "edge_cloud.cli", "serve", "crm"]
        command += self.args(key, platform_type)

        def spawn() -> subprocess.Popen[bytes]:
            with path.open("ab") as out:
                return subprocess.Popen(  # noqa: S603 - our interpreter, our daemon
                    command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=self._env, close_fds=False,
                )  # fmt: skip

        proc = await asyncio.to_thread(spawn)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, _EARLY_EXIT)
        if proc.returncode is not None:
            tail = path.read_text(errors="replace")[-500:].strip()
            raise FailedPrecondition(
                f"the local CRM of cloudlet {name} exited at once with status "
                f"{proc.returncode}: {tail or 'no output'} (log {path})"
            )
        self._procs[name] = proc
        reaper = asyncio.create_task(self._reap(name, proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        log.info("started the local CRM of %s, pid %d, log %s", name, proc.pid, path)
        return proc.pid

    async def _reap(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        # a thread of its own per child: the default executor's few workers must not be
        # held for a CRM's whole life
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()

        def wait() -> None:
            proc.wait()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(exited.set)

        threading.Thread(target=wait, name=f"reap-crm-{proc.pid}", daemon=True).start()
        await exited.wait()
        if self._procs.get(name) is proc:
            del self._procs[name]
        log.info(
            "the local CRM of %s (pid %d) exited with status %s", name, proc.pid, proc.returncode
        )

    async def stop(self, key: cloudletkey_pb2.CloudletKey, grace: float = STOP_GRACE) -> bool:
        """SIGTERM the cloudlet's CRM, SIGKILL after `grace` s; whether one was running."""
        proc = self._procs.pop(keys.key_string(key), None)
        if proc is None or proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        return True

    async def close(self) -> None:
        """Stop every CRM started here (the daemon is shutting down)."""
        for name in list(self._procs):
            await self.stop(keys.parse_key_string(cloudletkey_pb2.CloudletKey, name))
        for task in list(self._reapers):
            task.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)
