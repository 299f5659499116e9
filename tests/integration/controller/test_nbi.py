"""The CAMARA NBI (`services/controller/http/nbi.py`) against a real in-process Controller.

The NBI is mounted under `/edge-application-management/vwip` as the Controller's HTTP server
mounts it, and talks to the Controller only over its gRPC channel; the Controller runs on the
test's etcd and Redis, with the `InstCcrm` test CCRM doing the cluster and instance work.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    zone_pb2,
    zone_pb2_grpc,
)

from edge_cloud.objects import keys
from services.controller.http.nbi import make_nbi_app
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    APP_INST,
    InstCcrm,
    ccrm,
    clusters,
    create_app,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)

__all__ = ["ccrm", "harness"]

ROOT = "/edge-application-management/vwip"
TIMEOUT = 30  # seconds, for every HTTP call of these tests


@dataclass
class World:
    """A Controller with a zone holding one Ready cloudlet and one Kubernetes cluster."""

    ctl: Controller
    client: TestClient[web.Request, web.Application]
    org: str
    zone: zone_pb2.Zone
    cluster: clusterinst_pb2.ClusterInst


@pytest.fixture
async def world(harness: ControllerHarness, ccrm: InstCcrm) -> AsyncIterator[World]:
    ctl = await harness.start()
    org = unique_org()
    zone_key = cloudletkey_pb2.ZoneKey(organization=org, name="z1")
    await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone_pb2.Zone(key=zone_key), timeout=10)
    cloudlet = await ready_cloudlet(ctl, org, zone="z1")
    await put_flavor(ctl)
    request = new_cluster(org, cloudlet, "k8s", deployment="kubernetes", num_nodes=1)
    _, err = await collect(clusters(ctl).CreateClusterInst(request, timeout=30))
    assert err is None, err
    [stored_zone] = [
        z
        async for z in zone_pb2_grpc.ZoneApiStub(ctl.channel).ShowZone(
            zone_pb2.Zone(key=zone_key), timeout=10
        )
    ]
    [cluster] = [c async for c in clusters(ctl).ShowClusterInst(request, timeout=10)]
    parent = web.Application()
    parent.add_subapp(ROOT, make_nbi_app(ctl.channel, region="local", app_dns_root="nbi.net"))
    client = TestClient(TestServer(parent, host="127.0.0.1"))
    await client.start_server()
    try:
        yield World(ctl, client, org, stored_zone, cluster)
    finally:
        await client.close()


def manifest(org: str, name: str = "web_app", **changes: Any) -> dict[str, Any]:
    """A CONTAINER AppManifest with one TCP (external) and one UDP (internal) interface."""
    body: dict[str, Any] = {
        "name": name,
        "appProvider": org,
        "version": "1.0",
        "packageType": "CONTAINER",
        "appRepo": {"type": "PUBLICREPO", "imagePath": f"registry.example.com/{org}/web:1.0"},
        "componentSpec": [
            {
                "componentName": "frontend",
                "networkInterfaces": [
                    {
                        "interfaceId": "http443",
                        "protocol": "TCP",
                        "port": 443,
                        "visibilityType": "VISIBILITY_EXTERNAL",
                    },
                    {
                        "interfaceId": "stats",
                        "protocol": "UDP",
                        "port": 9000,
                        "visibilityType": "VISIBILITY_INTERNAL",
                    },
                ],
            }
        ],
        "requiredResources": {
            "infraKind": "kubernetes",
            "applicationResources": {
                "cpuPool": {
                    "numCPU": 1,
                    "memory": 512,
                    "topology": {"minNumberOfNodes": 1, "minNodeCpu": 1, "minNodeMemory": 512},
                }
            },
            "isStandalone": False,
            "version": "1.29",
        },
        "operatingSystem": {
            "architecture": "x86_64",
            "family": "UBUNTU",
            "version": "OS_VERSION_UBUNTU_2204_LTS",
            "license": "OS_LICENSE_TYPE_FREE",
        },
    }
    body.update(changes)
    return body


def app_inst_key(org: str, name: str) -> appinst_pb2.AppInstKey:
    return appinst_pb2.AppInstKey(name=name, organization=org)


async def call(
    world: World, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any, Any]:
    """(status, decoded JSON body or None, headers) of one NBI request."""
    async with world.client.request(method, ROOT + path, json=body, timeout=TIMEOUT, **kw) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None), resp.headers


def assert_error(body: Any, status: int, code: str, message: str) -> None:
    assert body == {"status": status, "code": code, "message": message}


async def test_app_and_instance_lifecycle(world: World) -> None:
    org = world.org
    submitted = manifest(org)
    status, body, headers = await call(
        world, "POST", "/apps", submitted, headers={"x-correlator": "corr-1"}
    )
    assert status == 201, body
    assert headers["x-correlator"] == "corr-1"
    app_id = body["appId"]
    stored = [
        a
        async for a in app_pb2_grpc.AppApiStub(world.ctl.channel).ShowApp(
            app_pb2.App(obj_id=app_id), timeout=10
        )
    ]
    assert [(a.deployment, a.access_ports) for a in stored] == [
        ("kubernetes", "tcp:443:tls:id=http443,udp:9000:intvis:id=stats")
    ]
    status, body, _ = await call(world, "GET", f"/apps/{app_id}")
    assert status == 200
    expected = copy.deepcopy(submitted)
    expected["appId"] = app_id
    assert body == {"appManifest": expected}  # what was submitted, read back whole

    status, listed, _ = await call(world, "GET", "/apps")
    assert status == 200
    assert listed == [expected]

    # instantiate on the zone's Kubernetes cluster
    request = {
        "name": "web1",
        "appId": app_id,
        "edgeCloudZoneId": world.zone.obj_id,
        "kubernetesClusterRef": world.cluster.obj_id,
    }
    status, info, headers = await call(world, "POST", "/appinstances", request)
    assert status == 202, info
    inst_id = info["appInstanceId"]
    assert headers["Location"] == f"{ROOT}/appinstances/{inst_id}"
    stored_inst = world.ctl.sync.caches.get(APP_INST, keys.key_string(app_inst_key(org, "web1")))
    assert stored_inst is not None
    assert stored_inst.state == common_pb2.READY
    assert inst_id == stored_inst.obj_id
    assert stored_inst.uri  # the external port gives it a name
    assert info == {
        "name": "web1",
        "appId": app_id,
        "appInstanceId": inst_id,
        "appProvider": org,
        "status": "ready",
        "componentEndpointInfo": [
            {
                "interfaceId": p.id,
                "accessPoints": {"port": p.public_port, "fqdn": p.fqdn_prefix + stored_inst.uri},
            }
            for p in stored_inst.mapped_ports
        ],
        "edgeCloudZoneId": world.zone.obj_id,
        "kubernetesClusterRef": world.cluster.obj_id,
    }
    assert sorted(e["interfaceId"] for e in info["componentEndpointInfo"]) == [
        "http443",
        "stats",
    ]

    status, one, _ = await call(world, "GET", f"/appinstances/{inst_id}")
    assert (status, one) == (200, info)
    status, by_app, _ = await call(world, "GET", f"/appinstances?appId={app_id}")
    assert (status, by_app) == (200, [info])
    status, by_id, _ = await call(world, "GET", f"/appinstances?appInstanceId={inst_id}")
    assert (status, by_id) == (200, [info])
    status, elsewhere, _ = await call(world, "GET", "/appinstances?region=other")
    assert (status, elsewhere) == (200, [])

    # the same instance again: the Controller's ALREADY_EXISTS is a 409
    status, body, _ = await call(world, "POST", "/appinstances", request)
    assert status == 409
    assert body["code"] == "Conflict"
    assert "web1" in body["message"]

    # an App with an instance cannot go: FAILED_PRECONDITION is a 409 with the Controller's text
    status, body, _ = await call(world, "DELETE", f"/apps/{app_id}")
    assert status == 409, body
    assert body["status"] == 409
    assert body["message"] == "Application in use by static AppInst " + keys.key_string(
        app_inst_key(org, "web1")
    )

    status, body, _ = await call(world, "DELETE", f"/appinstances/{inst_id}")
    assert (status, body) == (202, None)
    assert world.ctl.sync.caches.get(APP_INST, keys.key_string(app_inst_key(org, "web1"))) is None
    status, body, _ = await call(world, "GET", f"/appinstances/{inst_id}")
    assert_error(body, 404, "Not Found", f"app instance {inst_id} not found")
    assert status == 404
    status, body, _ = await call(world, "DELETE", f"/appinstances/{inst_id}")
    assert status == 404

    status, body, _ = await call(world, "DELETE", f"/apps/{app_id}")
    assert (status, body) == (202, None)
    status, body, _ = await call(world, "GET", f"/apps/{app_id}")
    assert status == 404
    assert_error(body, 404, "Not Found", f"app {app_id} not found")
    status, listed, _ = await call(world, "GET", "/apps")
    assert (status, listed) == (200, [])


async def test_zones_and_clusters(world: World) -> None:
    zone = world.zone
    expected_zone = {
        "edgeCloudZoneId": zone.obj_id,
        "edgeCloudZoneName": "z1",
        "edgeCloudZoneStatus": "active",  # its cloudlet is Ready
        "edgeCloudProvider": world.org,
        "edgeCloudRegion": "local",
    }
    status, zones, _ = await call(world, "GET", "/edge-cloud-zones")
    assert (status, zones) == (200, [expected_zone])
    status, zones, _ = await call(world, "GET", "/edge-cloud-zones?status=active")
    assert (status, zones) == (200, [expected_zone])
    status, zones, _ = await call(world, "GET", "/edge-cloud-zones?status=inactive")
    assert (status, zones) == (200, [])
    status, zones, _ = await call(world, "GET", "/edge-cloud-zones?region=elsewhere")
    assert (status, zones) == (200, [])
    # a zone without cloudlets has nothing reporting on it
    empty = cloudletkey_pb2.ZoneKey(organization=world.org, name="z0")
    await zone_pb2_grpc.ZoneApiStub(world.ctl.channel).CreateZone(
        zone_pb2.Zone(key=empty), timeout=10
    )
    status, zones, _ = await call(world, "GET", "/edge-cloud-zones?status=unknown")
    assert status == 200
    assert [(z["edgeCloudZoneName"], z["edgeCloudZoneStatus"]) for z in zones] == [
        ("z0", "unknown")
    ]
    status, body, _ = await call(world, "GET", "/edge-cloud-zones?status=sleepy")
    assert status == 400
    assert_error(
        body, 400, "Bad Request", "status must be one of active, inactive, unknown, not 'sleepy'"
    )

    expected_cluster = {
        "clusterRef": world.cluster.obj_id,
        "name": "k8s",
        "provider": world.org,
        "edgeCloudZoneId": zone.obj_id,
    }
    status, listed, _ = await call(world, "GET", "/clusters")
    assert (status, listed) == (200, [expected_cluster])
    status, listed, _ = await call(world, "GET", f"/clusters?clusterRef={world.cluster.obj_id}")
    assert (status, listed) == (200, [expected_cluster])
    status, listed, _ = await call(world, "GET", "/clusters?clusterRef=nope")
    assert (status, listed) == (200, [])


async def test_apps_made_through_grpc_read_as_manifests(world: World) -> None:
    # a Docker App has no CAMARA package type; ports without ids get <PROTO><port>
    await create_app(world.ctl, world.org, "plain", access_ports="tcp:80,udp:5000:intvis")
    # VM images: QCOW2 and OVA have CAMARA names, OVF has none (and must not break the list)
    for name, image_type, ext in [
        ("vmq", app_pb2.IMAGE_TYPE_QCOW, "qcow2"),
        ("vmo", app_pb2.IMAGE_TYPE_OVA, "ova"),
        ("vmf", app_pb2.IMAGE_TYPE_OVF, "ovf"),
    ]:
        await create_app(
            world.ctl,
            world.org,
            name,
            deployment="vm",
            image_type=image_type,
            image_path=f"https://images.example.com/{name}.{ext}#md5:{'a' * 32}",
        )
    status, listed, _ = await call(world, "GET", "/apps")
    assert status == 200
    assert [(a["name"], a["packageType"]) for a in listed] == [
        ("plain", ""),
        ("vmf", ""),
        ("vmo", "OVA"),
        ("vmq", "QCOW2"),
    ]
    app = listed[0]
    assert app["requiredResources"] is None
    assert app["componentSpec"] == [
        {
            "componentName": "plain",
            "networkInterfaces": [
                {
                    "interfaceId": "TCP80",
                    "protocol": "TCP",
                    "port": 80,
                    "visibilityType": "VISIBILITY_EXTERNAL",
                },
                {
                    "interfaceId": "UDP5000",
                    "protocol": "UDP",
                    "port": 5000,
                    "visibilityType": "VISIBILITY_INTERNAL",
                },
            ],
        }
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"packageType": None}, "packageType is required"),
        (
            {"packageType": "ZIP"},
            "packageType must be one of QCOW2, OVA, CONTAINER, HELM, not 'ZIP'",
        ),
        ({"name": 7}, "name must be a string"),
        ({"appRepo": {"type": "PUBLICREPO"}}, "appRepo.imagePath is required"),
        (
            {"appRepo": {"type": "OTHER", "imagePath": "x"}},
            "appRepo.type must be one of PRIVATEREPO, PUBLICREPO, not 'OTHER'",
        ),
        ({"componentSpec": []}, "componentSpec must hold exactly one component, not 0"),
        (
            {"requiredResources": {"infraKind": "virtualMachine", "numCPU": 1, "memory": 1}},
            "vm resources not handled yet",
        ),
        (
            {
                "requiredResources": {
                    "infraKind": "kubernetes",
                    "isStandalone": False,
                    "applicationResources": {},
                    "addons": {"ingress": True},
                }
            },
            "kubernetes resources addons not supported yet",
        ),
    ],
)
async def test_submit_app_refuses_bad_manifests(
    world: World, change: dict[str, Any], message: str
) -> None:
    body = manifest(world.org)
    for name, value in change.items():
        if value is None:
            del body[name]
        else:
            body[name] = value
    status, reply, _ = await call(world, "POST", "/apps", body)
    assert status == 400
    assert_error(reply, 400, "Bad Request", message)


async def test_error_paths(world: World) -> None:
    org = world.org
    iface = manifest(org)["componentSpec"][0]["networkInterfaces"][0]
    for bad, message in [
        (
            {"protocol": "ANY"},
            "componentSpec[0].networkInterfaces[0]: protocol ANY is not supported, give TCP or UDP",
        ),
        (
            {"port": 70000},
            "componentSpec[0].networkInterfaces[0].port must be between 1 and 65535, not 70000",
        ),
        (
            {"interfaceId": "a:b"},
            "componentSpec[0].networkInterfaces[0].interfaceId 'a:b' must "
            "start with a letter and hold at most 32 letters, digits, '_' or '-'",
        ),
    ]:
        body = manifest(org)
        body["componentSpec"][0]["networkInterfaces"] = [{**iface, **bad}]
        status, reply, _ = await call(world, "POST", "/apps", body)
        assert (status, reply) == (400, {"status": 400, "code": "Bad Request", "message": message})

    # not JSON, or not an object
    async with world.client.post(ROOT + "/apps", data=b"{nope", timeout=TIMEOUT) as resp:
        assert resp.status == 400
        reply = await resp.json()
        assert reply["message"].startswith("the request body is not valid JSON")
    for raw in (b"\xff\xfe{", b""):
        async with world.client.post(ROOT + "/apps", data=raw, timeout=TIMEOUT) as resp:
            assert resp.status == 400
            reply = await resp.json()
        expected = "the request body is empty; send a JSON object"
        assert reply["message"].startswith(
            expected if not raw else "the request body is not valid JSON"
        )
    status, reply, _ = await call(world, "POST", "/apps", [1, 2])
    assert_error(reply, 400, "Bad Request", "the request body must be a JSON object")

    # the Controller's own validation comes back as a 400 with its text
    no_pools = manifest(org)
    no_pools["requiredResources"]["applicationResources"] = {}
    status, reply, _ = await call(world, "POST", "/apps", no_pools)
    assert_error(reply, 400, "Bad Request", "invalid KubernetesResources, no pools specified")

    # duplicates are 409
    status, reply, _ = await call(world, "POST", "/apps", manifest(org))
    assert status == 201, reply
    app_id = reply["appId"]
    status, reply, _ = await call(world, "POST", "/apps", manifest(org))
    assert status == 409
    assert reply["code"] == "Conflict"
    assert "already exists" in reply["message"]

    # unknown ids: 404 in the path, 400 in a body
    status, reply, _ = await call(world, "DELETE", "/apps/nope")
    assert_error(reply, 404, "Not Found", "app nope not found")
    status, reply, _ = await call(world, "GET", "/appinstances?appId=nope")
    assert_error(reply, 404, "Not Found", "app ID nope not found")
    base = {"name": "i1", "appId": app_id, "edgeCloudZoneId": world.zone.obj_id}
    for change, message in [
        ({"appId": "nope"}, "app ID nope not found"),
        ({"edgeCloudZoneId": "nope"}, "zone ID nope not found"),
        ({"kubernetesClusterRef": "nope"}, "cluster ID nope not found"),
        ({"name": ""}, "name must not be empty"),
        ({"kubernetesClusterRef": 3}, "kubernetesClusterRef must be a non-empty string when given"),
    ]:
        status, reply, _ = await call(world, "POST", "/appinstances", {**base, **change})
        assert (status, reply) == (400, {"status": 400, "code": "Bad Request", "message": message})
    status, reply, _ = await call(world, "POST", "/appinstances", {"appId": app_id})
    assert_error(reply, 400, "Bad Request", "name is required")

    # unknown routes and methods keep the CAMARA error body
    status, reply, headers = await call(world, "GET", "/nothing", headers={"x-correlator": "c2"})
    assert status == 404
    assert reply["status"] == 404
    assert reply["code"] == "Not Found"
    assert headers["x-correlator"] == "c2"
    status, reply, _ = await call(world, "PUT", "/apps")
    assert status == 405
    assert reply["code"] == "Method Not Allowed"


async def test_helm_manifest_reads_back(world: World) -> None:
    body = manifest(world.org, name="chart_app", packageType="HELM")
    del body["operatingSystem"]
    body["appRepo"] = {
        "type": "PRIVATEREPO",
        "imagePath": "https://helm.github.io/examples:examples/hello-world",
    }
    status, reply, _ = await call(world, "POST", "/apps", body)
    assert status == 201, reply
    status, got, _ = await call(world, "GET", f"/apps/{reply['appId']}")
    assert (status, got) == (200, {"appManifest": {**body, "appId": reply["appId"]}})


async def test_unreachable_controller_is_503() -> None:
    # a port that was free a moment ago: nothing answers there
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    app = make_nbi_app(channel, region="local", app_dns_root="nbi.net")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/apps", timeout=TIMEOUT)
        assert resp.status == 503
        reply = await resp.json()
    await channel.close()
    assert reply["status"] == 503
    assert reply["code"] == "Service Unavailable"
    assert reply["message"]


async def test_instance_create_failure_reaches_the_caller(world: World, ccrm: InstCcrm) -> None:
    status, reply, _ = await call(world, "POST", "/apps", manifest(world.org))
    assert status == 201, reply
    ccrm.fail_app_create = "out of floating IPs"
    request = {
        "name": "doomed",
        "appId": reply["appId"],
        "edgeCloudZoneId": world.zone.obj_id,
        "kubernetesClusterRef": world.cluster.obj_id,
    }
    status, body, _ = await call(world, "POST", "/appinstances", request)
    # the platform's FAILED_PRECONDITION, with its words, as a CAMARA error
    assert status == 409, body
    assert body["code"] == "Conflict"
    assert "out of floating IPs" in body["message"]
    # the Controller undid the failed create: nothing is left to list
    status, listed, _ = await call(world, "GET", "/appinstances")
    assert (status, listed) == (200, [])


async def test_instance_without_cluster_is_placed_by_the_controller(world: World) -> None:
    status, reply, _ = await call(world, "POST", "/apps", manifest(world.org))
    assert status == 201, reply
    request = {"name": "placed", "appId": reply["appId"], "edgeCloudZoneId": world.zone.obj_id}
    status, info, _ = await call(world, "POST", "/appinstances", request)
    assert status == 202, info
    assert info["status"] == "ready"
    assert info["edgeCloudZoneId"] == world.zone.obj_id
    # the Controller chose the provider's own Kubernetes cluster in the zone
    assert info["kubernetesClusterRef"] == world.cluster.obj_id
