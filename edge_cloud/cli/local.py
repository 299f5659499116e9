"""`edge local up|down|status`: the whole platform on loopback, for `make run` and demos.

Servers (etcd, Redis, InfluxDB) and daemons run as child processes with their data and logs
under the run directory (`.run/` by default). `up` stays in the foreground and stops everything
on Ctrl-C or SIGTERM; `down` cleans up after a run that was killed without a chance to do so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from edge_cloud import localservers
from edge_cloud.cli import demo, serve
from edge_cloud.secrets import load_key

DEFAULT_RUN_DIR = Path(".run")
DAEMON_READY_TIMEOUT = 60.0


@dataclass
class Daemon:
    """One daemon started by `up`, with where it reported listening."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, Any]


def register(commands: Any) -> None:
    """Add `local up|down|status`."""
    parser = commands.add_parser("local", help="run the whole platform on this machine")
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ.get("EDGE_RUN_DIR", DEFAULT_RUN_DIR)),
        help="data, logs and state of the local run (env EDGE_RUN_DIR; default .run)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="start servers and daemons; Ctrl-C stops them")
    up.add_argument("--etcd-port", type=int, default=2379, help="etcd client port (0: any)")
    up.add_argument("--redis-port", type=int, default=6379, help="Redis port (0: any)")
    up.add_argument("--influx-port", type=int, default=8086, help="InfluxDB HTTP port (0: any)")
    up.add_argument("--no-daemons", action="store_true", help="start only etcd, Redis and InfluxDB")
    up.add_argument(
        "--free-ports",
        action="store_true",
        help="give the daemons free ports instead of their defaults (tests, a second copy)",
    )
    up.add_argument(
        "--ready-file", type=Path, help="write the endpoints here as JSON once all is up"
    )
    up.add_argument(
        "--demo",
        type=Path,
        metavar="WORLD.yaml",
        help="once up, load this world with `edge apply` and run a FindCloudlet as a device",
    )
    up.set_defaults(handler=cmd_up)
    down = verbs.add_parser("down", help="stop whatever a previous run left running")
    down.set_defaults(handler=cmd_down)
    status = verbs.add_parser("status", help="show what runs")
    status.set_defaults(handler=cmd_status)


def _stop_on_signals() -> threading.Event:
    """Turn SIGINT/SIGTERM into an event; a second signal exits at once."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


PER_CLOUDLET: Final = frozenset({"crm"})
"""Daemons that serve one cloudlet (`--cloudlet-key`): not started by `edge local up`."""


def _free_port_flags() -> dict[str, list[str]]:
    """Flags wiring the known daemons to each other on free ports instead of the defaults."""
    ctl_api, ctl_notify, ccrm, dme, dme_http = (localservers.free_port() for _ in range(5))
    notify = f"127.0.0.1:{ctl_notify}"
    return {
        "controller": [
            f"--api-addr=127.0.0.1:{ctl_api}",
            f"--notify-addr={notify}",
            "--http-addr=127.0.0.1:0",  # the demo reads the bound port from the ready file
            f"--platform-service-addrs=ccrm=127.0.0.1:{ccrm}",
        ],
        "ccrm": [f"--api-addr=127.0.0.1:{ccrm}", f"--notify-addrs={notify}"],
        "dme": [
            f"--api-addr=127.0.0.1:{dme}",
            f"--http-addr=127.0.0.1:{dme_http}",
            f"--notify-addrs={notify}",
        ],
    }


def _start_daemon(
    name: str, run_dir: Path, env: dict[str, str], flags: list[str] | None = None
) -> Daemon:
    """Start one daemon as a child process and wait for its ready file."""
    ready = run_dir / "ready" / f"{name}.json"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    log_path = run_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                *(sys.executable, "-m", "edge_cloud.cli", "serve", name),
                *(flags or []),
                *("--ready-file", str(ready)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + DAEMON_READY_TIMEOUT
    while not ready.exists():
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{name} exited with {process.returncode}: " + " | ".join(tail))
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not become ready in {DAEMON_READY_TIMEOUT:.0f}s")
        time.sleep(0.1)
    ports: dict[str, Any] = json.loads(ready.read_text())
    return Daemon(name, process, log_path, ports)


def _stop_daemon(daemon: Daemon, grace: float = 15.0) -> None:
    """SIGTERM, wait for the daemon's own graceful shutdown, then SIGKILL."""
    if daemon.process.poll() is None:
        daemon.process.terminate()
        try:
            daemon.process.wait(grace)
        except subprocess.TimeoutExpired:
            daemon.process.kill()
            daemon.process.wait()


