"""The one exception tree of the platform; each class knows the gRPC status it travels as.

Code raises these on purpose; the server interceptor turns them into a status and
`edge_cloud.api.call_errors` turns a status back into the same class, so callers on both
sides of a gRPC hop catch types instead of comparing codes::

    EdgeError                        INTERNAL (also: anything unexpected, remote or local)
    ├── InvalidArgument              INVALID_ARGUMENT
    │   └── ConfigError              INVALID_ARGUMENT (bad flag or variable; daemons exit 2)
    ├── NotFound                     NOT_FOUND
    ├── AlreadyExists                ALREADY_EXISTS
    ├── FailedPrecondition           FAILED_PRECONDITION
    │   └── PlatformPermanentError   FAILED_PRECONDITION (the cloud refused; do not retry)
    ├── Aborted                      ABORTED
    ├── ResourceExhausted            RESOURCE_EXHAUSTED
    ├── Unauthenticated              UNAUTHENTICATED
    ├── PermissionDenied             PERMISSION_DENIED
    ├── Unavailable                  UNAVAILABLE
    │   └── PlatformTransientError   UNAVAILABLE (the cloud call failed; back off and retry)
    ├── DeadlineExceeded             DEADLINE_EXCEEDED
    └── Unimplemented                UNIMPLEMENTED
        └── NotSupportedByPlatform   UNIMPLEMENTED (a plugin asked for an undeclared feature)

Platform errors subclass the generic ones so a caller that only cares about "retry later"
catches `Unavailable` and gets the platform flavour too. Messages are sentences a person can
act on and name the key ("Flavor key {...} not found").
"""

from __future__ import annotations

from typing import ClassVar, Final

import grpc
import grpc.aio

__all__ = [
    "Aborted",
    "AlreadyExists",
    "ConfigError",
    "DeadlineExceeded",
    "EdgeError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "NotSupportedByPlatform",
    "PermissionDenied",
    "PlatformPermanentError",
    "PlatformTransientError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
    "from_status",
]


class EdgeError(Exception):
    """Anything we raise on purpose; `code` is what a gRPC client receives.

    Raised bare it means INTERNAL; `from_status` also returns a bare `EdgeError` for status
    codes that have no class of their own (UNKNOWN, DATA_LOSS, ...), naming the code in the
    message so nothing is lost on the way back.

    Attributes:
        message: The human-readable reason, sent as the gRPC status details.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(EdgeError):
    """The request is malformed or names something impossible; retrying will not help."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ConfigError(InvalidArgument):
    """A flag, variable or file given to a daemon cannot be used.

    A daemon that meets one exits with status 2 and prints the message as one line, so the
    message must say which flag or variable is wrong and why.
    """


class NotFound(EdgeError):
    """The key in the request does not exist; the message names the key."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EdgeError):
    """The key in a create request is taken; the message names the key."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EdgeError):
    """The object is in use or in the wrong state, or the platform does not offer the feature."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PlatformPermanentError(FailedPrecondition):
    """The cloud refused the request; the object goes to its error state instead of retrying."""


class Aborted(EdgeError):
    """An etcd transaction kept losing its race after bounded retries; the caller may retry."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(EdgeError):
    """A quota, capacity or rate limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(EdgeError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EdgeError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(EdgeError):
    """A dependency is down; the same request may succeed later."""

    code = grpc.StatusCode.UNAVAILABLE


class PlatformTransientError(Unavailable):
    """A cloud call failed in a way worth retrying; the reconciler backs off.

    Attributes:
        retry_after: Seconds the cloud asked us to wait, when it said so; reconcilers use it
            instead of their own backoff step.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(EdgeError):
    """A dependency was too slow, or the caller's deadline passed."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(EdgeError):
    """The method or operation does not exist on the other side.

    Kept apart from `NotSupportedByPlatform` because a server answers UNIMPLEMENTED for any
    method it does not serve, which says nothing about platforms.
    """

    code = grpc.StatusCode.UNIMPLEMENTED


class NotSupportedByPlatform(Unimplemented):
    """A plugin was asked for something its features do not declare: our bug, not the user's.

    The Controller checks features and refuses with FAILED_PRECONDITION before calling a
    plugin, so reaching this means that check is missing.
    """


_BY_CODE: Final[dict[grpc.StatusCode, type[EdgeError]]] = {
    cls.code: cls
    for cls in (
        EdgeError,
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
    )
}


def from_status(code: grpc.StatusCode, message: str) -> EdgeError:
    """Rebuild the exception a server raised from the status its client received.

    The generic class of each code comes back (UNAVAILABLE gives `Unavailable`, not
    `PlatformTransientError`): the wire carries no more than the code.

    Args:
        code: The gRPC status code; OK is a caller bug and maps to a bare `EdgeError`.
        message: The status details.

    Returns:
        The exception to raise; codes without a class give a bare `EdgeError` whose message
        starts with the code's name.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return EdgeError(f"{code.name}: {message}")
    return cls(message)


def from_rpc_error(error: grpc.aio.AioRpcError) -> EdgeError:
    """Turn a failed client call into our exception, keeping the server's message.

    Args:
        error: What a `grpc.aio` stub raised.

    Returns:
        The matching `EdgeError`; raise it `from error` to keep the debug string.
    """
    return from_status(error.code(), error.details() or "")
