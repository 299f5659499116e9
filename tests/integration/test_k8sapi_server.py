"""The Kubernetes API test server, seen through the official client (kubernetes.aio).

Each verb, selectors, watches, each error code, the controller loop, TLS and auth. The
synchronous client and the subprocess mode are covered in test_k8sapi_process.py.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import aiohttp
import pytest
import yaml
from kubernetes.aio import client, config, watch
from kubernetes.aio.client.exceptions import ApiException

from tests.support.k8sapi import (
    ClusterBehaviour,
    KubeApiServer,
    eks_token_checker,
    eks_token_problem,
)
from tests.support.k8sapi.fixture import ServerFactory


async def api_client(server: KubeApiServer, **kubeconfig: Any) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config_from_dict(
        yaml.safe_load(server.kubeconfig(**kubeconfig)), client_configuration=cfg
    )
    return client.ApiClient(cfg)


@pytest.fixture
async def api(k8s_api_server: KubeApiServer) -> AsyncIterator[client.ApiClient]:
    async with await api_client(k8s_api_server) as c:
        yield c


def status_of(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status"
    assert body["code"] == err.status
    return body


async def until(predicate: Any, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def deployment(name: str, replicas: int = 2, image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }


# Discovery -------------------------------------------------------------------------------


async def test_discovery_documents_parse_in_the_client(api: client.ApiClient) -> None:
    version = await client.VersionApi(api).get_code()
    assert (version.major, version.minor, version.git_version) == ("1", "31", "v1.31.0")
    versions = await client.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]
    groups = await client.ApisApi(api).get_api_versions()
    assert [g.name for g in groups.groups] == ["apps", "networking.k8s.io"]
    core = {r.name: r for r in (await client.CoreV1Api(api).get_api_resources()).resources}
    assert core["pods"].namespaced
    assert not core["nodes"].namespaced
    assert core["nodes"].verbs == ["get", "list", "watch"]
    assert "deletecollection" in core["configmaps"].verbs
    assert core["namespaces"].short_names == ["ns"]
    assert "pods/status" in core
    apps = {r.name: r for r in (await client.AppsV1Api(api).get_api_resources()).resources}
    assert set(apps) >= {"deployments", "daemonsets", "statefulsets", "replicasets"}
    assert apps["deployments"].kind == "Deployment"
    group = await client.AppsApi(api).get_api_group()
    assert group.preferred_version.group_version == "apps/v1"


async def test_health_needs_no_token_but_the_api_does(k8s_api_server: KubeApiServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(k8s_api_server.url + path, ssl=False) as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
        async with http.get(k8s_api_server.url + "/api/v1/pods", ssl=False) as resp:
            assert resp.status == 401
            body = await resp.json()
            assert (body["reason"], body["code"]) == ("Unauthorized", 401)


# CRUD ------------------------------------------------------------------------------------


async def test_create_get_list_replace_delete_with_resource_versions(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "conf", "labels": {"a": "1"}}, "data": {"k": "v"}}
    )
    assert created.metadata.uid
    assert created.metadata.creation_timestamp
    assert created.metadata.namespace == "default"
    first_rv = int(created.metadata.resource_version)
    got = await core.read_namespaced_config_map("conf", "default")
    assert got.data == {"k": "v"}
    assert got.metadata.uid == created.metadata.uid
    got.data = {"k": "w"}
    replaced = await core.replace_namespaced_config_map("conf", "default", got)
    assert int(replaced.metadata.resource_version) > first_rv
    assert replaced.metadata.uid == created.metadata.uid
    listed = await core.list_namespaced_config_map("default", label_selector="a=1")
    assert [c.metadata.name for c in listed.items] == ["conf"]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)
    await core.delete_namespaced_config_map("conf", "default")
    with pytest.raises(ApiException) as err:
        await core.read_namespaced_config_map("conf", "default")
    assert err.value.status == 404
    assert status_of(err.value)["reason"] == "NotFound"
    assert status_of(err.value)["message"] == 'configmaps "conf" not found'


async def test_stale_resource_version_is_a_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    old = await core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    fresh = await core.read_namespaced_config_map("c", "default")
    fresh.data = {"x": "1"}
    await core.replace_namespaced_config_map("c", "default", fresh)
    old.data = {"x": "2"}
    with pytest.raises(ApiException) as err:
        await core.replace_namespaced_config_map("c", "default", old)
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(err.value)["message"]


async def test_generation_tracks_spec_changes_only(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    created = await apps.create_namespaced_deployment("default", deployment("gen", 1))
    assert created.metadata.generation == 1
    labelled = await apps.patch_namespaced_deployment(
        "gen", "default", {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled.metadata.generation == 1
    scaled = await apps.patch_namespaced_deployment("gen", "default", {"spec": {"replicas": 3}})
    assert scaled.metadata.generation == 2


async def test_three_patch_types(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    dep = deployment("patchme", 1)
    dep["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox:1"})
    await apps.create_namespaced_deployment("default", dep)
    # Strategic merge (the client's default for dicts): containers merge by name.
    patched = await apps.patch_namespaced_deployment(
        "patchme",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:2"}]}}}},
    )
    images = {c.name: c.image for c in patched.spec.template.spec.containers}
    assert images == {"main": "nginx:2", "side": "busybox:1"}
    # JSON merge patch replaces lists wholesale.
    merged = await apps.patch_namespaced_deployment(
        "patchme",
        "default",
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x:1"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in merged.spec.template.spec.containers] == ["only"]
    # JSON patch (a list body) applies operations in order.
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
        {"op": "test", "path": "/spec/replicas", "value": 3},
    ]
    jp = await apps.patch_namespaced_deployment("patchme", "default", ops)
    assert jp.spec.replicas == 3
    assert jp.metadata.labels["tier"] == "web"
    with pytest.raises(ApiException) as err:
        await apps.patch_namespaced_deployment(
            "patchme", "default", [{"op": "test", "path": "/spec/replicas", "value": 9}]
        )
    assert err.value.status == 422


async def test_patch_null_deletes_and_status_subresource(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "n", "labels": {"a": "1", "b": "2"}}}
    )
    patched = await core.patch_namespaced_config_map(
        "n", "default", {"metadata": {"labels": {"a": None}}}
    )
    assert patched.metadata.labels == {"b": "2"}
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment("st", 1))
    status = await apps.read_namespaced_deployment_status("st", "default")
    assert status.metadata.name == "st"
    # A main-resource write cannot change the status.
    ignored = await apps.patch_namespaced_deployment(
        "st", "default", {"status": {"replicas": 42}}, _content_type="application/merge-patch+json"
    )
    assert ignored.status.replicas != 42


async def test_delete_collection_and_propagation(
    k8s_api_server: KubeApiServer, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    for name, tier in (("a", "web"), ("b", "web"), ("c", "db")):
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    await core.delete_collection_namespaced_config_map("default", label_selector="tier=web")
    code, _ = await raw(k8s_api_server, "DELETE", "/api/v1/configmaps", b"")
    assert code == 405
    left = await core.list_namespaced_config_map("default", label_selector="tier")
    assert [c.metadata.name for c in left.items] == ["c"]
    apps = client.AppsV1Api(api)
    await apps.create_namespaced_deployment("default", deployment("orphans", 1))

    async def has_replica_set() -> bool:
        sets = await apps.list_namespaced_replica_set("default", label_selector="app=orphans")
        return bool(sets.items)

    await until(has_replica_set)
    await apps.delete_namespaced_deployment("orphans", "default", propagation_policy="Orphan")
    await asyncio.sleep(0.2)  # give the garbage collector a chance to (wrongly) act
    sets = await apps.list_namespaced_replica_set("default", label_selector="app=orphans")
    assert len(sets.items) == 1
    assert not sets.items[0].metadata.owner_references


async def test_generate_name_and_pagination(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    made = await core.create_namespaced_secret(
        "default", {"metadata": {"generateName": "tok-"}, "stringData": {"a": "b"}}
    )
    assert made.metadata.name.startswith("tok-")
    assert len(made.metadata.name) == 9
    assert made.data == {"a": base64.b64encode(b"b").decode()}
    assert made.type == "Opaque"
    for n in range(5):
        await core.create_namespaced_config_map("default", {"metadata": {"name": f"p{n}"}})
    page = await core.list_namespaced_config_map("default", limit=2, label_selector="!x")
    names = [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = await core.list_namespaced_config_map(
            "default", limit=2, label_selector="!x", _continue=page.metadata._continue
        )
        names += [c.metadata.name for c in page.items]
    assert [n for n in names if n.startswith("p")] == [f"p{n}" for n in range(5)]


async def test_pvc_binds_and_serviceaccount_exists(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "store"}})
    await core.create_namespaced_persistent_volume_claim(
        "store",
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )

    async def bound() -> bool:
        pvc = await core.read_namespaced_persistent_volume_claim("data", "store")
        return pvc.status.phase == "Bound"

    await until(bound)
    sa = await core.read_namespaced_service_account("default", "store")
    assert sa.metadata.namespace == "store"


# Selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", ["a"]),
        ("env==prod", ["a"]),
        ("env!=prod", ["b", "c"]),
        ("env in (prod,dev)", ["a", "b"]),
        ("env notin (prod)", ["b", "c"]),
        ("env", ["a", "b"]),
        ("!env", ["c"]),
        ("env,tier=web", ["a"]),
        ("env in (prod, dev),!tier", ["b"]),
    ],
)
async def test_label_selectors(api: client.ApiClient, selector: str, expected: list[str]) -> None:
    core = client.CoreV1Api(api)
    labels = {"a": {"env": "prod", "tier": "web"}, "b": {"env": "dev"}, "c": {"other": "x"}}
    for name, lbl in labels.items():
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": lbl}}
        )
    found = await core.list_namespaced_config_map("default", label_selector=selector)
    assert [c.metadata.name for c in found.items if c.metadata.name in labels] == expected


async def test_field_selectors_and_their_errors(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "other"}})
    for ns in ("default", "other"):
        await core.create_namespaced_config_map(ns, {"metadata": {"name": "same"}})
        await core.create_namespaced_config_map(ns, {"metadata": {"name": f"only-{ns}"}})
    everywhere = await core.list_config_map_for_all_namespaces(field_selector="metadata.name=same")
    assert sorted(c.metadata.namespace for c in everywhere.items) == ["default", "other"]
    one = await core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace=other,metadata.name!=same"
    )
    assert sorted(c.metadata.name for c in one.items) == ["kube-root-ca.crt", "only-other"]
    with pytest.raises(ApiException) as err:
        await core.list_namespaced_config_map("default", field_selector="data.k=v")
    assert err.value.status == 400
    assert status_of(err.value)["message"] == 'field label not supported: "data.k" for ConfigMap'
    with pytest.raises(ApiException) as err:
        await core.list_namespaced_config_map("default", label_selector="a in (b")
    assert err.value.status == 400


# Watch -----------------------------------------------------------------------------------


async def test_watch_streams_added_modified_deleted(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    start = await core.list_namespaced_config_map("default")
    events: list[tuple[str, str]] = []

    async def consume() -> None:
        async with watch.Watch() as w:
            async for event in w.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=start.metadata.resource_version,
                label_selector="w=1",
                timeout_seconds=5,
            ):
                events.append((event["type"], event["object"].metadata.name))
                if event["type"] == "DELETED":
                    return

    task = asyncio.create_task(consume())
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "x", "labels": {"w": "1"}}}
    )
    await core.create_namespaced_config_map("default", {"metadata": {"name": "skip"}})
    await core.patch_namespaced_config_map("x", "default", {"data": {"a": "b"}})
    await core.delete_namespaced_config_map("x", "default")
    await asyncio.wait_for(task, 5)
    assert events == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x")]


async def test_filtered_watch_sees_objects_enter_and_leave(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "m"}})
    start = await core.list_namespaced_config_map("default")
    await core.patch_namespaced_config_map("m", "default", {"metadata": {"labels": {"on": "1"}}})
    await core.patch_namespaced_config_map("m", "default", {"data": {"a": "b"}})
    await core.patch_namespaced_config_map("m", "default", {"metadata": {"labels": {"on": None}}})
    await core.patch_namespaced_config_map("m", "default", {"data": {"a": "c"}})
    async with watch.Watch() as w:
        seen = [
            (e["type"], e["object"].metadata.name)
            async for e in w.stream(
                core.list_namespaced_config_map,
                "default",
                label_selector="on=1",
                resource_version=start.metadata.resource_version,
                timeout_seconds=1,
            )
        ]
    assert seen == [("ADDED", "m"), ("MODIFIED", "m"), ("DELETED", "m")]


async def test_watch_without_resource_version_lists_then_times_out(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    seen = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with watch.Watch() as w:
        async for event in w.stream(core.list_namespace, timeout_seconds=1):
            seen.append((event["type"], event["object"].metadata.name))
    assert loop.time() - started < 3
    assert ("ADDED", "default") in seen
    assert ("ADDED", "kube-system") in seen


async def test_watch_from_expired_version_is_410(k8s_api_server_factory: ServerFactory) -> None:
    server = await k8s_api_server_factory()
    server.store._history = type(server.store._history)(maxlen=3)  # compact quickly
    async with await api_client(server) as api:
        core = client.CoreV1Api(api)
        for n in range(6):
            await core.create_namespaced_config_map("default", {"metadata": {"name": f"c{n}"}})

        async def drain() -> None:
            async with watch.Watch() as w:
                async for _ in w.stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version="1",
                    timeout_seconds=2,
                ):
                    pass

        with pytest.raises(ApiException) as err:
            await drain()
        assert err.value.status == 410


# Errors ----------------------------------------------------------------------------------


async def test_already_exists_is_409(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "twice"}})
    with pytest.raises(ApiException) as err:
        await core.create_namespace({"metadata": {"name": "twice"}})
    assert err.value.status == 409
    body = status_of(err.value)
    assert (body["reason"], body["details"]["kind"]) == ("AlreadyExists", "namespaces")


@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        ({**deployment("x"), "metadata": {"name": "Bad_Name"}}, "metadata.name"),
        (
            {
                **deployment("x"),
                "spec": {**deployment("x")["spec"], "selector": {"matchLabels": {"app": "y"}}},
            },
            "spec.template.metadata.labels",
        ),
        (
            {
                **deployment("x"),
                "spec": {
                    **deployment("x")["spec"],
                    "template": {
                        "metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "c"}]},
                    },
                },
            },
            "spec.template.spec.containers[0].image",
        ),
    ],
)
async def test_invalid_objects_are_422_naming_the_field(
    api: client.ApiClient, manifest: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as err:
        await client.AppsV1Api(api).create_namespaced_deployment("default", manifest)
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert field in [c["field"] for c in body["details"]["causes"]]
    assert field in body["message"]


async def raw(
    server: KubeApiServer, method: str, path: str, body: Any
) -> tuple[int, dict[str, Any]]:
    """A request the typed client would refuse to send (it validates bodies itself)."""
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, data=data, headers=headers, ssl=False) as resp,
    ):
        return resp.status, await resp.json()


async def test_missing_required_fields_are_422(k8s_api_server: KubeApiServer) -> None:
    no_selector = deployment("x")
    del no_selector["spec"]["selector"]
    code, body = await raw(
        k8s_api_server, "POST", "/apis/apps/v1/namespaces/default/deployments", no_selector
    )
    assert code == 422
    assert body["reason"] == "Invalid"
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.selector"]
    code, body = await raw(
        k8s_api_server, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {}}
    )
    assert code == 422
    assert "name or generateName is required" in body["message"]


async def test_service_name_rules_and_missing_ports(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_service(
            "default", {"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}}
        )
    assert err.value.status == 422
    assert "DNS-1035" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_service("default", {"metadata": {"name": "svc"}, "spec": {}})
    assert err.value.status == 422
    assert "spec.ports: Required value" in status_of(err.value)["message"]


async def test_bad_requests_are_400(k8s_api_server: KubeApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "a", "namespace": "elsewhere"}}
        )
    assert err.value.status == 400
    assert "does not match the namespace" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map(
            "default", {"kind": "Secret", "metadata": {"name": "a"}}
        )
    assert err.value.status == 400
    code, body = await raw(
        k8s_api_server, "POST", "/api/v1/namespaces/default/configmaps", b"{not json"
    )
    assert code == 400
    assert body["reason"] == "BadRequest"
    code, body = await raw(
        k8s_api_server, "PATCH", "/api/v1/namespaces/default/configmaps/x", {"data": {}}
    )
    assert code == 415


async def test_missing_namespace_is_404_and_terminating_is_403(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        await core.create_namespaced_config_map("nowhere", {"metadata": {"name": "a"}})
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "nowhere" not found'
    with pytest.raises(ApiException) as err:
        await core.delete_namespace("default")
    assert err.value.status == 403


async def test_nodes_are_read_only_405(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    nodes = await core.list_node()
    assert [n.metadata.name for n in nodes.items] == ["node-1", "node-2"]
    assert nodes.items[0].status.capacity["cpu"] == "4"
    for call in (
        core.create_node({"metadata": {"name": "n3"}}),
        core.delete_node("node-1"),
        core.patch_node("node-1", {"metadata": {"labels": {"a": "b"}}}),
    ):
        with pytest.raises(ApiException) as err:
            await call
        assert err.value.status == 405
        assert status_of(err.value)["reason"] == "MethodNotAllowed"


async def test_wrong_token_is_401(k8s_api_server: KubeApiServer) -> None:
    async with await api_client(k8s_api_server, token="wrong") as api:
        with pytest.raises(ApiException) as err:
            await client.CoreV1Api(api).list_namespace()
    assert err.value.status == 401
    assert status_of(err.value)["reason"] == "Unauthorized"


# The controller loop ---------------------------------------------------------------------


async def test_deployment_rolls_out_and_its_pods_go_with_it(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await apps.create_namespaced_deployment("default", deployment("web", 3))

    async def available() -> bool:
        d = await apps.read_namespaced_deployment_status("web", "default")
        conditions = {c.type: c.status for c in d.status.conditions or []}
        return d.status.ready_replicas == 3 and conditions.get("Available") == "True"

    await until(available)
    d = await apps.read_namespaced_deployment("web", "default")
    assert (d.status.replicas, d.status.updated_replicas, d.status.available_replicas) == (3, 3, 3)
    assert d.status.observed_generation == d.metadata.generation
    pods = await core.list_namespaced_pod("default", label_selector="app=web")
    assert len(pods.items) == 3
    assert {p.status.phase for p in pods.items} == {"Running"}
    assert all(p.spec.node_name in ("node-1", "node-2") and p.status.pod_ip for p in pods.items)
    owner = pods.items[0].metadata.owner_references[0]
    assert owner.kind == "ReplicaSet"
    assert owner.controller
    rs = await apps.list_namespaced_replica_set("default", label_selector="app=web")
    assert len(rs.items) == 1
    assert rs.items[0].status.ready_replicas == 3
    running = await core.list_namespaced_pod("default", field_selector="status.phase=Running")
    assert len(running.items) == 3

    await apps.delete_namespaced_deployment("web", "default")

    async def gone() -> bool:
        left = await core.list_namespaced_pod("default", label_selector="app=web")
        sets = await apps.list_namespaced_replica_set("default")
        return not left.items and not sets.items

    await until(gone)


async def test_statefulset_and_daemonset_pods(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    sts = deployment("db", 2)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    await apps.create_namespaced_stateful_set("default", sts)
    ds = deployment("agent")
    ds["kind"] = "DaemonSet"
    del ds["spec"]["replicas"]
    await apps.create_namespaced_daemon_set("default", ds)

    async def ready() -> bool:
        s = await apps.read_namespaced_stateful_set("db", "default")
        d = await apps.read_namespaced_daemon_set("agent", "default")
        return s.status.ready_replicas == 2 and d.status.number_ready == 2

    await until(ready)
    names = sorted(
        p.metadata.name
        for p in (await core.list_namespaced_pod("default", label_selector="app=db")).items
    )
    assert names == ["db-0", "db-1"]
    agents = await core.list_namespaced_pod("default", label_selector="app=agent")
    assert sorted(p.spec.node_name for p in agents.items) == ["node-1", "node-2"]


async def test_load_balancer_gets_an_ip_until_the_pool_runs_out(
    k8s_api_server_factory: ServerFactory,
) -> None:
    server = await k8s_api_server_factory(behaviour=ClusterBehaviour(lb_pool=["198.51.100.7"]))
    async with await api_client(server) as api:
        core = client.CoreV1Api(api)
        for name in ("lb1", "lb2"):
            await core.create_namespaced_service(
                "default",
                {
                    "metadata": {"name": name},
                    "spec": {
                        "type": "LoadBalancer",
                        "ports": [{"port": 80}],
                        "selector": {"a": "b"},
                    },
                },
            )

        async def first_has_ip() -> bool:
            svc = await core.read_namespaced_service("lb1", "default")
            return bool(svc.status.load_balancer.ingress)

        await until(first_has_ip)
        svc = await core.read_namespaced_service("lb1", "default")
        assert svc.status.load_balancer.ingress[0].ip == "198.51.100.7"
        assert svc.spec.cluster_ip.startswith("10.96.")
        assert 30000 <= svc.spec.ports[0].node_port <= 32767
        assert svc.spec.ports[0].target_port == 80
        second = await core.read_namespaced_service("lb2", "default")
        assert not second.status.load_balancer.ingress
        await core.delete_namespaced_service("lb1", "default")

        async def second_has_ip() -> bool:
            svc = await core.read_namespaced_service("lb2", "default")
            return bool(svc.status.load_balancer.ingress)

        await until(second_has_ip)


async def test_unpullable_image_stays_pending(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await apps.create_namespaced_deployment(
        "default", deployment("broken", 1, image="unpullable.invalid/app:1")
    )

    async def scheduled() -> bool:
        pods = await core.list_namespaced_pod("default", label_selector="app=broken")
        return bool(pods.items) and pods.items[0].status.container_statuses is not None

    await until(scheduled)
    pod = (await core.list_namespaced_pod("default", label_selector="app=broken")).items[0]
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ErrImagePull"
    d = await apps.read_namespaced_deployment("broken", "default")
    assert {c.type: c.status for c in d.status.conditions}["Available"] == "False"


async def test_namespace_delete_removes_its_contents(api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "tenant"}})
    await apps.create_namespaced_deployment("tenant", deployment("app", 1))
    await core.create_namespaced_config_map("tenant", {"metadata": {"name": "cfg"}})
    deleted = await core.delete_namespace("tenant")
    assert deleted["status"]["phase"] == "Terminating"

    async def namespace_gone() -> bool:
        try:
            await core.read_namespace("tenant")
        except ApiException as err:
            return err.status == 404
        return False

    await until(namespace_gone)
    assert not (
        await core.list_pod_for_all_namespaces(field_selector="metadata.namespace=tenant")
    ).items
    assert not (
        await apps.list_deployment_for_all_namespaces(field_selector="metadata.namespace=tenant")
    ).items


# TLS and auth ----------------------------------------------------------------------------


async def test_client_certificate_and_plain_http(k8s_api_server_factory: ServerFactory) -> None:
    tls = await k8s_api_server_factory(token="never-sent")
    async with await api_client(tls, client_cert=True) as api:
        assert (await client.CoreV1Api(api).read_namespace("default")).metadata.name == "default"
    plain = await k8s_api_server_factory(tls=False)
    assert plain.url.startswith("http://")
    assert plain.ca_pem is None
    async with await api_client(plain) as api:
        assert (await client.CoreV1Api(api).read_namespace("default")).metadata.name == "default"


async def test_untrusted_ca_fails_the_handshake(k8s_api_server_factory: ServerFactory) -> None:
    one = await k8s_api_server_factory()
    two = await k8s_api_server_factory()
    kubeconfig = yaml.safe_load(one.kubeconfig())
    kubeconfig["clusters"][0]["cluster"]["server"] = two.url  # one's CA, two's certificate
    cfg = client.Configuration()
    await config.load_kube_config_from_dict(kubeconfig, client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.CoreV1Api(api).list_namespace()


def eks_token(cluster: str, when: datetime.datetime | None = None) -> str:
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    credentials = botocore.credentials.Credentials("AKIAIOSFODNN7EXAMPLE", "secret")
    request = botocore.awsrequest.AWSRequest(
        method="GET",
        url="https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
        headers={"x-k8s-aws-id": cluster},
    )
    signer = botocore.auth.SigV4QueryAuth(credentials, "sts", "eu-west-1", expires=60)
    now = when or datetime.datetime.now(datetime.UTC)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        signer.add_auth(request)
    url = request.prepare().url
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


async def test_eks_tokens_are_checked(k8s_api_server_factory: ServerFactory) -> None:
    server = await k8s_api_server_factory(token_checker=eks_token_checker())
    async with await api_client(server, token=eks_token("prod")) as api:
        assert (await client.CoreV1Api(api).read_namespace("default")).metadata.name == "default"
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    assert eks_token_problem(eks_token("prod", old)) == "token expired or signed in the future"
    assert eks_token_problem("k8s-aws-v1.!!!") is not None
    assert eks_token_problem("Bearer x") is not None
    bad_host = "k8s-aws-v1." + base64.urlsafe_b64encode(
        b"https://evil.example/?Action=GetCallerIdentity"
    ).decode().rstrip("=")
    assert "not an STS endpoint" in (eks_token_problem(bad_host) or "")
    async with await api_client(server, token="k8s-aws-v1.bm9wZQ") as api:
        with pytest.raises(ApiException) as err:
            await client.CoreV1Api(api).list_namespace()
        assert err.value.status == 401


async def test_ingress_validation_and_crud(
    k8s_api_server: KubeApiServer, api: client.ApiClient
) -> None:
    rule = {"host": "a.example.com", "http": {"paths": [{"path": "/", "backend": {}}]}}
    code, body = await raw(
        k8s_api_server,
        "POST",
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        {"metadata": {"name": "i"}, "spec": {"rules": [rule]}},
    )
    assert code == 422
    fields = [c["field"] for c in body["details"]["causes"]]
    assert fields == ["spec.rules[0].http.paths[0].pathType", "spec.rules[0].http.paths[0].backend"]
    net = client.NetworkingV1Api(api)
    backend = {"service": {"name": "svc", "port": {"number": 80}}}
    rule["http"]["paths"][0].update(pathType="Prefix", backend=backend)  # type: ignore[index]
    made = await net.create_namespaced_ingress(
        "default", {"metadata": {"name": "i"}, "spec": {"rules": [rule]}}
    )
    assert made.metadata.generation == 1
    listed = await net.list_ingress_for_all_namespaces()
    assert [i.metadata.name for i in listed.items] == ["i"]
