"""The Controller's REST gateway at /edgeproto/v1, against a real Controller daemon.

One `ControllerDaemon` runs in process on the test's etcd namespace and Redis database with
`--http-addr 127.0.0.1:0`; the tests talk HTTP to it (aiohttp client) and compare with what
the same call answers over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from edgeproto import cloudlet_pb2, common_pb2, flavor_pb2, flavor_pb2_grpc

from edge_cloud.localservers import ServerProcess
from edge_cloud.redis import Redis
from edge_cloud.server import serve
from edge_cloud.store import EtcdStore
from services.controller._engine import Txn
from services.controller._tracked import TrackedRuntime
from services.controller.api import add_all
from services.controller.config import ControllerConfig
from services.controller.daemon import ControllerDaemon
from services.controller.http.gateway import NO_REST, PATHS, PREFIX, routes, unrouted
from services.controller.http.server import NBI_ROOT
from tests.integration.controller.cloudlet_harness import FakeCcrm, ccrm_server
from tests.unit.edge_cloud.test_api import write_pki

START_TIMEOUT = 20.0


@dataclass
class Running:
    """The daemon, its HTTP base URL and a gRPC channel to its API."""

    daemon: ControllerDaemon
    url: str
    channel: grpc.aio.Channel
    session: aiohttp.ClientSession

    async def post(self, path: str, body: Any = None, *, data: str | None = None) -> Reply:
        """POST JSON (or raw `data`) to the gateway; the reply with its body decoded."""
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": body}
        async with self.session.post(f"{self.url}{PREFIX}{path}", **kwargs) as response:
            return Reply(response.status, response.content_type, await response.text())


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    content_type: str
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    def lines(self) -> list[dict[str, Any]]:
        """The objects of a streamed reply, one per line."""
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]


StartController = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_controller(
    etcd_store: EtcdStore,
    etcd_server: ServerProcess,
    redis_client: Redis,
    redis_server: ServerProcess,
) -> AsyncIterator[StartController]:
    """Start the daemon (config overrides as keywords); stopped at the end of the test."""
    db = int((await redis_client.client_info())["db"])
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Running:
            config = ControllerConfig(
                **{
                    "api_addr": "127.0.0.1:0",
                    "notify_addr": "127.0.0.1:0",
                    "http_addr": "127.0.0.1:0",
                    "metrics_addr": None,
                    "etcd_urls": (etcd_server.client_url,),
                    "etcd_namespace": etcd_store.namespace,
                    "redis_standalone_addr": f"{redis_server.client_url}/{db}",
                    "test_mode": True,
                    "shutdown_grace": 1.0,
                    **overrides,
                }
            )
            return await stack.enter_async_context(running(ControllerDaemon(config)))

        yield start


@contextlib.asynccontextmanager
async def running(daemon: ControllerDaemon) -> AsyncIterator[Running]:
    """Serve `daemon` until the block ends; with a client session and a gRPC channel."""
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(daemon, ready, stop=stop))
    try:
        async with asyncio.timeout(START_TIMEOUT):
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if task.done():
            task.result()  # serve() failed before it was ready: show why
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{daemon.ports['api']}")
        async with aiohttp.ClientSession() as session:
            yield Running(daemon, f"http://127.0.0.1:{daemon.ports['http']}", channel, session)
        await channel.close()
    finally:
        stop.set()
        async with asyncio.timeout(START_TIMEOUT):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def controller(start_controller: StartController) -> Running:
    return await start_controller()


async def put_features(ctl: Running) -> None:
    """Register the `fakeccrm` platform, as a CCRM does when it starts."""
    features = cloudlet_pb2.PlatformFeatures(platform_type="fakeccrm", node_type="ccrm")

    def put(txn: Txn) -> None:
        txn.put(features)

    await ctl.daemon.runtime.engine.apply(put)


def unique(prefix: str) -> str:
    """Names unique per test: Redis pub/sub channels are shared by every database."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def registered_services() -> list[str]:
    """The services the daemon registers, from the same `add_all` it calls."""
    return add_all(grpc.aio.server(), TrackedRuntime(ControllerConfig()))


def method_count(full_name: str) -> int:
    module, _ = PATHS.get(full_name.removeprefix("edgeproto."), ("", {}))
    if not module:
        return len(NO_REST[full_name.removeprefix("edgeproto.")])
    service_name = full_name.removeprefix("edgeproto.")
    descriptor = importlib.import_module(f"edgeproto.{module}").DESCRIPTOR
    return len(descriptor.services_by_name[service_name].methods)


