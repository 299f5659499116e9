import grpc
import grpc.aio
import pytest

from edge_cloud import errors
from edge_cloud.errors import (
    EdgeError,
    from_rpc_error,
    from_status,
)

# Each class that from_status returns for its code: the generic one per code.
GENERIC = [
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.FailedPrecondition,
    errors.Aborted,
    errors.ResourceExhausted,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.Unavailable,
    errors.DeadlineExceeded,
    errors.Unimplemented,
]


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.EdgeError, grpc.StatusCode.INTERNAL),
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PlatformPermanentError, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Aborted, grpc.StatusCode.ABORTED),
        (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.PlatformTransientError, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
        (errors.NotSupportedByPlatform, grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_each_class_carries_its_status_code(cls: type[EdgeError], code: grpc.StatusCode) -> None:
    assert cls.code is code
    assert issubclass(cls, EdgeError)


@pytest.mark.parametrize("cls", GENERIC, ids=lambda c: c.__name__)
def test_from_status_gives_back_the_generic_class(cls: type[EdgeError]) -> None:
    error = from_status(cls.code, "Flavor key {name: x1} not found")
    assert type(error) is cls
    assert error.message == "Flavor key {name: x1} not found"
    assert str(error) == error.message


def test_platform_errors_come_back_as_their_generic_parent() -> None:
    transient = errors.PlatformTransientError("nova is busy", retry_after=2.5)
    assert transient.retry_after == 2.5
    assert isinstance(transient, errors.Unavailable)
    assert type(from_status(transient.code, transient.message)) is errors.Unavailable
    permanent = errors.PlatformPermanentError("quota")
    assert type(from_status(permanent.code, "quota")) is errors.FailedPrecondition
    unsupported = errors.NotSupportedByPlatform("fake has no trust policies")
    assert type(from_status(unsupported.code, "x")) is errors.Unimplemented


def test_internal_maps_to_the_base_class() -> None:
    error = from_status(grpc.StatusCode.INTERNAL, "internal error (id abcd1234)")
    assert type(error) is EdgeError
    assert error.message == "internal error (id abcd1234)"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS, grpc.StatusCode.CANCELLED]
)
def test_codes_without_a_class_keep_their_name_in_the_message(code: grpc.StatusCode) -> None:
    error = from_status(code, "disk ate it")
    assert type(error) is EdgeError
    assert error.message == f"{code.name}: disk ate it"


def test_from_rpc_error_keeps_code_and_details() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="App key {name: a} already exists",
    )
    error = from_rpc_error(rpc_error)
    assert type(error) is errors.AlreadyExists
    assert error.message == "App key {name: a} already exists"


def test_from_rpc_error_without_details() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata()
    )
    assert from_rpc_error(rpc_error).message == ""


def test_module_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name[0].isupper():
            assert name in doc, name
