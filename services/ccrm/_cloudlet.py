"""Cloudlet work: create, delete and changes of one cloudlet (crm_platforms.md §3.3, §6.2).

`apply` is `ApplyCloudlet`: the requested state says what to do, progress and the resulting
CloudletInfo go back through the sender, and a failure ends the call with the platform's
error after a CloudletInfo in state ERRORS naming it (what a CRM on the edge would report).
"""

from __future__ import annotations

import logging
from typing import Any, Final

from distributed_match_engine import appcommon_pb2
from edgeproto import autoscalepolicy_pb2, cloudlet_pb2, common_pb2

from edge_cloud.errors import EdgeError, Unimplemented
from edge_cloud.objects import keys
from edge_cloud.platform import CRM_COMPATIBILITY_VERSION, InfoSender, Platform
from services.ccrm._host import PlatformHost
from services.ccrm._stream import field_number

__all__ = ["CloudletWork"]

log = logging.getLogger(__name__)

CS = appcommon_pb2
TS = common_pb2
Info = cloudlet_pb2.CloudletInfo
ALL_FIELDS: Final = tuple(str(f.number) for f in Info.DESCRIPTOR.fields if f.name != "fields")
STATE: Final = field_number(Info, "state")
ERRORS: Final = field_number(Info, "errors")
MAINTENANCE: Final = field_number(Info, "maintenance_state")
TRUST_POLICY_STATE: Final = field_number(Info, "trust_policy_state")
_RESOURCE_FIELDS: Final = ("os_max_ram", "os_max_vcores", "os_max_vol_gb", "flavors",
                           "availability_zones", "os_images", "resources_snapshot",
                           "properties", "node_infos", "node_pools")  # fmt: skip


RESOURCE_PATHS: Final = tuple(field_number(Info, name) for name in _RESOURCE_FIELDS)


def _copy_resources(target: Info, source: Info) -> None:
    """Copy what `get_cloudlet_resources` gathered (the `RESOURCE_PATHS` fields)."""
    gathered: Any = Info()
    gathered.CopyFrom(source)
    out: Any = target
    for field in Info.DESCRIPTOR.fields:
        if field.name in _RESOURCE_FIELDS:
            out.ClearField(field.name)
        else:
            gathered.ClearField(field.name)
    target.MergeFrom(gathered)


