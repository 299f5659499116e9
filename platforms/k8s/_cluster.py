"""Cluster-level operations: namespaces and nodes.

Namespaces follow the original's `EnsureNamespace`/`DeleteNamespace`: "default" is never
created or deleted, a namespace is labelled with the cloudlet's `NamespaceLabels`, and a
delete waits until the namespace (and so everything in it) is gone. Nodes feed cluster
resource reports, so their capacity is parsed from Kubernetes quantities.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final
from urllib.parse import urlsplit

from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.client.models import V1Namespace, V1ObjectMeta, V1Secret

from edge_cloud.errors import DeadlineExceeded, InvalidArgument
from platforms.k8s._client import KubeClient, kube_errors

__all__ = [
    "DEFAULT_NAMESPACE",
    "NodeInfo",
    "delete_namespace",
    "ensure_namespace",
    "ensure_pull_secret",
    "image_registry_host",
    "list_nodes",
    "parse_quantity",
    "pull_secret_name",
]

DEFAULT_NAMESPACE: Final = "default"
_POLL_SECONDS: Final = 0.25
_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: Final = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (`500m`, `16Gi`, `1e3`, `2`) as a number of base units.

    Raises:
        InvalidArgument: Not a quantity.
    """
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise InvalidArgument(f"{text!r} is not a Kubernetes quantity")
    number, suffix = m.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise InvalidArgument(f"{text!r} is not a Kubernetes quantity") from None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    raise InvalidArgument(f"{text!r} has an unknown quantity suffix {suffix!r}")


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What resource reports need from a node (allocatable, not raw capacity)."""

    name: str
    ready: bool
    vcpus_milli: int
    memory_mb: int
    disk_gb: int
    gpus: int
    instance_type: str
    internal_ip: str
    labels: dict[str, str] = field(default_factory=dict)


def _gpus(allocatable: Mapping[str, str]) -> int:
    return sum(int(parse_quantity(v)) for k, v in allocatable.items() if k.endswith("/gpu"))


async def list_nodes(client: KubeClient) -> list[NodeInfo]:
    """The cluster's nodes with allocatable CPU, memory, disk and GPUs, by name."""
    with kube_errors("list nodes"):
        nodes = await client.core.list_node()
    out: list[NodeInfo] = []
    for node in nodes.items:
        meta, status = node.metadata, node.status
        if meta is None or meta.name is None:
            continue
        alloc = dict((status.allocatable or status.capacity or {}) if status else {})
        labels = dict(meta.labels or {})
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in (status.conditions or [] if status else [])
        )
        ip = next(
            (
                a.address
                for a in (status.addresses or [] if status else [])
                if a.type == "InternalIP"
            ),
            "",
        )
        out.append(
            NodeInfo(
                name=meta.name,
                ready=ready,
                vcpus_milli=int(parse_quantity(alloc.get("cpu", "0")) * 1000),
                memory_mb=int(parse_quantity(alloc.get("memory", "0")) / 2**20),
                disk_gb=int(parse_quantity(alloc.get("ephemeral-storage", "0")) / 2**30),
                gpus=_gpus(alloc),
                instance_type=labels.get(
                    "node.kubernetes.io/instance-type",
                    labels.get("beta.kubernetes.io/instance-type", ""),
                ),
                internal_ip=ip,
                labels=labels,
            )
        )
    return sorted(out, key=lambda n: n.name)


async def _wait_gone(client: KubeClient, name: str, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        with kube_errors(f'read namespace "{name}"'):
            try:
                ns = await client.core.read_namespace(name)
            except ApiException as err:
                if err.status == 404:
                    return
                raise
        if loop.time() >= deadline:
            phase = ns.status.phase if ns.status else "unknown"
            raise DeadlineExceeded(
                f'namespace "{name}" still exists (phase {phase}) {seconds:g}s after its '
                "deletion; something in it is not finalizing"
            )
        await asyncio.sleep(_POLL_SECONDS)


async def ensure_namespace(
    client: KubeClient,
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    wait_terminating: float = 60.0,
) -> None:
    """Create namespace `name` if missing, with `labels` (added to an existing one too).

    "default" is left alone, as in the original. A namespace still terminating from an
    earlier delete is waited for (up to `wait_terminating` seconds) and then recreated.

    Raises:
        DeadlineExceeded: A terminating namespace did not go away in time.
        EdgeError: The API server refused (see `api_error`).
    """
    if name == DEFAULT_NAMESPACE:
        return
    wanted = dict(labels or {})
    body = V1Namespace(
        api_version="v1", kind="Namespace", metadata=V1ObjectMeta(name=name, labels=wanted)
    )
    with kube_errors(f'create namespace "{name}"'):
        try:
            await client.core.create_namespace(body)
            return
        except ApiException as err:
            if err.status != 409:
                raise
        existing = await client.core.read_namespace(name)
    if existing.status is not None and existing.status.phase == "Terminating":
        await _wait_gone(client, name, wait_terminating)
        with kube_errors(f'create namespace "{name}"'):
            await client.core.create_namespace(body)
        return
    current = dict(existing.metadata.labels or {}) if existing.metadata else {}
    if any(current.get(k) != v for k, v in wanted.items()):
        with kube_errors(f'label namespace "{name}"'):
            await client.core.patch_namespace(name, {"metadata": {"labels": wanted}})


async def delete_namespace(client: KubeClient, name: str, *, wait_seconds: float = 120.0) -> None:
    """Delete namespace `name` and wait until it and its contents are gone; idempotent.

    "default" is never deleted.

    Raises:
        DeadlineExceeded: The namespace still exists after `wait_seconds`.
    """
    if name == DEFAULT_NAMESPACE:
        return
    with kube_errors(f'delete namespace "{name}"'):
        try:
            await client.core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise
            return
    await _wait_gone(client, name, wait_seconds)


def image_registry_host(image_path: str) -> str:
    """The registry `host[:port]` of an image path (`docker.example.com:5000/org/app:1`)."""
    url = image_path if "://" in image_path else f"https://{image_path}"
    return urlsplit(url).netloc.rpartition("@")[2]


def pull_secret_name(image_path: str) -> str:
    """The pull secret the generated manifests reference for an image: its host, `:`→`-`.

    The Controller's kubernetes-basic generator names `imagePullSecrets` this way, so the
    secret created here is the one its manifests use.
    """
    host, _, port = image_registry_host(image_path).partition(":")
    return f"{host}-{port}" if port else host


async def ensure_pull_secret(
    client: KubeClient, namespace: str, image_path: str, username: str, password: str
) -> str:
    """Create or update the docker-registry Secret for an image's registry in `namespace`.

    The original runs `kubectl create secret docker-registry` per image host with the
    credentials from the registry auth API; this writes the same
    `kubernetes.io/dockerconfigjson` Secret.

    Returns:
        The secret's name (`pull_secret_name(image_path)`).

    Raises:
        InvalidArgument: The image path has no registry host.
    """
    host = image_registry_host(image_path)
    if not host:
        raise InvalidArgument(f"image path {image_path!r} names no registry host")
    name = pull_secret_name(image_path)
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {host: {"username": username, "password": password, "auth": auth}}}
    body = V1Secret(
        api_version="v1",
        kind="Secret",
        metadata=V1ObjectMeta(name=name),
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    )
    where = f'secret "{name}" in namespace "{namespace}"'
    with kube_errors(f"create {where}"):
        try:
            await client.core.create_namespaced_secret(namespace, body)
            return name
        except ApiException as err:
            if err.status != 409:
                raise
    with kube_errors(f"update {where}"):
        await client.core.replace_namespaced_secret(name, namespace, body)
    return name
