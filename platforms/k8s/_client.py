"""A Kubernetes API client built from kubeconfig bytes, with errors our callers understand.

Managed-Kubernetes platforms get a kubeconfig from their provider for every operation
(crm_platforms.md §10); this wraps the official async client (`kubernetes.aio`) around one
without touching `~/.kube` or global client configuration, so several clusters can be
driven from one CCRM at once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any

import aiohttp
import yaml
from kubernetes.aio import client as kclient
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config import ConfigException, load_kube_config_from_dict

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PlatformTransientError,
    Unauthenticated,
)

__all__ = ["KubeClient", "api_error", "kube_errors"]


def _status_body(err: ApiException) -> dict[str, Any]:
    body: Any = err.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                return parsed
    return {}


def api_error(err: ApiException, what: str) -> EdgeError:
    """Our error for an API server's refusal, naming the object and the server's reason.

    Args:
        err: The client's exception.
        what: What we were doing, e.g. `create Deployment "web" in namespace "ns"`.

    Returns:
        NotFound, AlreadyExists, InvalidArgument (400/422), Unauthenticated (401),
        PermissionDenied (403), FailedPrecondition (409 Conflict), or PlatformTransientError
        (429, 5xx, anything else), so callers branch on our classes, not HTTP codes.
    """
    body = _status_body(err)
    status = int(err.status or 0)
    reason = str(body.get("reason") or err.reason or "")
    detail = str(body.get("message") or err.reason or "no details")
    message = f"Kubernetes API: cannot {what}: {detail}"
    kinds: dict[int, type[EdgeError]] = {
        400: InvalidArgument,
        401: Unauthenticated,
        403: PermissionDenied,
        404: NotFound,
        409: AlreadyExists if reason == "AlreadyExists" else FailedPrecondition,
        422: InvalidArgument,
    }
    base = kinds.get(status)
    if base is None:
        retry = None
        headers = err.headers or {}
        with contextlib.suppress(TypeError, ValueError):
            retry = float(str(headers.get("Retry-After")))
        error: EdgeError = PlatformTransientError(message, retry_after=retry)
    else:
        error = base(message)
    return error


@contextlib.contextmanager
def kube_errors(what: str) -> Iterator[None]:
    """Turn client and connection failures inside the block into our errors.

    Raises:
        EdgeError: See `api_error`; PlatformTransientError when the server is unreachable.
    """
    try:
        yield
    except ApiException as err:
        raise api_error(err, what) from None
    except aiohttp.ClientConnectorCertificateError as err:
        raise Unauthenticated(
            f"Kubernetes API: cannot {what}: the server's certificate is not trusted by the "
            f"kubeconfig's certificate-authority-data ({err.certificate_error})"
        ) from None
    except (aiohttp.ClientError, TimeoutError) as err:
        raise PlatformTransientError(
            f"Kubernetes API: cannot {what}: {type(err).__name__}: {err}"
        ) from None


class KubeClient:
    """An async Kubernetes client for one cluster, from kubeconfig bytes.

    Build it with `KubeClient.from_kubeconfig(data)` and use it as `async with`: entering
    loads the kubeconfig (token or client certificate, CA data) into a private client
    configuration, leaving closes the connection pool.

    Attributes:
        server: The API server URL from the kubeconfig.
        default_namespace: The current context's namespace, "default" when it has none.
    """

    def __init__(self, config: dict[str, Any], context: str | None) -> None:
        self._config = config
        self._context = context
        self._api: kclient.ApiClient | None = None
        self.server = ""
        self.default_namespace = "default"

    @classmethod
    def from_kubeconfig(cls, kubeconfig: bytes, *, context: str | None = None) -> KubeClient:
        """Parse kubeconfig bytes (YAML or JSON); the connection is made on `async with`.

        Raises:
            InvalidArgument: The bytes are not a kubeconfig, or name a missing context.
        """
        try:
            config = yaml.safe_load(kubeconfig)
        except yaml.YAMLError as err:
            raise InvalidArgument(f"the kubeconfig is not valid YAML: {err}") from None
        if not isinstance(config, dict) or not config.get("clusters"):
            raise InvalidArgument("the kubeconfig has no clusters")
        wanted = context or config.get("current-context")
        contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
        if wanted not in contexts:
            raise InvalidArgument(
                f"the kubeconfig has no context {wanted!r} (it has {sorted(contexts)})"
            )
        return cls(config, context)

    async def __aenter__(self) -> KubeClient:
        configuration = kclient.Configuration()
        # The loader is untyped; give it a signature once instead of silencing mypy per call.
        load: Callable[..., Awaitable[object]] = load_kube_config_from_dict
        try:
            await load(self._config, context=self._context, client_configuration=configuration)
        except ConfigException as err:
            raise InvalidArgument(f"the kubeconfig cannot be used: {err}") from None
        self.server = str(configuration.host)
        wanted = self._context or self._config.get("current-context")
        for entry in self._config.get("contexts") or []:
            if entry.get("name") == wanted:
                self.default_namespace = (entry.get("context") or {}).get("namespace") or "default"
        self._api = kclient.ApiClient(configuration)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._api is not None:
            close: Callable[[], Awaitable[None]] = self._api.close
            await close()
            self._api = None

    @property
    def api(self) -> kclient.ApiClient:
        """The underlying client, for API groups this module does not wrap.

        Raises:
            FailedPrecondition: Used outside `async with`.
        """
        if self._api is None:
            raise FailedPrecondition("KubeClient used outside `async with`")
        return self._api

    @property
    def core(self) -> kclient.CoreV1Api:
        """core/v1."""
        return kclient.CoreV1Api(self.api)

    @property
    def apps(self) -> kclient.AppsV1Api:
        """apps/v1."""
        return kclient.AppsV1Api(self.api)

    @property
    def networking(self) -> kclient.NetworkingV1Api:
        """networking.k8s.io/v1 (Ingresses, NetworkPolicies)."""
        return kclient.NetworkingV1Api(self.api)
