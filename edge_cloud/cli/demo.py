"""The `make run` demo: load a world through the Controller, then ask the DME as a device would.

It drives the platform only through its public doors (`edge apply`, the DME's gRPC API and the
Controller's HTTP listener), so a demo that works is evidence that the daemons work together,
not a special code path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
)
from rich.console import Console

FIND_TIMEOUT = 30.0
REST_TIMEOUT = 10.0
GATEWAY = "/edgeproto/v1"
NBI = "/edge-application-management/vwip"


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
        f"{reply.cloudlet_location.longitude:.4f})",
        soft_wrap=True,
    )
    return True


def _http(url: str, body: dict[str, Any] | None = None) -> str:
    """One request (POST with a JSON body, else GET); the reply's text, or OSError on failure.

    The standard library is enough for two requests, and keeps the demo free of an event loop.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is built from a loopback port
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=REST_TIMEOUT) as reply:  # noqa: S310
        text: str = reply.read().decode()
    return text


def show_rest(rest: str, console: Console) -> bool:
    """Read the demo world back over the Controller's HTTP listener, as a REST client would.

    One call through the grpc-gateway translation (`POST /edgeproto/v1/show/flavor`, which
    answers one `{"result": ...}` line per object) and one through the CAMARA NBI
    (`GET .../edge-cloud-zones`), so `make run` shows both front ends answering from the same
    objects `edge apply` made over gRPC.
    """
    base = f"http://{rest}"
    try:
        lines = _http(f"{base}{GATEWAY}/show/flavor", {}).splitlines()
        zones = json.loads(_http(f"{base}{NBI}/edge-cloud-zones"))
        flavors = [json.loads(line)["result"] for line in lines if line.strip()]
    except (OSError, ValueError, KeyError) as err:  # urllib's errors are OSErrors
        console.print(f"[red]REST on {rest}: {err}[/]")
        return False
    shown = ", ".join(
        f"{f['key']['name']} {f.get('vcpus', '0')}vcpu/{f.get('ram', '0')}MB/{f.get('disk', '0')}GB"
        for f in flavors
    )
    # soft_wrap: one line each however narrow the console, for whoever greps the output
    console.print(
        f"[bold]REST[/] POST {base}{GATEWAY}/show/flavor: {shown or 'none'}", soft_wrap=True
    )
    places = ", ".join(f"{z['edgeCloudZoneName']} ({z['edgeCloudZoneStatus']})" for z in zones)
    console.print(
        f"[bold]REST[/] GET {base}{NBI}/edge-cloud-zones: {places or 'none'}", soft_wrap=True
    )
    return True


def run(
    world: Path, controller: str, dme: str, console: Console, *, rest: str | None = None
) -> bool:
    """Load the world, show a device finding its nearest instance, then read it back over REST.

    Args:
        world: The world file for `edge apply`.
        controller: The Controller's gRPC address.
        dme: The DME's gRPC address.
        console: Where the demo's lines go.
        rest: The Controller's HTTP listener (`host:port`), or None when it is off.

    Returns:
        Whether every step worked.
    """
    if not (load_world(world, controller, console) and find_cloudlet(dme, POTSDAM, console)):
        return False
    if rest is None:
        console.print("the Controller's HTTP listener is off (--http-addr ''); no REST calls")
        return True
    return show_rest(rest, console)
