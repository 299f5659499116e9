"""Changes to a running cloudlet: maintenance, trust policy, updates (crm_platforms.md §3.3).

The original's `CRMHandler.CloudletChanged`, shared by the CCRM (ApplyCloudlet for a cloudlet
it runs) and the CRM (its own Cloudlet changing over notify). Create and delete are not
here: they belong to the CCRM's `ApplyCloudlet`.
"""

from __future__ import annotations

from typing import Any, Final

from distributed_match_engine import appcommon_pb2
from edgeproto import autoscalepolicy_pb2, cloudlet_pb2, common_pb2

from edge_cloud.crmutil._fields import field_number
from edge_cloud.crmutil._source import PlatformSource
from edge_cloud.errors import EdgeError
from edge_cloud.objects import keys
from edge_cloud.platform import InfoSender

__all__ = ["ALL_FIELDS", "RESOURCE_PATHS", "CloudletChangeWork", "copy_resources"]

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


def copy_resources(target: Info, source: Info) -> None:
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


class CloudletChangeWork:
    """`CloudletChanged` for a cloudlet already running.

    Args:
        host: Controller objects and platforms.
    """

    def __init__(self, host: PlatformSource) -> None:
        self._host = host

    async def changed(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        """Maintenance handshake, trust policy and update, by the requested states.

        Raises:
            EdgeError: What failed, after the matching state was reported.
        """
        await self._changed(cloudlet, sender)

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
            copy_resources(info, gathered)
            info.state = CS.CLOUDLET_STATE_READY
            del info.errors[:]

        sender.send_update(ready, (STATE, ERRORS, *RESOURCE_PATHS))
