"""Shared process helpers for end-to-end tests and benchmarks: the Controller and the CCRM as
real processes (`python -m services.<name> --ready-file ...`) on fixed loopback ports, so a
killed daemon restarts at the same address and its peers find it again.

Synchronous (subprocess + poll); every wait is bounded. `stop()` ends only the process this
helper started, by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    app_pb2_grpc,
    appinst_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    clusterinst_pb2_grpc,
    flavor_pb2,
    flavor_pb2_grpc,
)

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
                "--http-addr", "127.0.0.1:0",
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


@dataclass
class ControllerApi:
    """Generated stubs on one channel to the Controller, plus the processes behind it.

    Each platform's end-to-end module extends it with what its cloud needs (moto, a Kubernetes
    API), so the stubs and the start-up steps every module takes are written once.
    """

    platform: Platform
    channel: grpc.Channel

    def __post_init__(self) -> None:
        self.flavors = flavor_pb2_grpc.FlavorApiStub(self.channel)
        self.cloudlets = cloudlet_pb2_grpc.CloudletApiStub(self.channel)
        self.infos = cloudlet_pb2_grpc.CloudletInfoApiStub(self.channel)
        self.features = cloudlet_pb2_grpc.PlatformFeaturesApiStub(self.channel)
        self.clusters = clusterinst_pb2_grpc.ClusterInstApiStub(self.channel)
        self.apps = app_pb2_grpc.AppApiStub(self.channel)
        self.app_insts = appinst_pb2_grpc.AppInstApiStub(self.channel)

    def registered(self, platform_type: str, timeout: float) -> list[cloudlet_pb2.PlatformFeatures]:
        """Wait until the CCRM has registered `platform_type`; returns its features."""

        def found() -> list[cloudlet_pb2.PlatformFeatures] | None:
            shown = self.features.ShowPlatformFeatures(cloudlet_pb2.PlatformFeatures(), timeout=5)
            return [f for f in shown if f.platform_type == platform_type] or None

        return wait_for(found, timeout, f"the CCRM to register the {platform_type} platform")

    def create_flavor(self, name: str, disk: int) -> None:
        """Create the flavor the module's clusters and VMs use (4 GiB RAM, 2 vCPUs)."""
        self.flavors.CreateFlavor(
            flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=4096, vcpus=2, disk=disk),
            timeout=10,
        )


A = TypeVar("A", bound=ControllerApi)


@contextlib.contextmanager
def serving_platform(
    api_cls: type[A],
    etcd_url: str,
    redis_url: str,
    workdir: Path,
    *,
    platform_type: str = "fake",
    flavor: str = "",
    disk: int = 40,
) -> Iterator[A]:
    """A started Controller + CCRM whose CCRM has registered `platform_type`; yields stubs.

    With `flavor`, that flavor (2 vCPUs, 4 GiB, `disk` GB) is created first. Both processes
    stop when the block ends.
    """
    platform = Platform(etcd_url, redis_url, workdir)
    platform.start()
    try:
        with grpc.insecure_channel(platform.api_addr) as channel:
            stubs = api_cls(platform, channel)
            stubs.registered(platform_type, 20)
            if flavor:
                stubs.create_flavor(flavor, disk=disk)
            yield stubs
    finally:
        platform.stop()


def platform_fixture(
    api_cls: type[A],
    workdir: str,
    *,
    platform_type: str = "fake",
    flavor: str = "",
) -> Any:
    """A module-scoped `api` fixture: `serving_platform` on the session's etcd and Redis.

    Assign it to `api` in the module: `api = platform_fixture(Api, "bmh", flavor=FLAVOR)`.
    """

    @pytest.fixture(scope="module")
    def api(
        etcd_server: localservers.ServerProcess,
        redis_server: localservers.ServerProcess,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[A]:
        with serving_platform(
            api_cls,
            etcd_server.client_url,
            redis_server.client_url,
            tmp_path_factory.mktemp(workdir),
            platform_type=platform_type,
            flavor=flavor,
        ) as stubs:
            yield stubs

    return api


def run(call: Iterator[Any]) -> tuple[list[str], grpc.RpcError | None]:
    """Every streamed progress message of a call, and the error it ended with (or None)."""
    messages: list[str] = []
    try:
        for result in call:
            messages.append(result.message)
    except grpc.RpcError as err:
        return messages, err
    return messages, None


def ok(call: Iterator[Any]) -> list[str]:
    """The progress messages of a call that must succeed; fails the test with its error."""
    messages, err = run(call)
    assert err is None, f"{err.code()}: {err.details()} after {messages}"
    return messages


def fake_cloudlet(
    org: str = "e2eop",
    *,
    platform_type: str = "fake",
    location: loc_pb2.Loc | None = None,
    **env: str,
) -> cloudlet_pb2.Cloudlet:
    """A cloudlet of a fake platform with a unique name, fast steps and `env` on top."""
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization=org, name=f"c{uuid.uuid4().hex[:8]}"),
        platform_type=platform_type,
        location=location or loc_pb2.Loc(latitude=52.5, longitude=13.4),
        num_dynamic_ips=10,
    )
    cloudlet.env_var.update({"FAKE_STEP_DELAY": "0.01", **env})
    return cloudlet


def cloudlet_info(
    api: ControllerApi, key: cloudletkey_pb2.CloudletKey
) -> cloudlet_pb2.CloudletInfo:
    """The one CloudletInfo of a cloudlet."""
    [info] = api.infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(key=key), timeout=5)
    return info
