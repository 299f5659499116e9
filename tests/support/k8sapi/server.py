"""A Kubernetes API server for tests: aiohttp, in-process on a loopback port.

Faithful to what the official `kubernetes` client sees: discovery, the CRUD verbs with
resourceVersions and optimistic concurrency, the three patch types, label and field
selectors, watches, `Status` errors with the real codes and reasons, bearer-token or
client-certificate auth over HTTPS with a generated CA. A small controller loop
(`_cluster.py`) makes workloads roll out, so deployers can wait for readiness.

Use it in-process (`async with KubeApiServer() as server`), through the `k8s_api_server`
fixture, or as a subprocess: `python -m tests.support.k8sapi --port P --token T`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from tests.support.k8sapi._auth import TokenChecker
from tests.support.k8sapi._cluster import (
    NAMESPACES,
    NODES,
    ClusterBehaviour,
    ClusterLoop,
    NodeSpec,
    node_object,
    random_suffix,
)
from tests.support.k8sapi._errors import (
    ApiError,
    already_exists,
    bad_request,
    method_not_allowed,
    unauthorized,
)
from tests.support.k8sapi._patch import json_patch, merge_patch, strategic_merge_patch
from tests.support.k8sapi._resources import (
    BY_PATH,
    RESOURCES,
    ResourceType,
    apply_defaults,
    raise_if_not_object,
    validate,
)
from tests.support.k8sapi._selectors import parse_field_selector, parse_label_selector
from tests.support.k8sapi._store import Store, now_rfc3339
from tests.support.k8sapi._tls import Certificates, make_certificates

_PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/version"})
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
GIT_VERSION = "v1.31.0"
# What the registries' PrepareForCreate leaves in status (the client requires some fields).
_INITIAL_STATUS: dict[str, dict[str, Any]] = {
    "Pod": {"phase": "Pending", "qosClass": "BestEffort"},
    "StatefulSet": {"replicas": 0, "availableReplicas": 0},
    "ReplicaSet": {"replicas": 0},
    "DaemonSet": {
        "currentNumberScheduled": 0,
        "desiredNumberScheduled": 0,
        "numberMisscheduled": 0,
        "numberReady": 0,
    },
}


@dataclass(frozen=True, slots=True)
class _Target:
    rt: ResourceType
    namespace: str | None  # None: across namespaces (or cluster-scoped)
    name: str | None
    subresource: str | None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


class KubeApiServer:
    """The test API server. Start it with `async with` or `start()`/`stop()`.

    Args:
        token: The static bearer token accepted.
        token_checker: Also accept tokens for which this returns True (e.g.
            `eks_token_checker()`); may be async.
        tls: Serve HTTPS with a CA generated at start (plain HTTP when False).
        host: Loopback address to bind.
        port: TCP port; 0 picks a free one.
        nodes: The fake nodes listed (two m5.xlarge nodes by default).
        behaviour: Controller-loop knobs (readiness delay, LB IP pool, failing images).
    """

    def __init__(
        self,
        *,
        token: str = "test-token",  # noqa: S107 - a test server's token
        token_checker: Callable[[str], bool | Awaitable[bool]] | None = None,
        tls: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        nodes: Sequence[NodeSpec] | None = None,
        behaviour: ClusterBehaviour | None = None,
    ) -> None:
        self.token = token
        self.token_checker = token_checker
        self.tls = tls
        self.host = host
        self._port = port
        self.nodes = list(nodes) if nodes is not None else [NodeSpec("node-1"), NodeSpec("node-2")]
        self.behaviour = behaviour or ClusterBehaviour()
        self.store = Store()
        self.loop: ClusterLoop | None = None
        self.certs: Certificates | None = None
        self._runner: web.AppRunner | None = None
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests to inspect

    # Lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Seed the system namespaces and nodes, start the loop, listen."""
        self.loop = ClusterLoop(self.store, self.behaviour)
        for name in _SYSTEM_NAMESPACES:
            obj: dict[str, Any] = {"metadata": {"name": name}}
            apply_defaults(NAMESPACES, obj)
            self.store.create(NAMESPACES, "", obj)
        for index, spec in enumerate(self.nodes):
            self.store.create(NODES, "", node_object(spec, index))
        self.loop.start()
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        ssl_context = None
        if self.tls:
            self.certs = make_certificates(self.host)
            ssl_context = self._ssl_context(self.certs)
        site = web.TCPSite(self._runner, self.host, self._port, ssl_context=ssl_context)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    @staticmethod
    def _ssl_context(certs: Certificates) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(certs.server_cert_pem)
            key.write_bytes(certs.server_key_pem)
            context.load_cert_chain(cert, key)
        context.load_verify_locations(cadata=certs.ca_pem.decode())
        context.verify_mode = ssl.CERT_OPTIONAL  # client certs authenticate when sent
        return context

    async def stop(self) -> None:
        """Stop listening and end the loop and every open watch."""
        if self.loop is not None:
            await self.loop.stop()
        for task in list(self._watch_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # What tests need ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        return self._port

    @property
    def url(self) -> str:
        """`https://127.0.0.1:<port>` (or http)."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self._port}"

    @property
    def ca_pem(self) -> bytes | None:
        """The CA certificate clients must trust, None over plain HTTP."""
        return self.certs.ca_pem if self.certs else None

    def kubeconfig(
        self,
        *,
        token: str | None = None,
        client_cert: bool = False,
        namespace: str | None = None,
        cluster_name: str = "test-cluster",
        insecure: bool = False,
    ) -> bytes:
        """A kubeconfig (YAML bytes) for this server.

        Args:
            token: Bearer token to embed (the server's own by default).
            client_cert: Authenticate with the generated admin client certificate instead.
            namespace: Default namespace of the context.
            cluster_name: Name of the cluster, user and context entries.
            insecure: Set insecure-skip-tls-verify instead of embedding the CA.
        """
        cluster: dict[str, Any] = {"server": self.url}
        if self.certs is not None:
            if insecure:
                cluster["insecure-skip-tls-verify"] = True
            else:
                cluster["certificate-authority-data"] = base64.b64encode(self.certs.ca_pem).decode()
        user: dict[str, Any]
        if client_cert:
            if self.certs is None:
                raise ValueError("client certificates need the server started with tls=True")
            user = {
                "client-certificate-data": base64.b64encode(self.certs.client_cert_pem).decode(),
                "client-key-data": base64.b64encode(self.certs.client_key_pem).decode(),
            }
        else:
            user = {"token": token if token is not None else self.token}
        context: dict[str, Any] = {"cluster": cluster_name, "user": f"{cluster_name}-admin"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": cluster}],
            "users": [{"name": f"{cluster_name}-admin", "user": user}],
            "contexts": [{"name": cluster_name, "context": context}],
            "current-context": cluster_name,
            "preferences": {},
        }
        return yaml.safe_dump(doc, sort_keys=False).encode()

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of stored objects of a resource (`pods`, `deployments`...), for assertions."""
        rt = next(r for r in RESOURCES if r.plural == plural)
        return [copy.deepcopy(o) for o in self.store.items(rt, namespace)]

    # HTTP -----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            if request.path not in _PUBLIC_PATHS and not await self._authenticated(request):
                raise unauthorized()
            return await handler(request)
        except ApiError as err:
            return _json(err.status(), err.code)

    async def _authenticated(self, request: web.Request) -> bool:
        transport = request.transport
        if transport is not None and transport.get_extra_info("peercert"):
            return True  # verified against our CA by the TLS layer
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :].strip()
        if token and token == self.token:
            return True
        if self.token_checker is not None and token:
            result = self.token_checker(token)
            if not isinstance(result, bool):
                result = await result
            return result
        return False

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": GIT_VERSION,
                    "gitCommit": "9c0ee5a7f5c5c8a0d5f1b3c9a3e3b1e7a0e1f9b2",
                    "gitTreeState": "clean",
                    "buildDate": "2024-08-13T07:28:49Z",
                    "goVersion": "go1.22.5",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if request.method == "GET" and (discovery := self._discovery(path)) is not None:
            return _json(discovery)
        target = self._route(path)
        return await self._serve(request, target)

    def _discovery(self, path: str) -> dict[str, Any] | None:
        address = [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self._port}"}]
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": address,
            }
        groups = sorted({r.group for r in RESOURCES if r.group})
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(g) for g in groups],
            }
        for group in groups:
            if path == f"/apis/{group}":
                return {"kind": "APIGroup", "apiVersion": "v1", **self._group(group)}
        for group_version in {r.api_version for r in RESOURCES}:
            prefix = "/api/" if "/" not in group_version else "/apis/"
            if path == prefix + group_version:
                return self._resource_list(group_version)
        return None

    @staticmethod
    def _group(group: str) -> dict[str, Any]:
        versions = sorted({r.version for r in RESOURCES if r.group == group})
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    @staticmethod
    def _resource_list(group_version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for rt in RESOURCES:
            if rt.api_version != group_version:
                continue
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            resources.append(entry)
            if rt.has_status:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    @staticmethod
    def _route(path: str) -> _Target:
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

        def resource(plural: str) -> ResourceType:
            rt = BY_PATH.get((group, version, plural))
            if rt is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return rt

        if rest[:1] == ["namespaces"] and len(rest) >= 3 and (group, version, rest[2]) in BY_PATH:
            rt = resource(rest[2])
            if not rt.namespaced or len(rest) > 5:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            name = rest[3] if len(rest) > 3 else None
            sub = rest[4] if len(rest) > 4 else None
            return _Target(rt, rest[1], name, sub)
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = resource(rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if name is not None and rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Target(rt, None, name, sub)

    async def _serve(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rt, method = target.rt, request.method
        if target.subresource is not None and (target.subresource != "status" or not rt.has_status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.name is None:
            verbs = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
            verb = verbs.get(method)
            if verb == "list" and request.query.get("watch") in ("true", "1"):
                verb = "watch"
        else:
            verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
            verb = verbs.get(method)
        if verb is None or (
            verb not in rt.verbs and not (target.subresource and verb in ("get", "update", "patch"))
        ):
            raise method_not_allowed(
                f"the server does not allow this method on the requested resource "
                f"({method} {rt.plural})"
            )
        if target.subresource and NODES is rt and verb != "get":
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        namespace = target.namespace
        if verb in ("create", "deletecollection") and rt.namespaced and namespace is None:
            raise method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        handlers: dict[str, Callable[[web.Request, _Target], Awaitable[web.StreamResponse]]] = {
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "deletecollection": self._delete_collection,
            "get": self._get,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
        }
        return await handlers[verb](request, target)

    # Verbs ----------------------------------------------------------------------------

    @staticmethod
    def _filter(request: web.Request, rt: ResourceType) -> Callable[[dict[str, Any]], bool]:
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(
            request.query.get("fieldSelector", ""), rt.kind, rt.field_selectors
        )
        return lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(obj)

    async def _list(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rt = target.rt
        items, rv = self.store.list_objects(rt, target.namespace, self._filter(request, rt))
        meta: dict[str, Any] = {"resourceVersion": rv}
        start = request.query.get("continue", "")
        if start:
            try:
                after = json.loads(base64.urlsafe_b64decode(start.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request(f"continue key is not valid: {start}") from None
            items = [o for o in items if self._list_key(o) > after]
        limit = request.query.get("limit", "")
        if limit.isdigit() and int(limit) > 0 and len(items) > int(limit):
            rest = len(items) - int(limit)
            items = items[: int(limit)]
            token = json.dumps({"start": self._list_key(items[-1]), "rv": rv})
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            meta["remainingItemCount"] = rest
        for obj in items:
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    @staticmethod
    def _list_key(obj: dict[str, Any]) -> str:
        return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    async def _watch(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rt = target.rt
        accept = self._filter(request, rt)
        timeout_text = request.query.get("timeoutSeconds", "1800")
        if not timeout_text.isdigit():
            raise bad_request(f"invalid timeoutSeconds: {timeout_text}")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher, initial = self.store.watch(
                rt, target.namespace, accept, request.query.get("resourceVersion")
            )
        except ApiError as err:
            if err.code != 410:
                raise
            await response.prepare(request)
            line = json.dumps({"type": "ERROR", "object": err.status()}) + "\n"
            await response.write(line.encode())
            await response.write_eof()
            return response
        task = asyncio.current_task()
        if task is not None:
            self._watch_tasks.add(task)
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + int(timeout_text)
        try:
            for event in initial:
                await response.write(
                    (json.dumps({"type": event.type, "object": event.obj}) + "\n").encode()
                )
            while (remaining := deadline - loop.time()) > 0:
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                await response.write(
                    (json.dumps({"type": event.type, "object": event.obj}) + "\n").encode()
                )
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
            if task is not None:
                self._watch_tasks.discard(task)
        return response

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0]
        try:
            if "yaml" in content_type:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as err:
            raise bad_request(f"the body of the request could not be decoded: {err}") from None

    def _check_identity(self, target: _Target, obj: dict[str, Any]) -> dict[str, Any]:
        rt = target.rt
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if api_version and api_version != rt.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise bad_request(
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: the kind '
                f"in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        body_ns = meta.get("namespace")
        if rt.namespaced and body_ns and target.namespace and body_ns != target.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        if target.name is not None and meta.get("name") and meta["name"] != target.name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({target.name})"
            )
        return obj

    def _check_namespace(self, namespace: str) -> None:
        ns = self.store.find(NAMESPACES, "", namespace)
        if ns is None:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if ns["status"].get("phase") == "Terminating":
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                name=namespace,
                kind="namespaces",
            )

    def _prepare_new(self, target: _Target, obj: dict[str, Any]) -> dict[str, Any]:
        rt = target.rt
        obj = self._check_identity(target, obj)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{random_suffix()}"
        if rt.namespaced:
            assert target.namespace is not None
            meta["namespace"] = target.namespace
        if rt.has_status:
            obj.pop("status", None)
        validate(rt, obj, None)
        apply_defaults(rt, obj)
        if rt.kind == "Service":
            self._allocate_service(obj, None)
        if rt.has_status and "status" not in obj:
            obj["status"] = copy.deepcopy(_INITIAL_STATUS.get(rt.kind, {}))
        return obj

    def _allocate_service(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        assert self.loop is not None
        spec = obj["spec"]
        old_spec = (old or {}).get("spec") or {}
        if spec.get("type") != "ExternalName":
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP") or self.loop.allocate_cluster_ip()
            if spec["clusterIP"] != "None":
                spec["clusterIPs"] = [spec["clusterIP"]]
        old_ports = {(p.get("port"), p.get("protocol")): p for p in old_spec.get("ports") or []}
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            for port in spec.get("ports") or []:
                previous = old_ports.get((port.get("port"), port.get("protocol")), {})
                if not port.get("nodePort"):
                    port["nodePort"] = previous.get("nodePort") or self.loop.allocate_node_port()

    async def _create(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rt = target.rt
        if rt.namespaced:
            assert target.namespace is not None
            self._check_namespace(target.namespace)
        obj = self._prepare_new(target, raise_if_not_object(await self._body(request)))
        namespace = target.namespace or ""
        if request.query.get("dryRun") == "All":
            if self.store.find(rt, namespace, obj["metadata"]["name"]) is not None:
                raise already_exists(rt.plural, rt.group, obj["metadata"]["name"])
            obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
            return _json(obj, 201)
        if request.query.get("dryRun"):
            raise bad_request(f"unsupported dryRun value {request.query['dryRun']!r}")
        return _json(self.store.create(rt, namespace, obj), 201)

    async def _get(self, request: web.Request, target: _Target) -> web.StreamResponse:
        assert target.name is not None
        return _json(self.store.get(target.rt, target.namespace or "", target.name))

    def _write(self, target: _Target, obj: dict[str, Any]) -> dict[str, Any]:
        """Validate and store a full new version of an existing object (PUT and PATCH)."""
        rt, namespace, name = target.rt, target.namespace or "", target.name
        assert name is not None
        if NODES is rt:
            raise method_not_allowed("nodes are read-only on this test server")
        old = self.store.get(rt, namespace, name)
        obj = self._check_identity(target, obj)
        obj["metadata"].setdefault("name", name)
        if target.subresource == "status":
            return self.store.replace(rt, namespace, name, obj, status_only=True)
        if rt.has_status:
            obj["status"] = old.get("status")
        validate(rt, obj, old)
        apply_defaults(rt, obj)
        if rt.kind == "Service":
            self._allocate_service(obj, old)
        return self.store.replace(rt, namespace, name, obj)

    async def _update(self, request: web.Request, target: _Target) -> web.StreamResponse:
        if request.query.get("dryRun"):
            raise bad_request("dryRun is only supported on create by this test server")
        return _json(self._write(target, raise_if_not_object(await self._body(request))))

    async def _patch(self, request: web.Request, target: _Target) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        kind = _PATCH_TYPES.get(content_type)
        if kind is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_PATCH_TYPES)}",
            )
        if request.query.get("dryRun"):
            raise bad_request("dryRun is only supported on create by this test server")
        body = await self._body(request)
        rt, namespace, name = target.rt, target.namespace or "", target.name
        assert name is not None
        if kind == "apply":
            if not request.query.get("fieldManager"):
                raise bad_request(
                    "PATCH /apply requires fieldManager to be set: fieldManager is required for "
                    "apply requests"
                )
            body = raise_if_not_object(body)
            if self.store.find(rt, namespace, name) is None and target.subresource is None:
                if rt.namespaced:
                    self._check_namespace(namespace)
                created = self._prepare_new(target, body)
                return _json(self.store.create(rt, namespace, created), 201)
        current = self.store.get(rt, namespace, name)
        current["metadata"].pop("resourceVersion", None)
        if kind == "json":
            patched = json_patch(current, body)
        elif kind == "merge":
            patched = merge_patch(current, raise_if_not_object(body))
        else:
            patched = strategic_merge_patch(current, raise_if_not_object(body))
        patched = raise_if_not_object(patched)
        return _json(self._write(target, patched))

    def _delete_now(
        self, rt: ResourceType, namespace: str, name: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Delete one object by the API's rules, returning the response body."""
        if rt is NODES:
            raise method_not_allowed("nodes are read-only on this test server")
        current = self.store.get(rt, namespace, name)
        pre = options.get("preconditions") or {}
        if (pre.get("uid") and pre["uid"] != current["metadata"]["uid"]) or (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural} "{name}": Precondition failed',
                name=name,
                group=rt.group,
                kind=rt.plural,
            )
        if rt is NAMESPACES:
            if name in _SYSTEM_NAMESPACES:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                    name=name,
                    kind="namespaces",
                )
            stored = self.store.find(rt, "", name)
            assert stored is not None
            if stored["status"].get("phase") != "Terminating":
                stored["metadata"]["deletionTimestamp"] = now_rfc3339()
                stored["status"] = {"phase": "Terminating"}
                self.store.touch(rt, stored)
            return copy.deepcopy(stored)
        if options.get("propagationPolicy") == "Orphan":
            uid = current["metadata"]["uid"]
            for dep_rt in RESOURCES:
                for dep in list(self.store.items(dep_rt, namespace)):
                    refs = dep["metadata"].get("ownerReferences") or []
                    if any(r.get("uid") == uid for r in refs):
                        dep["metadata"]["ownerReferences"] = [
                            r for r in refs if r.get("uid") != uid
                        ]
                        self.store.touch(dep_rt, dep)
        deleted = self.store.delete(rt, namespace, name)
        if rt.returns_deleted:
            return deleted
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": rt.group,
                "kind": rt.plural,
                "uid": deleted["metadata"]["uid"],
            },
        }

    async def _options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    options = raise_if_not_object(json.loads(raw))
                except ValueError as err:
                    raise bad_request(
                        f"the body of the request could not be decoded: {err}"
                    ) from None
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        policy = options.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
                f'"{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
            )
        return options

    async def _delete(self, request: web.Request, target: _Target) -> web.StreamResponse:
        assert target.name is not None
        if request.query.get("dryRun"):
            raise bad_request("dryRun is only supported on create by this test server")
        options = await self._options(request)
        body = self._delete_now(target.rt, target.namespace or "", target.name, options)
        return _json(body)

    async def _delete_collection(self, request: web.Request, target: _Target) -> web.StreamResponse:
        rt = target.rt
        options = await self._options(request)
        items, _rv = self.store.list_objects(rt, target.namespace, self._filter(request, rt))
        deleted = []
        for obj in items:
            meta = obj["metadata"]
            self._delete_now(rt, meta.get("namespace", ""), meta["name"], options)
            obj.pop("kind", None)
            obj.pop("apiVersion", None)
            deleted.append(obj)
        return _json(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": deleted,
            }
        )


__all__ = ["ClusterBehaviour", "KubeApiServer", "NodeSpec", "TokenChecker"]
