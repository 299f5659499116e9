"""Kubernetes `Status` errors, shaped the way the API server writes them.

The official client turns any non-2xx answer into `ApiException` carrying the body; callers
(and our platform code) branch on `status` and `reason`, so both must match the real server.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A failed request, rendered as a `Status` object with the HTTP code it belongs to."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str = "",
        group: str = "",
        kind: str = "",
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        """The `Status` body (kind Status, apiVersion v1) for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def qualified(plural: str, group: str) -> str:
    """`deployments.apps`, or `pods` for the core group, as the server names resources."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    """404 for a named object that does not exist."""
    return ApiError(
        404,
        "NotFound",
        f'{qualified(plural, group)} "{name}" not found',
        name=name,
        group=group,
        kind=plural,
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    """409 for a create whose name is taken."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(plural, group)} "{name}" already exists',
        name=name,
        group=group,
        kind=plural,
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    """409 for a write carrying a stale resourceVersion (optimistic concurrency)."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        name=name,
        group=group,
        kind=plural,
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 listing each bad field as `field: reason-text`, like the API server's validation.

    Args:
        kind: The object's kind (`Deployment`), used in the message.
        group: The API group.
        name: The object's name (may be empty).
        causes: (reason type, field path, message) triples, e.g.
            ("FieldValueRequired", "spec.selector", "Required value").
    """
    parts = [f"{field}: {msg}" for _, field, msg in causes]
    plural_group = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{plural_group} "{name}" is invalid: ' + ", ".join(parts)
        if len(parts) == 1
        else f'{plural_group} "{name}" is invalid: [' + ", ".join(parts) + "]",
        name=name,
        group=group,
        kind=kind,
        causes=[{"reason": r, "message": m, "field": f} for r, f, m in causes],
    )


def bad_request(message: str) -> ApiError:
    """400 for a request the server cannot decode or that contradicts its URL."""
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    """405 for a verb the resource does not support."""
    return ApiError(405, "MethodNotAllowed", message)


def unauthorized() -> ApiError:
    """401 without (or with a wrong) bearer token, as the API server answers anonymous calls."""
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> ApiError:
    """410 for a watch from a resourceVersion older than the kept history."""
    return ApiError(410, "Expired", message)
