"""The `vault_server` fixture: one Vault test server process per test session.

Registered as a plugin by `tests/conftest.py`. The server runs in its own process (never in
the test process): it needs aiohttp's pure-Python parser (`AIOHTTP_NO_EXTENSIONS=1`, for
hvac's `LIST`), a switch read once at import that would slow every other aiohttp user.
Tests isolate themselves with a unique path prefix or a mount of their own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

__all__ = ["VaultServerProcess", "start_vault_server", "vault_server"]

READY_TIMEOUT: Final = 30.0
_ROOT: Final = Path(__file__).resolve().parents[3]


@dataclass
class VaultServerProcess:
    """A running Vault test server.

    Attributes:
        addr: `http://127.0.0.1:<port>`, what `VAULT_ADDR` would hold.
        token: The root token.
        process: The server process.
        log_path: Its output.
    """

    addr: str
    token: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start_vault_server(workdir: Path, token: str | None = None) -> VaultServerProcess:
    """Start the server on a free loopback port and wait (bounded) until it serves.

    Raises:
        RuntimeError: It exited or did not become ready in time; the message has its log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    log_path = workdir / "vault.log"
    root_token = token or f"hvs.root-{secrets.token_hex(8)}"
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.vault",
                *("--port", "0", "--token", root_token, "--ready-file", str(ready)),
            ],
            cwd=_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise RuntimeError(
                f"the Vault test server did not start: {log_path.read_text(errors='replace')}"
            )
        time.sleep(0.05)
    addr = str(json.loads(ready.read_text())["addr"])
    return VaultServerProcess(addr, root_token, process, log_path)


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServerProcess]:
    """One Vault test server for the run: `addr` and the root `token`."""
    server = start_vault_server(tmp_path_factory.mktemp("vault_server"))
    try:
        yield server
    finally:
        server.stop()