# --- routes ------------------------------------------------------------------------------


async def test_every_registered_method_has_a_route(controller: Running) -> None:
    services = registered_services()
    assert unrouted(services) == []
    found = list(routes(services))
    by_method = {f"{r.service.removeprefix('edgeproto.')}.{r.method.name}": r for r in found}
    assert len(by_method) == len(found)  # one route per method
    assert len({r.path for r in found}) == len(found)  # no path serves two methods
    exempt = [
        f"{name}.{method}"
        for name in services
        for method in NO_REST.get(name.removeprefix("edgeproto."), ())
    ]
    assert len(found) + len(exempt) == sum(method_count(name) for name in services)
    assert not set(exempt) & set(by_method)
    # facts of the original's annotations, typos included
    assert by_method["FlavorApi.CreateFlavor"].path == "/create/flavor"
    assert by_method["CloudletApi.DeleteCloudlet"].path == "/delete/cloudet"
    assert by_method["AutoProvPolicyApi.RemoveAutoProvPolicyZone"].path == (
        "/rm/autoprovpolicyzone"
    )
    assert by_method["ResTagTableApi.ShowResTagTable"].path == "/show/gputagtbl"
    assert "CloudletRefsApi.ShowCloudletRefs" not in by_method
    # every route is served by the running daemon: a GET reaches it (501, nothing called)
    for route in found:
        async with controller.session.get(f"{controller.url}{PREFIX}{route.path}") as response:
            body = await response.json()
        assert (response.status, body["code"]) == (501, 12), route.path
        assert body["message"] == "Method Not Allowed"


async def test_unknown_path_bad_json_and_outside_the_prefix(controller: Running) -> None:
    reply = await controller.post("/create/nosuchthing", {})
    assert (reply.status, reply.json()) == (404, {"code": 5, "message": "Not Found", "details": []})
    reply = await controller.post("/create/flavor", data='{"key": ')
    assert reply.status == 400
    assert reply.json()["code"] == 3
    assert reply.json()["message"].startswith("invalid JSON body: ")
    reply = await controller.post("/show/flavor", data="[1, 2]")
    assert (reply.status, reply.json()["code"]) == (400, 3)
    assert reply.json()["message"] == "cannot unmarshal list into edgeproto.Flavor"
    async with controller.session.post(f"{controller.url}/create/flavor", json={}) as response:
        assert response.status == 404  # only /edgeproto/v1 is the gateway's


async def test_grpc_timeout_header_sets_the_deadline(controller: Running) -> None:
    url = f"{controller.url}{PREFIX}/show/flavor"
    async with controller.session.post(url, json={}, headers={"Grpc-Timeout": "5x"}) as response:
        assert response.status == 400
        assert (await response.json())["message"] == (
            "invalid grpc-timeout: 5x (want an integer and a unit H, M, S, m, u or n)"
        )
    async with controller.session.post(url, json={}, headers={"Grpc-Timeout": "1n"}) as response:
        assert response.status == 504  # the stream failed before any result
        error = json.loads(await response.text())["error"]
        assert (error["grpc_code"], error["http_status"]) == (4, "Gateway Timeout")
    body = {"key": {"name": unique("late")}, "ram": "1", "vcpus": "1", "disk": "1"}
    url = f"{controller.url}{PREFIX}/create/flavor"
    async with controller.session.post(url, json=body, headers={"Grpc-Timeout": "1n"}) as response:
        assert (response.status, (await response.json())["code"]) == (504, 4)
    body["key"] = {"name": unique("intime")}
    async with controller.session.post(url, json=body, headers={"Grpc-Timeout": "10S"}) as response:
        assert response.status == 200


async def test_the_nbi_is_served_on_the_same_port(controller: Running) -> None:
    url = f"{controller.url}{NBI_ROOT}/edge-cloud-zones"
    async with controller.session.get(url) as response:
        assert (response.status, await response.json()) == (200, [])
    async with controller.session.get(f"{controller.url}{NBI_ROOT}/apps/nosuchapp") as response:
        assert response.status == 404


# --- unary and streamed calls ------------------------------------------------------------