class CloudletWork:
    """Cloudlet operations of `CloudletPlatformAPI`.

    Args:
        host: The hosted platforms.
    """

    def __init__(self, host: PlatformHost) -> None:
        self._host = host

    async def apply(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        """`ApplyCloudlet`: create, delete or apply a change, by the requested state.

        Raises:
            EdgeError: What failed (the platform's error, an unknown platform, ...).
        """
        if cloudlet.state == TS.CREATE_REQUESTED:
            await self._create(cloudlet, sender)
        elif cloudlet.state == TS.DELETE_REQUESTED:
            await self._delete(cloudlet, sender)
        elif cloudlet.crm_on_edge:
            return  # the CRM on the edge site does the work
        else:
            self._host.drop(keys.key_string(cloudlet.key))
            await self._changed(cloudlet, sender)

    async def _create(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        host = self._host
        if cloudlet.deployment_local:
            raise Unimplemented(
                "deployment_local cloudlets start a local CRM process, which comes with the "
                "CRM slice"
            )
        platform: Platform | None = None
        created = False
        try:
            flavor = host.platform_flavor(cloudlet)
            platform = await host.initialised(cloudlet, fresh=True)
            await platform.create_cloudlet(cloudlet, host.pf_config(cloudlet), flavor, sender)
            created = True
            if cloudlet.crm_on_edge:
                return  # the CRM sets up the root LB and reports READY itself
            await platform.init_ha_conditional(sender)
            sender.task("Gathering Cloudlet Info")
            gathered = await platform.get_cloudlet_resources()
        except EdgeError as err:
            if created and platform is not None:
                await self._undo_create(platform, cloudlet, sender)
            self._report_error(sender, err)
            raise

        def ready(info: Info) -> None:
            _copy_resources(info, gathered)
            info.compatibility_version = CRM_COMPATIBILITY_VERSION
            info.container_version = cloudlet.container_version
            info.controller_cache_received = True
            info.state = CS.CLOUDLET_STATE_READY
            del info.errors[:]
            info.trust_policy_state = TS.READY if cloudlet.trust_policy else TS.NOT_PRESENT

        sender.send_update(ready, ALL_FIELDS)

    async def _undo_create(
        self, platform: Platform, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]
    ) -> None:
        try:
            await platform.delete_cloudlet(cloudlet, self._host.pf_config(cloudlet), sender)
        except EdgeError as undo_err:
            log.warning("undo of cloudlet create %s failed: %s", cloudlet.key, undo_err)
        self._host.drop(keys.key_string(cloudlet.key))

    @staticmethod
    def _report_error(sender: InfoSender[Info], err: EdgeError) -> None:
        def errors(info: Info) -> None:
            info.state = CS.CLOUDLET_STATE_ERRORS
            del info.errors[:]
            info.errors.append(err.message)

        sender.send_update(errors, (STATE, ERRORS))

    async def _delete(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        host = self._host
        if cloudlet.deployment_local:
            raise Unimplemented(
                "deployment_local cloudlets run a local CRM process, which comes with the CRM slice"
            )
        platform = await host.initialised(cloudlet, fresh=True)
        await platform.delete_cloudlet(cloudlet, host.pf_config(cloudlet), sender)
        host.drop(keys.key_string(cloudlet.key))

    async def _changed(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        """`CloudletChanged` for a CCRM-run cloudlet: maintenance, trust policy, updates."""
        if cloudlet.maintenance_state == CS.CRM_REQUESTED:
            self._send_maintenance(sender, CS.CRM_UNDER_MAINTENANCE)
        elif cloudlet.maintenance_state == CS.NORMAL_OPERATION_INIT:
            self._send_maintenance(sender, CS.NORMAL_OPERATION)
        if cloudlet.trust_policy_state == TS.UPDATE_REQUESTED:
            await self._trust_policy(cloudlet, sender)
        if cloudlet.state == TS.UPDATE_REQUESTED:
            await self._update(cloudlet, sender)

    @staticmethod
    def _send_maintenance(
        sender: InfoSender[Info], state: appcommon_pb2.MaintenanceState.ValueType
    ) -> None:
        def set_state(info: Info) -> None:
            info.maintenance_state = state

        sender.send_update(set_state, (MAINTENANCE,))

    async def _trust_policy(
        self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]
    ) -> None:
        def set_state(state: common_pb2.TrackedState.ValueType) -> None:
            def fn(info: Info) -> None:
                info.trust_policy_state = state

            sender.send_update(fn, (TRUST_POLICY_STATE,))

        set_state(TS.UPDATING)
        try:
            platform = await self._host.initialised(cloudlet)
            policy = None
            if cloudlet.trust_policy:
                key = autoscalepolicy_pb2.PolicyKey(
                    organization=cloudlet.key.organization, name=cloudlet.trust_policy
                )
                policy = self._host.caches.trust_policies.get(keys.key_string(key))
                if policy is None:
                    raise keys.not_found(key)
            await platform.update_trust_policy(policy)
        except EdgeError:
            set_state(TS.UPDATE_ERROR)
            raise
        set_state(TS.READY if cloudlet.trust_policy else TS.NOT_PRESENT)

    async def _update(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        sender.send_state(CS.CLOUDLET_STATE_UPGRADE, reset=True)
        try:
            platform = await self._host.initialised(cloudlet)
            await platform.update_cloudlet(cloudlet, sender)
            gathered = await platform.get_cloudlet_resources()
        except EdgeError as err:
            sender.send_state(CS.CLOUDLET_STATE_ERRORS, error=err.message)
            raise

        def ready(info: Info) -> None:
            _copy_resources(info, gathered)
            info.state = CS.CLOUDLET_STATE_READY
            del info.errors[:]

        sender.send_update(ready, (STATE, ERRORS, *RESOURCE_PATHS))
