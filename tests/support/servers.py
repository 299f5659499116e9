"""Real etcd, Redis and InfluxDB for tests, and per-test isolation on top of them.

Registered as a plugin by `tests/conftest.py`, so every test can ask for:

- `etcd_server`, `redis_server`, `influx_server`, `moto_server` (session): one real server
  each per run (per xdist worker), on a free loopback port with a fresh data dir, stopped by
  PID at the end. A missing binary skips the test with the install line, or fails it under
  `CI=true`, where a silently skipped integration suite would be a green lie.
- `etcd_store`, `redis_client`, `influx_db` (function): a client isolated from other tests by
  a unique etcd key namespace, its own Redis database (flushed), its own Influx database.
- `private_etcd` (function): an etcd of the test's own, for tests that stop or restart it.

Servers start through `edge_cloud.localservers`, the same code `edge local up` uses. Their
logs stay out of the way unless a test fails: then the lines each server wrote during that
test are attached to the report.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_cloud import localservers
from edge_cloud.errors import EdgeError
from edge_cloud.influx import InfluxV1Writer
from edge_cloud.localservers import MissingBinary, ServerProcess, ServerStartError
from edge_cloud.redis import Redis
from edge_cloud.redis import connect as connect_redis
from edge_cloud.store import EtcdStore

# Redis has 16 databases by default; 0 is left alone and the rest are handed out in turn.
_REDIS_DBS = itertools.cycle(range(1, 16))
_LOG_LINES_ON_FAILURE = 60

# Servers by the fixture name that provides them, for attaching logs to failed tests.
_running: dict[str, ServerProcess] = {}
_log_offsets: dict[str, int] = {}


def start_or_skip(start: Callable[..., ServerProcess], root: Path, **kwargs: Any) -> ServerProcess:
    """Start a server under `root`, skipping (or failing under CI) if its binary is missing.

    Args:
        start: One of the `localservers.start_*` functions.
        root: Directory for the data dir and the log.
        **kwargs: Passed to `start` (ports, timeouts).

    Returns:
        The running server; the caller stops it.
    """
    try:
        return start(root / "data", root / "server.log", **kwargs)
    except MissingBinary as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must have every server: {err}", pytrace=False)
        pytest.skip(str(err))
    except ServerStartError as err:
        pytest.fail(str(err), pytrace=False)


def _session_server(
    fixture: str, start: Callable[..., ServerProcess], factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = start_or_skip(start, factory.mktemp(fixture))
    _running[fixture] = server
    try:
        yield server
    finally:
        _running.pop(fixture, None)
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One etcd for the whole run; isolate tests by key namespace (`etcd_store`)."""
    yield from _session_server("etcd_server", localservers.start_etcd, tmp_path_factory)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One Redis for the whole run; isolate tests by database (`redis_client`)."""
    yield from _session_server("redis_server", localservers.start_redis, tmp_path_factory)


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One InfluxDB for the whole run; isolate tests by database (`influx_db`)."""
    yield from _session_server("influx_server", localservers.start_influxdb, tmp_path_factory)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One moto (AWS emulator, server mode) for the run; tests isolate by region and tags.

    Its `client_url` is the `endpoint_url` for boto3. Credentials are never checked by moto,
    but boto3 still signs every request, so tests pass dummy keys explicitly.
    """
    yield from _session_server("moto_server", localservers.start_moto, tmp_path_factory)


@pytest.fixture
def private_etcd(tmp_path: Path) -> Iterator[ServerProcess]:
    """An etcd only this test uses, for tests that stop, restart or compact it."""
    server = start_or_skip(localservers.start_etcd, tmp_path)
    _running["private_etcd"] = server
    try:
        yield server
    finally:
        _running.pop("private_etcd", None)
        server.stop()


@pytest.fixture
async def etcd_store(etcd_server: ServerProcess) -> AsyncIterator[EtcdStore]:
    """A connected `EtcdStore` whose keys live under a namespace unique to this test."""
    namespace = f"/test/{uuid.uuid4().hex[:12]}/"
    store = await EtcdStore.connect(etcd_server.client_url, namespace=namespace)
    try:
        yield store
    finally:
        if not store.closed:
            with contextlib.suppress(EdgeError):
                await store.delete_prefix("")
            await store.close()


@pytest.fixture
async def redis_client(redis_server: ServerProcess) -> AsyncIterator[Redis]:
    """A client on a Redis database of its own, empty at start and flushed at the end.

    Pub/sub channels are shared by all databases: give channels unique names.
    """
    client = await connect_redis(redis_server.client_url, db=next(_REDIS_DBS))
    try:
        await client.flushdb()
        yield client
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
async def influx_db(influx_server: ServerProcess) -> AsyncIterator[InfluxV1Writer]:
    """A writer on a fresh InfluxDB database, dropped at the end."""
    writer = await InfluxV1Writer.connect(influx_server.client_url, f"test_{uuid.uuid4().hex}")
    try:
        yield writer
        await writer.drop_database()
    finally:
        await writer.close()


# --- server logs in the report of a failed test ----------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember where each running server's log ends, so a failure shows only its part."""
    _log_offsets.clear()
    for fixture, server in _running.items():
        with contextlib.suppress(OSError):
            _log_offsets[fixture] = server.log_path.stat().st_size


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the server log lines written during a failed test to its report."""
    report = yield
    if report.failed:
        used = getattr(item, "fixturenames", ())
        for fixture, server in _running.items():
            if fixture in used:
                text = _log_since(server.log_path, _log_offsets.get(fixture, 0))
                report.sections.append((f"{server.name} log ({server.log_path})", text))
    return report


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(lines[-_LOG_LINES_ON_FAILURE:]) or "(nothing logged during this test)"