async def test_flavor_create_show_delete(controller: Running) -> None:
    small, large = unique("small"), unique("large")
    for name, ram in ((small, 1024), (large, 8192)):
        body = {"key": {"name": name}, "ram": str(ram), "vcpus": 2, "disk": 10}
        reply = await controller.post("/create/flavor", body)
        assert (reply.status, reply.content_type, reply.json()) == (200, "application/json", {})

    reply = await controller.post("/show/flavor", {})
    assert reply.status == 200
    shown = {line["result"]["key"]["name"]: line["result"] for line in reply.lines()}
    assert {small, large} <= set(shown)
    assert shown[large]["ram"] == "8192"  # uint64 as a string, proto field names
    assert shown[large]["vcpus"] == "2"

    reply = await controller.post("/show/flavor", {"key": {"name": small}})
    assert [line["result"]["key"]["name"] for line in reply.lines()] == [small]
    reply = await controller.post("/show/flavor", {"ram": 8192, "key": {}})
    assert large in [line["result"]["key"]["name"] for line in reply.lines()]
    assert small not in [line["result"]["key"]["name"] for line in reply.lines()]

    duplicate = await controller.post(
        "/create/flavor", {"key": {"name": small}, "ram": 1024, "vcpus": 2, "disk": 10}
    )
    assert duplicate.status == 409
    assert duplicate.json()["code"] == 6
    assert small in duplicate.json()["message"]
    assert "already exists" in duplicate.json()["message"]

    reply = await controller.post("/delete/flavor", {"key": {"name": small}})
    assert (reply.status, reply.json()) == (200, {})
    gone = await controller.post("/delete/flavor", {"key": {"name": small}})
    assert gone.status == 404
    assert gone.json()["code"] == 5
    assert "not found" in gone.json()["message"]
    reply = await controller.post("/show/flavor", {"key": {"name": small}})
    assert (reply.status, reply.text) == (200, "")  # an empty stream is an empty 200


