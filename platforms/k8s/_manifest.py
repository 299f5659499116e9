"""Apply, delete and wait for the objects of a multi-document Kubernetes manifest.

The original runs `kubectl apply -f <file>`, `kubectl delete -f <file>` and polls pods;
here the same happens in process through the API: create, and on AlreadyExists replace
with the live resourceVersion (retrying a lost race), so applying twice converges on the
manifest. Readiness is what `kubectl rollout status` checks, plus an address for
LoadBalancer Services; a timeout names every object still waiting and why its pods are
not running.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import pydantic
import yaml
from kubernetes.aio.client.exceptions import ApiException

from edge_cloud.errors import DeadlineExceeded, InvalidArgument
from platforms.k8s._client import KubeClient, api_error, kube_errors

__all__ = [
    "KubeObject",
    "apply_manifest",
    "delete_manifest",
    "parse_manifest",
    "service_external_ips",
    "wait_ready",
]

_CONFLICT_RETRIES: Final = 5
_POLL_SECONDS: Final = 0.25
_WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")


@dataclass(frozen=True, slots=True)
class _Kind:
    api_version: str
    kind: str
    snake: str  # the client's method suffix: create_namespaced_<snake>
    namespaced: bool
    order: int  # apply order; delete runs in reverse


_KINDS: Final[dict[tuple[str, str], _Kind]] = {
    (k.api_version, k.kind): k
    for k in (
        _Kind("v1", "Namespace", "namespace", False, 0),
        _Kind("v1", "ServiceAccount", "service_account", True, 1),
        _Kind("v1", "Secret", "secret", True, 1),
        _Kind("v1", "ConfigMap", "config_map", True, 1),
        _Kind("v1", "PersistentVolumeClaim", "persistent_volume_claim", True, 1),
        _Kind("v1", "Service", "service", True, 2),
        _Kind("apps/v1", "Deployment", "deployment", True, 3),
        _Kind("apps/v1", "StatefulSet", "stateful_set", True, 3),
        _Kind("apps/v1", "DaemonSet", "daemon_set", True, 3),
        _Kind("apps/v1", "ReplicaSet", "replica_set", True, 3),
        _Kind("v1", "Pod", "pod", True, 4),
        _Kind("networking.k8s.io/v1", "NetworkPolicy", "network_policy", True, 2),
        _Kind("networking.k8s.io/v1", "Ingress", "ingress", True, 5),
    )
}


@dataclass(frozen=True, slots=True)
class KubeObject:
    """One object of a manifest, with the namespace it lands in ("" if cluster-scoped)."""

    kind: str
    api_version: str
    name: str
    namespace: str
    body: dict[str, Any]

    def describe(self) -> str:
        """`Deployment "web" in namespace "ns"`, for messages."""
        where = f' in namespace "{self.namespace}"' if self.namespace else ""
        return f'{self.kind} "{self.name}"{where}'


def parse_manifest(manifest: str, namespace: str) -> list[KubeObject]:
    """The objects of a multi-document YAML manifest, in apply order.

    Objects without `metadata.namespace` go to `namespace`; `kind: List` documents are
    flattened, as kubectl does.

    Raises:
        InvalidArgument: A document is not YAML, lacks apiVersion/kind/metadata.name, or has
            a kind this deployer does not manage (the message lists the ones it does).
    """
    try:
        docs = [d for d in yaml.safe_load_all(manifest) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidArgument(f"the Kubernetes manifest is not valid YAML: {err}") from None
    flat: list[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            flat.extend(doc.get("items") or [])
        else:
            flat.append(doc)
    objects: list[KubeObject] = []
    for n, doc in enumerate(flat):
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise InvalidArgument(
                f"manifest document {n + 1} is not an object with apiVersion and kind"
            )
        meta = doc.get("metadata") or {}
        name = meta.get("name") if isinstance(meta, dict) else None
        if not name:
            raise InvalidArgument(f"manifest document {n + 1} ({doc['kind']}) has no metadata.name")
        kind = _KINDS.get((doc["apiVersion"], doc["kind"]))
        if kind is None:
            known = ", ".join(sorted(f"{k.api_version} {k.kind}" for k in _KINDS.values()))
            raise InvalidArgument(
                f'manifest object {doc["apiVersion"]} {doc["kind"]} "{name}" is not a kind this '
                f"deployer manages (it manages {known})"
            )
        body = copy.deepcopy(doc)
        ns = ""
        if kind.namespaced:
            ns = str(meta.get("namespace") or namespace)
            body["metadata"]["namespace"] = ns
        objects.append(KubeObject(kind.kind, kind.api_version, str(name), ns, body))
    objects.sort(key=lambda o: _KINDS[(o.api_version, o.kind)].order)
    return objects


def _method(client: KubeClient, obj: KubeObject, verb: str) -> Callable[..., Awaitable[Any]]:
    kind = _KINDS[(obj.api_version, obj.kind)]
    apis: dict[str, Any] = {
        "v1": client.core,
        "apps/v1": client.apps,
        "networking.k8s.io/v1": client.networking,
    }
    api = apis[kind.api_version]
    scope = "namespaced_" if kind.namespaced else ""
    method: Callable[..., Awaitable[Any]] = getattr(api, f"{verb}_{scope}{kind.snake}")
    return method


async def _call(client: KubeClient, obj: KubeObject, verb: str, *args: Any, **kwargs: Any) -> Any:
    """Call `<verb>[_namespaced]_<kind>` with name/namespace placed as the client wants."""
    method = _method(client, obj, verb)
    scope: tuple[str, ...] = (obj.namespace,) if obj.namespace else ()
    positional = (*args[:1], *scope, *args[1:]) if verb != "create" else (*scope, *args)
    try:
        return await method(*positional, **kwargs)
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in err.errors()[:5]
        )
        raise InvalidArgument(f"{obj.describe()} in the manifest is invalid: {problems}") from None


async def _apply_one(client: KubeClient, obj: KubeObject) -> None:
    with kube_errors(f"create {obj.describe()}"):
        try:
            await _call(client, obj, "create", obj.body)
            return
        except ApiException as err:
            if err.status != 409:
                raise
    for _ in range(_CONFLICT_RETRIES):
        with kube_errors(f"read {obj.describe()}"):
            live = await _call(client, obj, "read", obj.name)
        body = copy.deepcopy(obj.body)
        body["metadata"]["resourceVersion"] = live.metadata.resource_version
        with kube_errors(f"update {obj.describe()}"):
            try:
                await _call(client, obj, "replace", obj.name, body)
                return
            except ApiException as err:
                if err.status != 409:
                    raise
    raise api_error(
        ApiException(status=409, reason="Conflict"),
        f"update {obj.describe()} after {_CONFLICT_RETRIES} conflicting writes",
    )


async def apply_manifest(client: KubeClient, namespace: str, manifest: str) -> list[KubeObject]:
    """Create or update every object of `manifest` (namespaces first, workloads last).

    Args:
        client: An entered `KubeClient`.
        namespace: Where objects without their own `metadata.namespace` go.
        manifest: Multi-document YAML.

    Returns:
        The objects applied, in order.

    Raises:
        InvalidArgument: The manifest does not parse or the API server refused an object
            (the message names it and gives the server's reason).
        EdgeError: Other refusals, see `api_error`.
    """
    objects = parse_manifest(manifest, namespace)
    for obj in objects:
        await _apply_one(client, obj)
    return objects


async def delete_manifest(
    client: KubeClient,
    namespace: str,
    manifest: str,
    *,
    wait_seconds: float | None = None,
) -> list[KubeObject]:
    """Delete every object of `manifest` in reverse apply order, ignoring ones already gone.

    Dependents (ReplicaSets, Pods) go with their owners (background propagation), as with
    `kubectl delete -f`.

    Args:
        client: An entered `KubeClient`.
        namespace: Where objects without their own `metadata.namespace` live.
        manifest: Multi-document YAML, as applied.
        wait_seconds: When given, also wait until the objects and their workloads' pods are
            gone, as the original waits for pods before reporting the delete done.

    Returns:
        The objects that existed and were deleted.

    Raises:
        DeadlineExceeded: Something is still there after `wait_seconds`, named.
    """
    objects = parse_manifest(manifest, namespace)
    deleted: list[KubeObject] = []
    for obj in reversed(objects):
        with kube_errors(f"delete {obj.describe()}"):
            try:
                await _call(client, obj, "delete", obj.name, propagation_policy="Background")
            except ApiException as err:
                if err.status == 404:
                    continue
                raise
        deleted.append(obj)
    if wait_seconds is not None:
        await _wait_gone(client, objects, wait_seconds)
    return deleted


async def _still_there(client: KubeClient, obj: KubeObject) -> str | None:
    with kube_errors(f"read {obj.describe()}"):
        try:
            await _call(client, obj, "read", obj.name)
            return obj.describe()
        except ApiException as err:
            if err.status != 404:
                raise
    labels = _match_labels(obj)
    if obj.kind not in _WORKLOAD_KINDS or not labels:
        return None
    with kube_errors(f"list pods of {obj.describe()}"):
        pods = await client.core.list_namespaced_pod(obj.namespace, label_selector=labels)
    if pods.items:
        return f"{len(pods.items)} pod(s) of {obj.describe()}"
    return None


async def _wait_gone(client: KubeClient, objects: list[KubeObject], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        left = [what for obj in objects if (what := await _still_there(client, obj)) is not None]
        if not left:
            return
        if loop.time() >= deadline:
            raise DeadlineExceeded(f"still present {seconds:g}s after delete: " + "; ".join(left))
        await asyncio.sleep(_POLL_SECONDS)


def _match_labels(obj: KubeObject) -> str:
    selector = (obj.body.get("spec") or {}).get("selector") or {}
    labels = selector.get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int) else 0


async def _not_ready(client: KubeClient, obj: KubeObject) -> str | None:
    """Why `obj` is not ready yet, or None once it is."""
    if obj.kind not in (*_WORKLOAD_KINDS, "Service", "Pod"):
        return None
    with kube_errors(f"read {obj.describe()}"):
        live = await _call(client, obj, "read", obj.name)
    if obj.kind == "Pod":
        pod_status = live.status
        pod_ready = pod_status is not None and any(
            c.type == "Ready" and c.status == "True" for c in pod_status.conditions or []
        )
        phase = pod_status.phase if pod_status is not None else "Pending"
        return None if pod_ready and phase == "Running" else f"pod is {phase}, not ready"
    if obj.kind == "Service":
        if live.spec.type != "LoadBalancer":
            return None
        ingress = (
            live.status.load_balancer.ingress if live.status and live.status.load_balancer else None
        )
        return None if ingress else "waiting for a load balancer address"
    status, meta = live.status, live.metadata
    if status is None or _int(status.observed_generation) < _int(meta.generation):
        return "the controller has not seen the latest generation"
    if obj.kind == "DaemonSet":
        desired = _int(status.desired_number_scheduled)
        ready, updated = _int(status.number_ready), _int(status.updated_number_scheduled)
        if ready < desired or updated < desired:
            return f"{ready}/{desired} pods ready, {updated} updated"
        return None
    want = _int(live.spec.replicas) if live.spec.replicas is not None else 1
    ready = _int(status.ready_replicas)
    updated = _int(status.updated_replicas)
    total = _int(status.replicas)
    if obj.kind == "Deployment":
        available = _int(status.available_replicas)
        if updated < want or total > updated or available < want:
            return f"{available}/{want} replicas available, {updated} updated"
        return None
    if ready < want or updated < want:
        return f"{ready}/{want} replicas ready, {updated} updated"
    return None


async def _pod_problems(client: KubeClient, obj: KubeObject) -> str:
    """What the pods of a workload are stuck on (image pulls, crashes), for the timeout."""
    text = _match_labels(obj)
    if not text:
        return ""
    with kube_errors(f"list pods of {obj.describe()}"):
        pods = await client.core.list_namespaced_pod(obj.namespace, label_selector=text)
    problems: list[str] = []
    for pod in pods.items:
        status = pod.status
        if status is None:
            continue
        reasons = []
        for cs in status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting is not None and waiting.reason:
                detail = f" ({waiting.message})" if waiting.message else ""
                reasons.append(f"container {cs.name} {waiting.reason}{detail}")
        if reasons or status.phase != "Running":
            name = pod.metadata.name if pod.metadata else "?"
            problems.append(
                f"pod {name} {status.phase}" + (": " + ", ".join(reasons) if reasons else "")
            )
    return "; ".join(problems[:3])


async def wait_ready(
    client: KubeClient,
    namespace: str,
    manifest: str,
    timeout: float,  # noqa: ASYNC109 - the deadline is reported, not a cancellation
    *,
    on_wait: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Wait until the manifest's workloads are rolled out and its LoadBalancers have addresses.

    Deployments: observed the latest generation, all replicas updated and available;
    StatefulSets: all replicas ready and updated; DaemonSets: a ready, updated pod on every
    node they target; Pods: Running and Ready; Services of type LoadBalancer: an ingress IP
    or hostname.

    Args:
        client: An entered `KubeClient`.
        namespace: Where objects without their own `metadata.namespace` live.
        manifest: Multi-document YAML, as applied.
        timeout: Seconds to wait in all.
        on_wait: Awaited with a one-line summary (`Deployment "web" in namespace "ns": 1/2
            replicas available, 2 updated`) each time what is being waited for changes, so
            a platform can report progress as the original reports pod phases.

    Raises:
        DeadlineExceeded: After `timeout` seconds, naming each object still not ready, why,
            and what its pods are stuck on.
    """
    objects = parse_manifest(manifest, namespace)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reported = ""
    while True:
        waiting: list[tuple[KubeObject, str]] = []
        for obj in objects:
            why = await _not_ready(client, obj)
            if why is not None:
                waiting.append((obj, why))
        if not waiting:
            return
        summary = "; ".join(f"{obj.describe()}: {why}" for obj, why in waiting)
        if on_wait is not None and summary != reported:
            reported = summary
            await on_wait(summary)
        if loop.time() >= deadline:
            parts = []
            for obj, why in waiting:
                pods = await _pod_problems(client, obj) if obj.kind != "Service" else ""
                parts.append(f"{obj.describe()}: {why}" + (f" [{pods}]" if pods else ""))
            raise DeadlineExceeded(f"not ready after {timeout:g}s: " + "; ".join(parts))
        await asyncio.sleep(min(_POLL_SECONDS, max(0.0, deadline - loop.time())))


async def service_external_ips(
    client: KubeClient, namespace: str, names: Iterable[str] | None = None
) -> dict[str, str]:
    """LoadBalancer Services of a namespace that have an address: name → IP (or hostname).

    Args:
        client: An entered `KubeClient`.
        namespace: The namespace to look in.
        names: Only these Services (all LoadBalancers when None).
    """
    wanted = set(names) if names is not None else None
    with kube_errors(f'list services in namespace "{namespace}"'):
        services = await client.core.list_namespaced_service(namespace)
    found: dict[str, str] = {}
    for svc in services.items:
        name = svc.metadata.name if svc.metadata else None
        if name is None or (wanted is not None and name not in wanted):
            continue
        if svc.spec is None or svc.spec.type != "LoadBalancer":
            continue
        lb = svc.status.load_balancer if svc.status else None
        for ingress in (lb.ingress if lb else None) or []:
            address = ingress.ip or ingress.hostname
            if address:
                found[name] = address
                break
    return found
