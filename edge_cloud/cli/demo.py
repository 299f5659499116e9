"""The `make run` demo: load a world through the Controller, then ask the DME as a device would.

It drives the platform only through its public doors (`edge apply` and the DME's gRPC API),
so a demo that works is evidence that the daemons work together, not a special code path.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
)
from rich.console import Console

FIND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Device:
    """Where the demo's pretend phone stands, and which app it wants."""

    place: str
    latitude: float
    longitude: float
    org: str = "demo-dev"
    app: str = "hello-web"
    version: str = "1.0"


POTSDAM = Device("Potsdam", 52.3906, 13.0645)


def load_world(world: Path, controller: str, console: Console) -> bool:
    """`edge apply -f world` against the Controller; its progress lines go to the console."""
    console.print(f"[bold]loading the demo world[/] from {world}")
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "edge_cloud.cli", "apply", "--addr", controller, "-f", str(world)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in (result.stdout + result.stderr).splitlines():
        console.print(f"  {line}")
    return result.returncode == 0


def find_cloudlet(dme: str, device: Device, console: Console) -> bool:
    """Register as the demo app and ask for the nearest instance, until the DME knows it.

    The DME learns instances over notify, so right after `apply` it may still answer
    FIND_NOTFOUND; retrying for a bounded time shows the propagation instead of hiding it.
    """
    with grpc.insecure_channel(dme) as channel:
        stub = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
        deadline = time.monotonic() + FIND_TIMEOUT
        while True:
            session = stub.RegisterClient(
                session_pb2.RegisterClientRequest(
                    org_name=device.org, app_name=device.app, app_vers=device.version
                ),
                timeout=10,
            )
            reply = stub.FindCloudlet(
                app_client_pb2.FindCloudletRequest(
                    session_cookie=session.session_cookie,
                    gps_location=loc_pb2.Loc(latitude=device.latitude, longitude=device.longitude),
                ),
                timeout=10,
            )
            found = reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    status = app_client_pb2.FindCloudletReply.FindStatus.Name(reply.status)
    where = f"({device.latitude}, {device.longitude}), {device.place}"
    if not found:
        console.print(f"[red]FindCloudlet from {where}: {status}[/]")
        return False
    ports = ", ".join(f"{p.public_port}" for p in reply.ports)
    console.print(
        f"[bold]FindCloudlet[/] from {where}: [green]{status}[/] {reply.fqdn} "
        f"ports [{ports}] at ({reply.cloudlet_location.latitude:.4f}, "
        f"{reply.cloudlet_location.longitude:.4f})"
    )
    return True


def run(world: Path, controller: str, dme: str, console: Console) -> bool:
    """Load the world, then show a device finding its nearest instance."""
    return load_world(world, controller, console) and find_cloudlet(dme, POTSDAM, console)
