"""The door to generated protobuf code, and the client side of our gRPC conventions.

Generated code lives in `gen/` (written by `make proto`, never committed). A tree that is
missing or older than `proto/` fails with descriptor errors far from the cause, so
`ensure_generated` compares the digest `make proto` recorded with the sources and raises
`GeneratedCodeMissing` ("run `make proto`") instead.

Importing this module never requires the generated tree: `scripts/gen_protos.py` imports
`proto_source_digest` from here to build it. Callers that need the tree call
`ensure_generated()` before importing `edgeproto` or `distributed_match_engine`.

Clients dial with `channel` (plaintext or TLS, a default deadline on unary calls) and wrap
calls in `call_errors` to get `edge_cloud.errors` types instead of `AioRpcError`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import grpc
import grpc.aio

from edge_cloud.config import TlsFiles
from edge_cloud.errors import from_rpc_error

__all__ = [
    "DEFAULT_TIMEOUT",
    "GEN_DIR",
    "PROTO_DIR",
    "GeneratedCodeMissing",
    "call_errors",
    "channel",
    "ensure_generated",
    "proto_source_digest",
]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
GEN_DIR: Final = REPO_ROOT / "gen"
PROTO_DIR: Final = REPO_ROOT / "proto"
BUILD_INFO: Final = "_build_info.py"

DEFAULT_TIMEOUT: Final = 30.0
"""Seconds a unary call may take when the caller gives no deadline of its own."""

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class GeneratedCodeMissing(ImportError):
    """`gen/` is absent or was generated from other .proto sources than those in `proto/`.

    An ImportError, because it stands in for the descriptor or import error that would
    otherwise follow.

    Attributes:
        reason: What exactly is missing or different.
    """

    MESSAGE: Final = "generated protobuf code is missing or stale: run `make proto`"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{self.MESSAGE} ({reason})")
        self.reason = reason


def proto_source_digest(proto_root: Path) -> str:
    """Fingerprint every `.proto` file under a directory, paths included.

    `make proto` stores it in `gen/_build_info.py` as `SOURCE_DIGEST`; `ensure_generated`
    recomputes it. Renaming, adding or removing a file changes it as much as editing one.

    Args:
        proto_root: The `-I` root of the sources (`proto/`).

    Returns:
        A hex SHA-256 over the sorted relative paths and contents, each length-prefixed so
        that no two different trees hash alike.
    """
    digest = hashlib.sha256()
    files = sorted((p.relative_to(proto_root).as_posix(), p) for p in proto_root.rglob("*.proto"))
    for relative, path in files:
        name, data = relative.encode(), path.read_bytes()
        digest.update(b"%d:%s%d:" % (len(name), name, len(data)))
        digest.update(data)
    return digest.hexdigest()


def _recorded_digest(build_info: Path) -> str | None:
    """Read `SOURCE_DIGEST` from the build info without importing it."""
    tree = ast.parse(build_info.read_text(encoding="utf-8"), str(build_info))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "SOURCE_DIGEST" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


@functools.cache
def ensure_generated(gen_dir: Path = GEN_DIR, proto_dir: Path = PROTO_DIR) -> None:
    """Check that generated code exists and matches the .proto sources.

    Without `proto_dir` (an installed copy with no sources) only presence is checked. A
    successful check is remembered, so calling this from every module is cheap.

    Args:
        gen_dir: Where `make proto` writes (`gen/`).
        proto_dir: The sources it was generated from (`proto/`).

    Raises:
        GeneratedCodeMissing: When the tree or its build info is missing, or stale.
    """
    build_info = gen_dir / BUILD_INFO
    if not build_info.is_file():
        raise GeneratedCodeMissing(f"{build_info} not found")
    if not proto_dir.is_dir():
        return
    recorded = _recorded_digest(build_info)
    if recorded is None:
        raise GeneratedCodeMissing(f"{build_info} records no SOURCE_DIGEST")
    if recorded != proto_source_digest(proto_dir):
        raise GeneratedCodeMissing(f"{proto_dir} changed since {gen_dir} was generated")


class _DefaultDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Give unary calls without a deadline a default one, so no call can hang forever.

    Streams are left alone: watches and notify streams are meant to stay open.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Req], Awaitable[grpc.aio.UnaryUnaryCall[_Req, _Resp]]
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Req,
    ) -> _Resp | grpc.aio.UnaryUnaryCall[_Req, _Resp]:
        """Fill in the timeout when the caller gave none, then make the call."""
        details = client_call_details
        if details.timeout is None:
            details = grpc.aio.ClientCallDetails(
                details.method,
                self.timeout,
                details.metadata,
                details.credentials,
                details.wait_for_ready,
            )
        return await continuation(details, request)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def channel(
    target: str,
    *,
    tls: TlsFiles | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """Open a `grpc.aio` channel the way every component of the platform does.

    Args:
        target: `host:port` of the server.
        tls: Client TLS: `ca` verifies the server (system roots when None); `cert` and
            `key` are presented for mTLS. Plaintext when None, meant for loopback.
        timeout: Default deadline in seconds for unary calls that set none; None for none.
        options: Extra grpc channel options.

    Returns:
        The channel; close it (`async with` or `await channel.close()`).
    """
    interceptors = [] if timeout is None else [_DefaultDeadline(timeout)]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca) if tls.ca else None,
        private_key=_read(tls.key),
        certificate_chain=_read(tls.cert),
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)


class _CallErrors:
    """Re-raise `AioRpcError` as the matching `EdgeError`; usable with `with` and `async with`."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            raise from_rpc_error(exc) from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def call_errors() -> _CallErrors:
    """Map failed calls in a block to `edge_cloud.errors` types, keeping the server's message.

    ::

        with api.call_errors():
            flavor = await stub.ShowFlavor(key)    # NOT_FOUND raises errors.NotFound

    Returns:
        A context manager for `with` or `async with`; the original `AioRpcError` is kept as
        `__cause__`.
    """
    return _CallErrors()
