"""Cloudlet work: create, delete and changes of one cloudlet (crm_platforms.md §3.3, §6.2).

`apply` is `ApplyCloudlet`: the requested state says what to do, progress and the resulting
CloudletInfo go back through the sender, and a failure ends the call with the platform's
error after a CloudletInfo in state ERRORS naming it (what a CRM on the edge would report).
"""

from __future__ import annotations

import logging
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, common_pb2

from edge_cloud.crmutil import (
    ALL_FIELDS,
    CloudletChangeWork,
    LocalCrms,
    copy_resources,
    field_number,
)
from edge_cloud.errors import EdgeError, FailedPrecondition
from edge_cloud.objects import keys
from edge_cloud.platform import CRM_COMPATIBILITY_VERSION, InfoSender, Platform
from services.ccrm._host import PlatformHost

__all__ = ["CloudletWork"]

log = logging.getLogger(__name__)

CS = appcommon_pb2
TS = common_pb2
Info = cloudlet_pb2.CloudletInfo
STATE: Final = field_number(Info, "state")
ERRORS: Final = field_number(Info, "errors")


_LOCAL_CRMS: list[LocalCrms] = []


def set_local_crms(launcher: LocalCrms | None) -> None:
    """Where `deployment_local` cloudlets get their CRM process (set by the daemon).

    Module-wide because the services that create `CloudletWork` are built from the host
    alone; one CCRM runs per process.
    """
    _LOCAL_CRMS[:] = [] if launcher is None else [launcher]


def _local_crms(cloudlet: cloudlet_pb2.Cloudlet) -> LocalCrms | None:
    """The launcher for a `deployment_local` cloudlet, None for any other.

    Raises:
        FailedPrecondition: A local cloudlet, but this CCRM starts no local CRMs.
    """
    if not cloudlet.deployment_local:
        return None
    if not _LOCAL_CRMS:
        raise FailedPrecondition(
            f"cloudlet {keys.key_string(cloudlet.key)} is deployment_local, but this CCRM "
            "starts no local CRM processes"
        )
    return _LOCAL_CRMS[0]


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
        local = _local_crms(cloudlet)
        platform: Platform | None = None
        created = False
        try:
            flavor = host.platform_flavor(cloudlet)
            platform = await host.initialised(cloudlet, fresh=True)
            await platform.create_cloudlet(cloudlet, host.pf_config(cloudlet), flavor, sender)
            created = True
            if local is not None:
                sender.step("Starting the local CRM")
                await local.start(cloudlet.key, cloudlet.platform_type)
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
            copy_resources(info, gathered)
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
        local = _local_crms(cloudlet)
        if local is not None:
            await local.stop(cloudlet.key)
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
        local = _local_crms(cloudlet)
        platform = await host.initialised(cloudlet, fresh=True)
        await platform.delete_cloudlet(cloudlet, host.pf_config(cloudlet), sender)
        if local is not None:
            await local.stop(cloudlet.key)  # it would also stop when its Cloudlet goes
        host.drop(keys.key_string(cloudlet.key))

    async def _changed(self, cloudlet: cloudlet_pb2.Cloudlet, sender: InfoSender[Info]) -> None:
        """`CloudletChanged` for a CCRM-run cloudlet: the shared handler."""
        await CloudletChangeWork(self._host).changed(cloudlet, sender)