async def test_validation_error_is_400_with_the_grpc_message(controller: Running) -> None:
    bad = {"key": {"name": unique("bad")}, "ram": "1024", "vcpus": "2", "opt_res_map": 5}
    reply = await controller.post("/create/flavor", bad)
    assert (reply.status, reply.json()["code"]) == (400, 3)  # a map given a number

    nameless = {"ram": "1024", "vcpus": "2", "disk": "10"}
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await flavor_pb2_grpc.FlavorApiStub(controller.channel).CreateFlavor(
            flavor_pb2.Flavor(ram=1024, vcpus=2, disk=10), timeout=10
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await controller.post("/create/flavor", nameless)
    assert reply.status == 400
    assert reply.json() == {"code": 3, "message": raised.value.details(), "details": []}

    reply = await controller.post(
        "/create/cloudlet", {"key": {"name": "x", "organization": "y"}, "platform_type": 7}
    )
    assert reply.status == 400  # the body does not decode: refused before any call
    assert reply.json()["code"] == 3
    assert "platform_type" in reply.json()["message"]

    reply = await controller.post("/create/cloudlet", {"key": {"name": "x"}})
    assert reply.status == 400  # a stream that fails before any result: the error's status
    (line,) = reply.lines()
    assert line["error"]["grpc_code"] == 3
    assert line["error"]["http_code"] == 400
    assert line["error"]["http_status"] == "Bad Request"
    assert line["error"]["message"]


async def test_streamed_cloudlet_create_and_delete(controller: Running) -> None:
    await put_features(controller)
    key = {"organization": unique("oper"), "name": "c1"}
    body = {
        "key": key,
        "location": {"latitude": 48.86, "longitude": 2.35},
        "num_dynamic_ips": 10,
        "platform_type": "fakeccrm",
        "crm_override": "IgnoreCrm",  # the original's CamelCase spelling is accepted too
    }
    reply = await controller.post("/create/cloudlet", body)
    assert (reply.status, reply.content_type) == (200, "application/json")
    lines = reply.lines()
    assert lines, reply.text
    assert all(set(line) == {"result"} for line in lines)
    assert [line["result"]["message"] for line in lines] == [
        "Setting physicalname to match cloudlet name"
    ]

    reply = await controller.post("/show/cloudlet", {"key": key})
    (shown,) = reply.lines()
    assert shown["result"]["state"] == "READY"
    assert shown["result"]["location"] == {"latitude": 48.86, "longitude": 2.35}

    # the Controller streams a line before it finds the duplicate: 200, then the error chunk
    again = await controller.post("/create/cloudlet", body)
    assert again.status == 200
    *results, last = again.lines()
    assert [line["result"]["message"] for line in results] == [
        "Setting physicalname to match cloudlet name"
    ]
    assert last["error"]["grpc_code"] == 6
    assert last["error"]["http_code"] == 409
    assert last["error"]["http_status"] == "Conflict"
    assert last["error"]["message"] == (
        f'Cloudlet key {{"organization":"{key["organization"]}","name":"c1"}} already exists'
    )
    assert not again.text.endswith("\n")  # grpc-gateway writes no delimiter after the error

    delete = {"key": key, "crm_override": common_pb2.IGNORE_CRM}
    reply = await controller.post("/delete/cloudet", delete)  # the original's path
    assert reply.status == 200
    assert [line["result"]["message"] for line in reply.lines()] == [
        "Deleted Cloudlet successfully"
    ]
    assert (await controller.post("/show/cloudlet", {"key": key})).text == ""


class _Seen(logging.Handler):
    """Sets `event` when a record containing `text` is logged (same thread, same loop)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.text in self.messages[-1]:
            self.event.set()


@pytest.fixture
async def slow_ccrm() -> AsyncIterator[tuple[FakeCcrm, str]]:
    """A CCRM that streams "Creating cloudlet", then takes 1.5 s.

    Requested before `start_controller`, it outlives the Controller, which can then finish
    the operations it still runs at shutdown instead of waiting out its grace period.
    """
    ccrm = FakeCcrm(hang=1.5)
    async with ccrm_server(ccrm) as addr:
        yield ccrm, addr


async def test_a_client_leaving_mid_stream_is_not_a_server_error(
    slow_ccrm: tuple[FakeCcrm, str], start_controller: StartController
) -> None:
    # the HTTP listener cancels the handler of a client that disconnects: the gateway's gRPC
    # call ends then (CANCELLED on the API), while the CCRM still works, not at the next
    # write 1.5 s later; and nothing is logged as an error
    ccrm, ccrm_addr = slow_ccrm
    cancelled = _Seen("/edgeproto.CloudletApi/CreateCloudlet CANCELLED")
    errors = _Seen("")
    errors.setLevel(logging.WARNING)
    watched = [
        (logging.getLogger("edge_cloud.access"), cancelled),
        (logging.getLogger("services.controller.http.gateway"), errors),
        (logging.getLogger("aiohttp.server"), errors),  # "Error handling request"
    ]
    for logger, handler in watched:
        logger.addHandler(handler)
    access_level = watched[0][0].level
    watched[0][0].setLevel(logging.INFO)
    try:
        ctl = await start_controller(platform_service_addrs=(f"ccrm={ccrm_addr}",))
        await put_features(ctl)
        body = {
            "key": {"organization": unique("oper"), "name": "c1"},
            "location": {"latitude": 1, "longitude": 2},
            "num_dynamic_ips": 10,
            "platform_type": "fakeccrm",
        }
        async with asyncio.timeout(10):
            async with aiohttp.ClientSession() as session:
                response = await session.post(f"{ctl.url}{PREFIX}/create/cloudlet", json=body)
                assert response.status == 200
                while True:  # bounded by the timeout: the CCRM answers at once
                    line = json.loads(await response.content.readline())
                    if line["result"]["message"] == "Creating cloudlet":
                        break
                assert not ccrm.finished.is_set()  # the create is still running
                left = asyncio.get_running_loop().time()
                response.close()  # the client goes away
            await cancelled.event.wait()
            took = asyncio.get_running_loop().time() - left
    finally:
        for logger, handler in watched:
            logger.removeHandler(handler)
        watched[0][0].setLevel(access_level)
    assert took < 1.0, f"the gateway's call ended {took:.2f}s after the client left"
    assert errors.messages == []


async def test_the_gateway_dials_an_mtls_api_with_the_daemon_certificate(
    start_controller: StartController, tmp_path: Path
) -> None:
    server_tls, _ = write_pki(tmp_path / "pki")
    ctl = await start_controller(
        tls_cert=server_tls.cert, tls_key=server_tls.key, tls_ca=server_tls.ca
    )
    name = unique("tls")
    body = {"key": {"name": name}, "ram": "1024", "vcpus": "2", "disk": "10"}
    assert (await ctl.post("/create/flavor", body)).status == 200
    reply = await ctl.post("/show/flavor", {"key": {"name": name}})
    assert [line["result"]["key"]["name"] for line in reply.lines()] == [name]
