"""VMPoolApi: pools of existing VMs that VM-pool platforms build on (controller.md §3.15).

A pool used by a cloudlet is changed through that cloudlet's CRM: the pool goes to
UpdateRequested with the wanted VMs, the CRM reports VMPoolInfo (via notify, to any
controller), and the call waits for it on the pool's Redis channel. A pool no cloudlet uses
(or any pool with an IGNORE_CRM override) is edited directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import grpc.aio
from edgeproto import common_pb2, result_pb2, vmpool_pb2, vmpool_pb2_grpc

from edge_cloud.errors import EdgeError, FailedPrecondition, InvalidArgument, Unavailable
from edge_cloud.objects import codec, fields, keys, registry
from edge_cloud.objects.gojson import enum_go_name
from services.controller import _cloudlet
from services.controller._cloudletinfo import CLOUDLET
from services.controller._engine import Txn
from services.controller._runtime import Runtime
from services.controller._sync import Caches
from services.controller._tracked import (
    CallContext,
    InfoWait,
    TrackedRuntime,
    seconds,
    wait_for_info,
)

__all__ = ["UPDATABLE", "VMPoolApi", "add", "check_vm", "check_vm_pool", "pool_cloudlet"]

VM_POOL: Final = registry.by_class(vmpool_pb2.VMPool)
VM_POOL_INFO: Final = registry.by_class(vmpool_pb2.VMPoolInfo)
UPDATABLE: Final = frozenset({"3", "7"})
"""vms, crm_override."""
_INVALID_IPS: Final = frozenset({"0.0.0.0", "127.0.0.1"})  # noqa: S104 - refused, not bound
_UPDATE_WAIT: Final = InfoWait(
    target=common_pb2.READY,
    error=common_pb2.UPDATE_ERROR,
    transitions=frozenset({common_pb2.UPDATING}),
    state_name=lambda s: enum_go_name(common_pb2.TrackedState.DESCRIPTOR, s),
    show="ShowVMPool",
)

_Ctx = grpc.aio.ServicerContext[Any, Any]


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "%" not in text


def check_vm_name(vm: vmpool_pb2.VM) -> None:
    """Raises InvalidArgument `Missing VM name` / `Invalid VM name`."""
    if not vm.name:
        raise InvalidArgument("Missing VM name")
    if not keys.valid_name(vm.name):
        raise InvalidArgument("Invalid VM name")


def check_vm(vm: vmpool_pb2.VM) -> None:
    """The original's `VM.Validate`, with its texts.

    Raises:
        InvalidArgument: Bad name, missing internal IP, unusable address.
    """
    check_vm_name(vm)
    external, internal = vm.net_info.external_ip, vm.net_info.internal_ip
    if external and (not _valid_ip(external) or external in _INVALID_IPS):
        raise InvalidArgument(f"Invalid Address: {external}")
    if not internal:
        raise InvalidArgument(f"Missing internal IP for VM: {vm.name}")
    if not _valid_ip(internal) or internal in _INVALID_IPS:
        # (the original names the external address here, often empty: a slip)
        raise InvalidArgument(f"Invalid Address: {internal}")


def check_vm_pool(pool: vmpool_pb2.VMPool) -> None:
    """The original's `VMPool.Validate`.

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(pool)
    _cloudlet.check_enums(pool)
    externals: set[str] = set()
    internals: set[str] = set()
    for vm in pool.vms:
        check_vm(vm)
        if vm.net_info.external_ip:
            if vm.net_info.external_ip in externals:
                raise InvalidArgument(
                    f"VM with same external IP {vm.net_info.external_ip} already exists"
                )
            externals.add(vm.net_info.external_ip)
        if vm.net_info.internal_ip:
            if vm.net_info.internal_ip in internals:
                raise InvalidArgument(
                    f"VM with same internal IP {vm.net_info.internal_ip} already exists"
                )
            internals.add(vm.net_info.internal_ip)
        if vm.state not in (vmpool_pb2.VM_FREE, vmpool_pb2.VM_FORCE_FREE):
            raise InvalidArgument("Invalid VM state, only VmForceFree state is allowed")


def _check_net_info(current: vmpool_pb2.VM, new: vmpool_pb2.VM) -> None:
    if current.net_info.external_ip and current.net_info.external_ip == new.net_info.external_ip:
        raise InvalidArgument("VM with same external IP already exists as part of VM pool")
    if current.net_info.internal_ip and current.net_info.internal_ip == new.net_info.internal_ip:
        raise InvalidArgument("VM with same internal IP already exists as part of VM pool")


