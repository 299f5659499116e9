"""Shared helpers for the benchmarks: environment, percentiles, a throwaway etcd, CPU pinning.

Not a benchmark itself (`make bench` runs it too, and it does nothing as a script). The
benchmark scripts import it as `_common`, which works because Python puts the script's own
directory (`bench/`) first on `sys.path`.

Pinning: with two or more usable CPUs, the bench process and the etcd it starts share the
first ("server") CPU and the client subprocess gets the second, so the two ends of a stream
do not fight over one core. Threads are pinned through `os.sched_setaffinity`, the call
`taskset` makes; children are started under `taskset -c` when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import __version__ as protobuf_version
from google.protobuf.internal import api_implementation

from edge_cloud import localservers
from edge_cloud.localservers import ServerProcess
from edge_cloud.store import EtcdStore, Put

#: etcd's default `--max-txn-ops`: the most ops one transaction may carry.
ETCD_MAX_TXN_OPS = 128

#: Longest a child may take to answer one request line before the bench gives up.
CHILD_REPLY_TIMEOUT = 300.0


# --- environment ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _etcd_version() -> str:
    try:
        exe = localservers.find_binary("etcd")
        out = subprocess.run(
            [str(exe), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (localservers.MissingBinary, OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.partition(":")[2].strip()
    return "unknown"


def environment_line(pinning: CpuPlan | None, **extra: object) -> str:
    """One line describing where the figures come from, for the top of a bench's output."""
    try:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    parts = {
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "protobuf": f"{protobuf_version}({api_implementation.Type()})",
        "etcd": _etcd_version(),
        "kernel": platform.release(),
        "cpu": repr(_cpu_model()),
        "cpus": f"{len(usable_cpus())}/{os.cpu_count()}",
        "loadavg": load,
        "pinning": pinning.describe() if pinning else "off",
        **extra,
    }
    return "environment: " + " ".join(f"{k}={v}" for k, v in parts.items())


# --- statistics ----------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..100) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    """Latencies in milliseconds."""

    n: int
    p50: float
    p99: float
    max: float
    mean: float

    def describe(self) -> str:
        return (
            f"n={self.n} p50={self.p50:.3f}ms p99={self.p99:.3f}ms max={self.max:.3f}ms "
            f"mean={self.mean:.3f}ms"
        )


def summarize_ns(values_ns: Iterable[int]) -> Summary:
    """p50, p99, max and mean of nanosecond durations, in milliseconds."""
    ms = sorted(v / 1e6 for v in values_ns)
    return Summary(len(ms), percentile(ms, 50), percentile(ms, 99), ms[-1], sum(ms) / len(ms))


def ratio(value: float, baseline: float) -> str:
    """`value / baseline` as text, `inf` for a zero baseline."""
    return f"{value / baseline:.2f}x" if baseline > 0 else "inf"


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n}B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f}KiB"
    return f"{n / (1024 * 1024):.1f}MiB"


# --- CPU pinning ---------------------------------------------------------------------------


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """Which CPUs the server side (this process, etcd) and the client side run on."""

    server: frozenset[int]
    client: frozenset[int]

    def describe(self) -> str:
        via = "taskset" if shutil.which("taskset") else "sched_setaffinity"
        return (
            f"server+etcd:{','.join(map(str, sorted(self.server)))}"
            f"/client:{','.join(map(str, sorted(self.client)))}({via})"
        )


def plan_cpus(enabled: bool = True) -> CpuPlan | None:
    """Server on the first usable CPU, client on the second; None with fewer or disabled."""
    cpus = usable_cpus()
    if not enabled or len(cpus) < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    return CpuPlan(frozenset({cpus[0]}), frozenset({cpus[1]}))


def pin_process(pid: int, cpus: Iterable[int]) -> bool:
    """Pin every thread of `pid` to `cpus` (like `taskset -a -p`); threads started later inherit.

    Returns:
        Whether every thread could be pinned.
    """
    mask = set(cpus)
    tasks = Path(f"/proc/{pid}/task")
    try:
        tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    except OSError:
        tids = [pid]
    ok = True
    for tid in tids:
        try:
            os.sched_setaffinity(tid, mask)
        except (OSError, AttributeError):
            ok = False
    return ok


# --- etcd ----------------------------------------------------------------------------------


