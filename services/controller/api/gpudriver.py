"""GPUDriverApi: GPU drivers cloudlets install on their nodes (controller.md §3.17).

Create, update, delete and build changes are server-streaming with a progress stream per
driver; while a change runs the driver is `ChangeInProgress`, which blocks cloudlets from
taking it up. Validating driver builds (download, md5, package checks) and licence configs
needs the artifact registry's credentials, which live in Vault: until the Controller has a
Vault connection such requests are refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc.aio
from edgeproto import cloudlet_pb2, cloudlet_pb2_grpc, result_pb2

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from edge_cloud.objects import fields, keys, registry
from services.controller import _cloudlet
from services.controller._cloudlet_ops import CHANGE_IN_PROGRESS
from services.controller._cloudletinfo import CLOUDLET
from services.controller._engine import Txn
from services.controller._progress import compact_text
from services.controller._runtime import Runtime
from services.controller._tracked import Sink, TrackedRuntime, streamed

__all__ = ["UPDATABLE", "GPUDriverApi", "add", "check_build", "check_gpu_driver"]

GPU_DRIVER: Final = registry.by_class(cloudlet_pb2.GPUDriver)
UPDATABLE: Final = frozenset({"4", "6"})
"""license_config, properties."""
NO_REGISTRY: Final = (
    "needs the artifact registry credentials kept in Vault, which this Controller has no "
    "connection for"
)
_Ctx = grpc.aio.ServicerContext[Any, Any]


def check_build_name(build: cloudlet_pb2.GPUDriverBuild) -> None:
    """Raises InvalidArgument for a missing, reserved or invalid build name."""
    if not build.name:
        raise InvalidArgument("Missing gpu driver build name")
    if build.name == _cloudlet.GPU_DRIVER_LICENSE_CONFIG:
        raise InvalidArgument(
            f"{build.name} is a reserved name and hence cannot be used as a build name"
        )
    if not keys.valid_name(build.name):
        raise InvalidArgument(f"Invalid gpu driver build name: {build.name}")


def check_build(build: cloudlet_pb2.GPUDriverBuild) -> None:
    """The original's `GPUDriverBuild.Validate`.

    Raises:
        InvalidArgument: With the original's text.
    """
    check_build_name(build)
    if not build.driver_path:
        raise InvalidArgument("Missing driverpath")
    if not build.md5sum:
        raise InvalidArgument("Missing md5sum")
    if build.driver_path_creds:
        raise InvalidArgument(
            "Driver path creds are no longer supported, for private storage upload to the "
            "artifact registry"
        )
    if build.operating_system == cloudlet_pb2.LINUX and not build.kernel_version:
        raise InvalidArgument("Kernel version is required for Linux build")
    _cloudlet.check_enums(build)


def check_gpu_driver(driver: cloudlet_pb2.GPUDriver) -> None:
    """The original's `GPUDriver.Validate`.

    Raises:
        InvalidArgument: With the original's text.
    """
    keys.validate_key(driver)
    _cloudlet.check_enums(driver)
    names: set[str] = set()
    for build in driver.builds:
        check_build(build)
        if build.name in names:
            raise InvalidArgument(f"GPU driver build with name {build.name} already exists")
        names.add(build.name)


def _busy(driver: cloudlet_pb2.GPUDriver, ignore_state: bool) -> None:
    if not ignore_state and driver.state == CHANGE_IN_PROGRESS:
        raise FailedPrecondition(
            f"An action is already in progress for GPU driver {compact_text(driver.key)}"
        )


class GPUDriverApi(cloudlet_pb2_grpc.GPUDriverApiServicer):
    """Create, update, delete and show GPU drivers; add and remove builds."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _runtime(self) -> TrackedRuntime:
        if not isinstance(self._rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._rt

    async def _change(
        self,
        key: cloudlet_pb2.GPUDriverKey,
        sink: Sink,
        begin: Callable[[Txn], bool],
        finish: Callable[[Txn], None],
        done: str,
        *,
        cleanup: bool = False,
    ) -> None:
        """Mark the driver busy (`begin`), start its stream, apply `finish`, end the stream.

        On failure the busy state (and a delete-prepare) is cleared again.
        """
        rt = self._runtime()
        services = rt.tracked
        stream = services.progress.new_stream(key, sink)
        changed, revision = await rt.engine.apply_at(begin)
        if not changed:
            return
        error: BaseException | None = None
        with services.operation(stream):
            try:
                await stream.start(revision or 0, subscribe=False)
                await rt.engine.apply(finish)
                await stream.send(done)
            except BaseException as err:
                error = err
                await self._undo_state(key)
                raise
            finally:
                await stream.stop(error, cleanup=cleanup and error is None)

    async def _undo_state(self, key: cloudlet_pb2.GPUDriverKey) -> None:
        def clear(txn: Txn) -> None:
            driver = txn.get(GPU_DRIVER, key)
            if driver is None:
                return
            driver.state = ""
            driver.delete_prepare = False
            txn.put(driver)

        try:
            await self._rt.engine.apply(clear)
        except EdgeError:
            return

    async def CreateGPUDriver(
        self, request: cloudlet_pb2.GPUDriver, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Store a new driver; builds and licence configs need the registry (refused)."""
        driver = cloudlet_pb2.GPUDriver()
        driver.CopyFrom(request)
        driver.ClearField("fields")
        check_gpu_driver(driver)
        if driver.builds:
            raise FailedPrecondition(f"Validating GPU driver builds {NO_REGISTRY}")
        if driver.license_config:
            raise FailedPrecondition(f"Validating a GPU driver license config {NO_REGISTRY}")
        driver.ignore_state = False
        driver.delete_prepare = False

        def begin(txn: Txn) -> bool:
            if txn.get(GPU_DRIVER, driver.key) is not None:
                raise keys.already_exists(driver.key)
            new = cloudlet_pb2.GPUDriver()
            new.CopyFrom(driver)
            new.state = CHANGE_IN_PROGRESS
            txn.put(new)
            return True

        def finish(txn: Txn) -> None:
            current = txn.get(GPU_DRIVER, driver.key)
            if current is None:
                raise keys.not_found(driver.key)
            current.state = ""
            txn.put(current)

        async def work(sink: Sink) -> None:
            await self._change(driver.key, sink, begin, finish, "GPU driver created successfully")

        async for result in streamed(work):
            yield result

    async def UpdateGPUDriver(
        self, request: cloudlet_pb2.GPUDriver, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Change properties; licence configs need the registry (refused)."""
        paths = list(request.fields)
        fields.check_updatable(paths, UPDATABLE, cloudlet_pb2.GPUDriver.DESCRIPTOR)
        keys.validate_key(request)
        if fields.FieldSet(paths).has("4") and request.license_config:
            raise FailedPrecondition(f"Validating a GPU driver license config {NO_REGISTRY}")
        ignore_state = request.ignore_state

        def begin(txn: Txn) -> bool:
            current = txn.get(GPU_DRIVER, request.key)
            if current is None:
                raise keys.not_found(request.key)
            _busy(current, ignore_state)
            merged = cloudlet_pb2.GPUDriver()
            merged.CopyFrom(current)
            if not fields.apply_fields(merged, request, paths):
                return False
            check_gpu_driver(merged)
            current.state = CHANGE_IN_PROGRESS
            txn.put(current)
            return True

        def finish(txn: Txn) -> None:
            current = txn.get(GPU_DRIVER, request.key)
            if current is None:
                raise keys.not_found(request.key)
            fields.apply_fields(current, request, paths)
            if fields.FieldSet(paths).has("4"):
                current.license_config_md5sum = ""
            current.state = ""
            txn.put(current)

        async def work(sink: Sink) -> None:
            await self._change(request.key, sink, begin, finish, "GPU driver updated successfully")

        async for result in streamed(work):
            yield result

    async def DeleteGPUDriver(
        self, request: cloudlet_pb2.GPUDriver, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Mark it busy and deleting, refuse while cloudlets use it, delete."""
        keys.validate_key(request.key)
        ignore_state = request.ignore_state
        caches = self._rt.caches

        def begin(txn: Txn) -> bool:
            current = txn.get(GPU_DRIVER, request.key)
            if current is None:
                raise keys.not_found(request.key)
            if current.delete_prepare:
                raise keys.being_deleted(request.key)
            _busy(current, ignore_state)
            current.state = CHANGE_IN_PROGRESS
            current.delete_prepare = True
            txn.put(current)
            return True

        def finish(txn: Txn) -> None:
            users = [
                c.key.name for _, c in caches.items(CLOUDLET) if c.gpu_config.driver == request.key
            ]
            if users:
                raise FailedPrecondition(f"GPU driver in use by Cloudlet(s): {','.join(users)}")
            txn.delete(GPU_DRIVER, request.key)

        async def work(sink: Sink) -> None:
            await self._change(
                request.key, sink, begin, finish, "GPU driver deleted successfully", cleanup=True
            )

        async for result in streamed(work):
            yield result

    async def ShowGPUDriver(
        self, request: cloudlet_pb2.GPUDriver, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.GPUDriver]:
        """Every cached driver matching the filter (build credentials hidden)."""
        for driver in self._rt.engine.show(request):
            for build in driver.builds:
                build.driver_path_creds = ""
            yield driver

    async def AddGPUDriverBuild(
        self, request: cloudlet_pb2.GPUDriverBuildMember, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Validate the build, then refuse: checking it needs the registry."""
        keys.validate_key(request.key)
        check_build(request.build)
        driver = self._rt.caches.get(GPU_DRIVER, keys.key_string(request.key))
        if driver is None:
            raise keys.not_found(request.key)
        if any(b.name == request.build.name for b in driver.builds):
            raise AlreadyExists("GPU driver build with same name already exists")
        for _ in ():
            yield result_pb2.Result()
        raise FailedPrecondition(f"Validating GPU driver builds {NO_REGISTRY}")

    async def RemoveGPUDriverBuild(
        self, request: cloudlet_pb2.GPUDriverBuildMember, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Remove a build by name."""
        keys.validate_key(request.key)
        check_build_name(request.build)
        ignore_state = request.ignore_state

        def remove(txn: Txn) -> None:
            current = txn.get(GPU_DRIVER, request.key)
            if current is None:
                raise keys.not_found(request.key)
            _busy(current, ignore_state)
            for index, build in enumerate(current.builds):
                if build.name == request.build.name:
                    del current.builds[index]
                    txn.put(current)
                    return
            raise NotFound(f"Unable to find GPU driver build {request.build.name}")

        await self._rt.engine.apply(remove)
        yield result_pb2.Result(message="GPU driver build removed successfully")

    async def GetGPUDriverBuildURL(
        self, request: cloudlet_pb2.GPUDriverBuildMember, context: _Ctx
    ) -> cloudlet_pb2.GPUDriverBuildURL:
        """Deprecated in the original too."""
        raise Unimplemented("Deprecated, user now manages build URL")

    async def GetGPUDriverLicenseConfig(
        self, request: cloudlet_pb2.GPUDriverKey, context: _Ctx
    ) -> result_pb2.Result:
        """Deprecated in the original too."""
        raise Unimplemented("Deprecated, user now manages license config URL")


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudlet_pb2_grpc.add_GPUDriverApiServicer_to_server(GPUDriverApi(runtime), server)
    return ["edgeproto.GPUDriverApi"]
