"""The Kubernetes API test server as a subprocess, driven by the synchronous official client.

A daemon under test (a CCRM) reaches the server from another process; this runs it the way
such tests do (`python -m tests.support.k8sapi`) and talks to it with `kubernetes.client`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def k8s_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("k8sapi")
    out = workdir / "kubeconfig"
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.k8sapi",
            "--port",
            "0",
            "--token",
            "tok",
            "--kubeconfig-out",
            str(out),
            "--nodes",
            "3",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        # The kubeconfig is written just before the "listening" line is printed.
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), f"the server did not start: {(workdir / 'server.log').read_text()}"
        line = proc.stdout.readline()
        assert line.startswith("k8sapi listening on https://127.0.0.1:"), line
        yield {"proc": proc, "kubeconfig": yaml.safe_load(out.read_bytes())}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


@pytest.fixture
def api(k8s_process: dict[str, Any]) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config_from_dict(k8s_process["kubeconfig"], client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        yield api_client


def until(predicate: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def error_of(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status"
    return body


def test_sync_client_full_cycle(api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().git_version == "v1.31.0"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    assert len(core.list_node().items) == 3
    core.create_namespace({"metadata": {"name": "sync"}})
    apps.create_namespaced_deployment(
        "sync",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                },
            },
        },
    )
    until(
        lambda: (apps.read_namespaced_deployment("web", "sync").status.available_replicas or 0) == 2
    )
    pods = core.list_namespaced_pod("sync", label_selector="app in (web)")
    assert {p.status.phase for p in pods.items} == {"Running"}
    patched = apps.patch_namespaced_deployment("web", "sync", {"spec": {"replicas": 1}})
    assert patched.metadata.generation == 2
    merged = core.patch_namespace(
        "sync",
        {"metadata": {"labels": {"x": "y"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.labels["x"] == "y"
    core.delete_namespace("sync")

    def gone() -> bool:
        try:
            core.read_namespace("sync")
        except ApiException as err:
            return err.status == 404
        return False

    until(gone)
    assert not core.list_pod_for_all_namespaces(field_selector="metadata.namespace=sync").items


def test_sync_watch(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", {"metadata": {"name": "watched"}})
    core.delete_namespaced_config_map("watched", "default")
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    assert seen == [("ADDED", "watched"), ("DELETED", "watched")]


def test_sync_errors(api: client.ApiClient, k8s_process: dict[str, Any]) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("missing", "default")
    assert (err.value.status, error_of(err.value)["reason"]) == (404, "NotFound")
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "data": {"a": "YQ=="}})
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert (err.value.status, error_of(err.value)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("default", {"metadata": {"name": "t"}, "data": {"a": "!!"}})
    assert (err.value.status, error_of(err.value)["reason"]) == (400, "BadRequest")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret(
            "default", {"metadata": {"name": "u"}, "type": "kubernetes.io/dockerconfigjson"}
        )
    assert (err.value.status, error_of(err.value)["reason"]) == (422, "Invalid")
    with pytest.raises(ApiException) as err:
        core.delete_node("node-1")
    assert err.value.status == 405
    kubeconfig = json.loads(json.dumps(k8s_process["kubeconfig"]))
    kubeconfig["users"][0]["user"]["token"] = "nope"
    cfg = client.Configuration()
    config.load_kube_config_from_dict(kubeconfig, client_configuration=cfg)
    with client.ApiClient(cfg) as bad, pytest.raises(ApiException) as err:
        client.CoreV1Api(bad).list_namespace()
    assert err.value.status == 401


def test_sigterm_stops_the_server(k8s_process: dict[str, Any]) -> None:
    proc = k8s_process["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