def _servers_table(servers: list[localservers.ServerProcess], run_dir: Path) -> Table:
    table = Table(title="servers", title_justify="left")
    for column in ("name", "listens", "data", "log"):
        table.add_column(column)
    for server in servers:
        table.add_row(
            server.name,
            server.endpoints["client"],
            _rel(server.data_dir),
            _rel(server.log_path),
        )
    return table


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def cmd_up(args: Any) -> int:
    """Start etcd, Redis, InfluxDB and every daemon; block until a signal; stop all."""
    # not a terminal (make run piped, logs): wide enough that endpoints are not cut
    console = Console(width=None if sys.stdout.isatty() else 120)
    run_dir: Path = args.run_dir
    state = localservers.RunDir(run_dir)
    leftovers = state.stop_all()
    if leftovers:
        console.print(f"stopped {leftovers} process(es) left by an earlier run")
    stop = _stop_on_signals()
    servers: list[localservers.ServerProcess] = []
    daemons: list[Daemon] = []
    try:
        for name, start, port in (
            ("etcd", localservers.start_etcd, args.etcd_port),
            ("redis", localservers.start_redis, args.redis_port),
            ("influxdb", localservers.start_influxdb, args.influx_port),
        ):
            server = start(
                run_dir / "data" / name, run_dir / "logs" / f"{name}.log", port=port or None
            )
            state.record(server)
            servers.append(server)
        console.print(_servers_table(servers, run_dir))
        env = dict(os.environ)
        env.update(localservers.client_environment(servers))
        # the local platform: fake cloudlets run by the CCRM on its default port
        env.setdefault("EDGE_PLATFORM_SERVICE_ADDRS", "ccrm=127.0.0.1:19001")
        env.setdefault("EDGE_TEST_MODE", "true")
        if not env.get("VAULT_ADDR"):
            # the local secrets backend: one key for the Controller and the CCRM, generated
            # once and kept in the run dir (mode 0600) so secrets survive a restart
            key_file = run_dir / "secrets.key"
            load_key(key_file, create=True)
            env.setdefault("EDGE_SECRETS_KEY_FILE", str(key_file.resolve()))
        names = [] if args.no_daemons else serve.available()
        # a CRM serves one on-edge cloudlet and is started for it, not with the region
        names = [n for n in names if n not in PER_CLOUDLET]
        flags = _free_port_flags() if args.free_ports else {}
        for name in names:
            if stop.is_set():
                break
            daemon = _start_daemon(name, run_dir, env, flags.get(name))
            state.record_pid(name, daemon.process.pid)
            daemons.append(daemon)
            console.print(f"{name:<10} {daemon.ports}  log {_rel(daemon.log_path)}")
        if not names:
            console.print("no daemons are installed yet; servers only")
        if args.demo and not stop.is_set():
            by_name = {d.name: d for d in daemons}
            if "controller" in by_name and "dme" in by_name:
                controller = f"127.0.0.1:{by_name['controller'].ports['api']}"
                dme = f"127.0.0.1:{by_name['dme'].ports['api']}"
                http = by_name["controller"].ports.get("http")  # absent with --http-addr ''
                rest = f"127.0.0.1:{http}" if http else None
                if not demo.run(args.demo, controller, dme, console, rest=rest):
                    console.print("[red]the demo did not complete; the services keep running[/]")
            else:
                console.print("the demo needs the Controller and the DME; skipped")
        if args.ready_file:
            endpoints = {s.name: s.endpoints for s in servers}
            endpoints.update({d.name: d.ports for d in daemons})
            args.ready_file.write_text(json.dumps(endpoints))
        console.print("[bold green]all services are up[/]; Ctrl-C stops them")
        while not stop.wait(0.5):
            for daemon in daemons:
                if daemon.process.poll() is not None:
                    console.print(
                        f"[red]{daemon.name} exited with {daemon.process.returncode}[/]; "
                        f"see {_rel(daemon.log_path)}"
                    )
                    stop.set()
        return 0 if all(d.process.returncode in (None, 0) for d in daemons) else 1
    except (localservers.MissingBinary, localservers.ServerStartError, RuntimeError) as err:
        print(f"edge local up: {err}", file=sys.stderr)
        return 2
    finally:
        for daemon in reversed(daemons):
            _stop_daemon(daemon)
        for server in reversed(servers):
            server.stop()
        state.clear()
        console.print("stopped")


def cmd_down(args: Any) -> int:
    """Stop processes recorded by a run that could not clean up after itself."""
    stopped = localservers.RunDir(args.run_dir).stop_all()
    print(f"stopped {stopped} process(es)")
    return 0


def cmd_status(args: Any) -> int:
    """List the recorded processes and whether each is alive."""
    records = localservers.RunDir(args.run_dir).load()
    if not records:
        print("nothing is running")
        return 0
    table = Table()
    for column in ("name", "pid", "alive", "endpoints"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.name,
            str(record.pid),
            "yes" if record.alive() else "no",
            ", ".join(record.endpoints.values()),
        )
    Console().print(table)
    return 0