@contextlib.contextmanager
def throwaway_etcd(cpus: Iterable[int] | None = None) -> Iterator[ServerProcess]:
    """A private etcd on loopback in a temporary directory; stopped and removed on exit."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        server = localservers.start_etcd(Path(tmp) / "etcd", Path(tmp) / "etcd.log")
        try:
            if cpus is not None:
                pin_process(server.pid, cpus)
            yield server
        finally:
            server.stop()


async def load(
    store: EtcdStore,
    items: Iterable[tuple[str, bytes]],
    *,
    batch: int = ETCD_MAX_TXN_OPS,
    in_flight: int = 4,
) -> int:
    """Write key/value pairs in transactions of at most `batch` puts; returns the last revision.

    A few transactions are kept in flight, which loads etcd several times faster than one at
    a time without tripping its request size limit.
    """
    if not 1 <= batch <= ETCD_MAX_TXN_OPS:
        raise ValueError(f"batch must be 1..{ETCD_MAX_TXN_OPS}")
    pending: set[asyncio.Task[int]] = set()
    revision = 0

    async def commit(ops: list[Put]) -> int:
        return (await store.txn((), ops)).revision

    def reap(done: Iterable[asyncio.Task[int]]) -> None:
        nonlocal revision
        for task in done:
            revision = max(revision, task.result())

    ops: list[Put] = []
    try:
        for key, value in items:
            ops.append(Put(key, value))
            if len(ops) == batch:
                pending.add(asyncio.create_task(commit(ops)))
                ops = []
                if len(pending) >= in_flight:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    reap(done)
        if ops:
            pending.add(asyncio.create_task(commit(ops)))
        if pending:
            done, pending = await asyncio.wait(pending)
            reap(done)
    finally:
        for task in pending:
            task.cancel()
    return revision


# --- child processes -----------------------------------------------------------------------


class ChildError(RuntimeError):
    """A child process died, or answered something unexpected."""


class Child:
    """A bench subprocess driven by request lines on its stdin and reply lines on its stdout.

    Its stderr is ours, so a traceback in the child shows up in the bench output.
    """

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self._proc = proc

    @classmethod
    async def spawn(
        cls, name: str, script: Path, args: Sequence[str], cpus: Iterable[int] | None
    ) -> Child:
        """Run `script` with `args` under this interpreter, pinned to `cpus` if given."""
        argv = [sys.executable, str(script), *args]
        taskset = shutil.which("taskset")
        mask = sorted(cpus) if cpus is not None else None
        if mask is not None and taskset:
            argv = [taskset, "-c", ",".join(map(str, mask)), *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
            start_new_session=True,  # a Ctrl-C reaches only us; we stop the children in order
        )
        if mask is not None and not taskset:
            pin_process(proc.pid, mask)
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def send(self, line: str) -> None:
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            raise ChildError(f"{self.name}: stdin is closed")
        stdin.write(line.encode() + b"\n")
        await stdin.drain()

    async def read(self, within: float = CHILD_REPLY_TIMEOUT) -> list[str]:
        """The next reply line, split into words; TimeoutError after `within` seconds."""
        stdout = self._proc.stdout
        if stdout is None:
            raise ChildError(f"{self.name}: no stdout")
        async with asyncio.timeout(within):
            raw = await stdout.readline()
        if not raw:
            code = await self._proc.wait()
            raise ChildError(f"{self.name} exited with status {code}")
        return raw.decode().split()

    async def expect(self, word: str, within: float = CHILD_REPLY_TIMEOUT) -> list[str]:
        """The next reply line, which must start with `word`; returns the words after it."""
        reply = await self.read(within)
        if not reply or reply[0] != word:
            raise ChildError(f"{self.name}: expected {word!r}, got {' '.join(reply)!r}")
        return reply[1:]

    async def request(self, line: str, word: str, within: float = CHILD_REPLY_TIMEOUT) -> list[str]:
        """Send `line`, then `expect(word)`."""
        await self.send(line)
        return await self.expect(word, within)

    async def stop(self, grace: float = 10.0) -> None:
        """Close its stdin (its cue to exit), then terminate, then kill. Idempotent."""
        proc = self._proc
        if proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        for step in (None, proc.terminate, proc.kill):
            if proc.returncode is not None:
                break
            if step is not None:
                with contextlib.suppress(ProcessLookupError):
                    step()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await proc.wait()
        if proc.returncode is None:
            await proc.wait()


@contextlib.asynccontextmanager
async def children() -> AsyncIterator[list[Child]]:
    """A list to put spawned children in; every one is stopped on exit, error or not."""
    spawned: list[Child] = []
    try:
        yield spawned
    finally:
        for child in spawned:
            await child.stop()


# --- running ------------------------------------------------------------------------------


def run(main: Coroutine[Any, Any, None]) -> int:
    """`asyncio.run(main)`, with SIGTERM and SIGINT both cancelling it so cleanup runs.

    Returns:
        The exit status: 0, or 128 + the signal that ended the run.
    """
    received: list[int] = []

    async def guarded() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):

            def stop(sig: int = sig) -> None:
                received.append(sig)
                task.cancel()

            # no signal handlers off the main thread or on loops without them: the bench
            # then simply runs to its bounded end, nothing is left half-done
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop)
        await main

    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        if not received:
            raise
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    return 128 + received[0] if received else 0


# --- the child's side ----------------------------------------------------------------------


async def stdin_lines() -> AsyncIterator[str]:
    """Request lines from the parent; ends when the parent closes our stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            yield line.decode().strip()
    finally:
        transport.close()


def reply(*words: object) -> None:
    """Send one reply line to the parent."""
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def elapsed_ms(start_ns: int) -> float:
    return (time.monotonic_ns() - start_ns) / 1e6


if __name__ == "__main__":
    print("bench/_common.py holds helpers for the other benches; nothing to run")