def pool_cloudlet(caches: Caches, key: vmpool_pb2.VMPoolKey) -> Any:
    """The cloudlet using a pool (same organization, `vm_pool` = its name), or None."""
    for _, cloudlet in caches.items(CLOUDLET):
        if cloudlet.key.organization == key.organization and cloudlet.vm_pool == key.name:
            return cloudlet
    return None


class VMPoolApi(vmpool_pb2_grpc.VMPoolApiServicer):
    """Create, update, delete and show pools; add and remove members."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateVMPool(self, request: vmpool_pb2.VMPool, context: _Ctx) -> result_pb2.Result:
        """Validate fully, then store the pool if its key is free."""
        pool = vmpool_pb2.VMPool()
        pool.CopyFrom(request)
        pool.ClearField("crm_override")
        check_vm_pool(pool)
        await self._rt.engine.create(pool)
        return result_pb2.Result()

    async def UpdateVMPool(self, request: vmpool_pb2.VMPool, context: _Ctx) -> result_pb2.Result:
        """Replace the VM list; through the CRM when a cloudlet uses the pool."""
        update = vmpool_pb2.VMPool()
        update.CopyFrom(request)
        fields.check_updatable(list(update.fields), UPDATABLE, vmpool_pb2.VMPool.DESCRIPTOR)
        check_vm_pool(update)
        cctx = CallContext()
        cctx.take_override(update)
        cloudlet = pool_cloudlet(self._rt.caches, update.key)
        if cloudlet is not None and not cctx.ignore_crm:
            vms: dict[str, vmpool_pb2.VM] = {}
            for vm in update.vms:
                wanted = vmpool_pb2.VM()
                wanted.CopyFrom(vm)
                if wanted.state != vmpool_pb2.VM_FORCE_FREE:
                    wanted.state = vmpool_pb2.VM_UPDATE
                vms[wanted.name] = wanted
            await self._through_crm(cctx, cloudlet, update.key, vms)
            return result_pb2.Result()

        def direct(txn: Txn) -> None:
            current = txn.get(VM_POOL, update.key)
            if current is None:
                raise keys.not_found(update.key)
            merged = vmpool_pb2.VMPool()
            merged.CopyFrom(current)
            changed = bool(fields.apply_fields(merged, update, list(update.fields)))
            check_vm_pool(merged)
            for vm in merged.vms:
                if vm.state == vmpool_pb2.VM_FORCE_FREE:
                    vm.state = vmpool_pb2.VM_FREE
                    changed = True
            if not changed:
                return
            merged.state = common_pb2.READY
            txn.put(merged)

        await self._rt.engine.apply(direct)
        return result_pb2.Result()

    async def DeleteVMPool(self, request: vmpool_pb2.VMPool, context: _Ctx) -> result_pb2.Result:
        """Delete-prepare, refuse while a cloudlet uses the pool, delete."""
        engine = self._rt.engine

        def in_use(pool: vmpool_pb2.VMPool) -> None:
            if pool_cloudlet(engine.caches, pool.key) is not None:
                raise FailedPrecondition("VM pool in use by Cloudlet")

        await engine.delete(request, in_use=in_use)
        return result_pb2.Result()

    async def ShowVMPool(
        self, request: vmpool_pb2.VMPool, context: _Ctx
    ) -> AsyncIterator[vmpool_pb2.VMPool]:
        """Every cached pool matching the filter."""
        for pool in self._rt.engine.show(request):
            yield pool

    async def AddVMPoolMember(
        self, request: vmpool_pb2.VMPoolMember, context: _Ctx
    ) -> result_pb2.Result:
        """Add one VM; through the CRM when a cloudlet uses the pool."""
        keys.validate_key(request.key)
        check_vm(request.vm)
        cctx = CallContext()
        member = vmpool_pb2.VMPoolMember()
        member.CopyFrom(request)
        cctx.take_override(member)
        cloudlet = pool_cloudlet(self._rt.caches, member.key)
        if cloudlet is not None and not cctx.ignore_crm:
            vm = vmpool_pb2.VM()
            vm.CopyFrom(member.vm)
            vm.state = vmpool_pb2.VM_ADD
            await self._through_crm(cctx, cloudlet, member.key, {vm.name: vm})
            return result_pb2.Result()

        def add_member(txn: Txn, pool: vmpool_pb2.VMPool) -> None:
            for vm in pool.vms:
                if vm.name == member.vm.name:
                    raise FailedPrecondition("VM with same name already exists as part of VM pool")
                _check_net_info(vm, member.vm)
            pool.vms.append(member.vm)
            pool.state = common_pb2.READY

        await self._rt.engine.modify(VM_POOL, member.key, add_member)
        return result_pb2.Result()

    async def RemoveVMPoolMember(
        self, request: vmpool_pb2.VMPoolMember, context: _Ctx
    ) -> result_pb2.Result:
        """Remove one VM (absent ones are ignored); through the CRM when in use."""
        keys.validate_key(request.key)
        check_vm_name(request.vm)
        cctx = CallContext()
        member = vmpool_pb2.VMPoolMember()
        member.CopyFrom(request)
        cctx.take_override(member)
        cloudlet = pool_cloudlet(self._rt.caches, member.key)
        if cloudlet is not None and not cctx.ignore_crm:
            vm = vmpool_pb2.VM()
            vm.CopyFrom(member.vm)
            vm.state = vmpool_pb2.VM_REMOVE
            await self._through_crm(cctx, cloudlet, member.key, {vm.name: vm})
            return result_pb2.Result()

        def remove_member(txn: Txn, pool: vmpool_pb2.VMPool) -> None:
            for index, vm in enumerate(pool.vms):
                if vm.name == member.vm.name:
                    del pool.vms[index]
                    pool.state = common_pb2.READY
                    return

        await self._rt.engine.modify(VM_POOL, member.key, remove_member)
        return result_pb2.Result()

    async def _through_crm(
        self,
        cctx: CallContext,
        cloudlet: Any,
        key: vmpool_pb2.VMPoolKey,
        vms: Mapping[str, vmpool_pb2.VM],
    ) -> None:
        """The original's updateVMPoolInternal: request, wait for VMPoolInfo, reset state."""
        if not vms:
            raise InvalidArgument("no VMs specified")
        rt = self._rt
        if not isinstance(rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")

        def request(txn: Txn) -> None:
            pending = dict(vms)
            pool = txn.get(VM_POOL, key)
            if pool is None:
                raise keys.not_found(key)
            if pool.state == common_pb2.UPDATE_REQUESTED and not cctx.ignore_transient:
                raise FailedPrecondition("Action already in progress, please try again later")
            for index, vm in enumerate(pool.vms):
                for name, wanted in pending.items():
                    if vm.name == name:
                        if wanted.state == vmpool_pb2.VM_ADD:
                            raise FailedPrecondition(
                                f"VM {vm.name} already exists as part of VM pool"
                            )
                    elif wanted.state in (vmpool_pb2.VM_ADD, vmpool_pb2.VM_UPDATE):
                        _check_net_info(vm, wanted)
                if vm.name in pending:
                    pool.vms[index].CopyFrom(pending.pop(vm.name))
            for name, vm in pending.items():
                if vm.state == vmpool_pb2.VM_REMOVE:
                    raise FailedPrecondition(f"VM {name} does not exist in the pool")
                pool.vms.append(vm)
            pool.state = common_pb2.UPDATE_REQUESTED
            txn.put(pool)

        _, revision = await rt.engine.apply_at(request)
        services = rt.tracked
        stream = services.progress.new_stream(key, None)
        error: BaseException | None = None
        with services.operation(stream):
            try:
                await stream.start(revision or 0, subscribe=True)
                if not cloudlet.crm_on_edge:
                    raise FailedPrecondition("vm pool not supported off edge-site")
                pool = rt.caches.get(VM_POOL, keys.key_string(key))
                await wait_for_info(
                    _UPDATE_WAIT,
                    current=common_pb2.UPDATE_REQUESTED if pool is None else pool.state,
                    subscription=stream.subscription,
                    decode=lambda data: codec.decode(VM_POOL_INFO, data),
                    send=_discard,
                    success_msg="",
                    timeout=seconds(rt.settings().update_vm_pool_timeout),
                )
            except BaseException as err:
                error = err
                raise
            finally:
                await stream.stop(error, cleanup=True)

                def reset(txn: Txn) -> None:
                    pool = txn.get(VM_POOL, key)
                    if pool is None:
                        return
                    pool.state = common_pb2.TRACKED_STATE_UNKNOWN
                    del pool.errors[:]
                    txn.put(pool)

                try:
                    await rt.engine.apply(reset)
                except EdgeError:
                    if error is None:
                        raise


async def _discard(line: str) -> None:
    """Unary VMPool RPCs show no progress lines."""


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    vmpool_pb2_grpc.add_VMPoolApiServicer_to_server(VMPoolApi(runtime), server)
    return ["edgeproto.VMPoolApi"]
