"""AppInst work: create, update, power and delete through the platform (§3.2).

The original's `CRMHandler.AppInstChanged`, shared by the CCRM and the CRM.
"""

from __future__ import annotations

import logging
from typing import Final

from edgeproto import app_pb2, appinst_pb2, clusterinst_pb2, common_pb2, flavor_pb2

from edge_cloud.crmutil._fields import field_number
from edge_cloud.crmutil._source import PlatformSource
from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects import keys
from edge_cloud.platform import Deployment, InfoSender, NoProgress, Platform

__all__ = ["AppInstWork"]

log = logging.getLogger(__name__)

TS = common_pb2
AI = appinst_pb2
Info = appinst_pb2.AppInstInfo
RUNTIME: Final = field_number(Info, "runtime_info")
POWER: Final = field_number(Info, "power_state")
URI: Final = field_number(Info, "uri")
# requested power state → (transient state, final state)
_POWER: Final = {
    AI.POWER_ON_REQUESTED: (AI.POWERING_ON, AI.POWER_ON),
    AI.POWER_OFF_REQUESTED: (AI.POWERING_OFF, AI.POWER_OFF),
    AI.REBOOT_REQUESTED: (AI.REBOOTING, AI.POWER_ON),
}


class AppInstWork:
    """`AppInstPlatformAPI.ApplyAppInst`.

    Args:
        host: Controller objects and platforms.
    """

    def __init__(self, host: PlatformSource) -> None:
        self._host = host

    def _app(self, inst: appinst_pb2.AppInst) -> app_pb2.App:
        found = self._host.caches.apps.get(keys.key_string(inst.app_key))
        if found is None:
            raise keys.not_found(inst.app_key)
        return found

    def _flavor(self, inst: appinst_pb2.AppInst) -> flavor_pb2.Flavor | None:
        if not inst.flavor.name:
            return None
        found = self._host.caches.flavors.get(keys.key_string(inst.flavor))
        if found is None:
            raise keys.not_found(inst.flavor)
        return found

    def _cluster(
        self, app: app_pb2.App, inst: appinst_pb2.AppInst
    ) -> clusterinst_pb2.ClusterInst | None:
        try:
            deployment = Deployment.of(app.deployment)
        except ValueError:
            raise InvalidArgument(f"unknown deployment type {app.deployment!r}") from None
        if not deployment.needs_cluster:
            return None
        found = self._host.caches.cluster_insts.get(keys.key_string(inst.cluster_key))
        if found is None:
            raise keys.not_found(inst.cluster_key)
        return found

    async def _platform(self, inst: appinst_pb2.AppInst) -> Platform:
        return await self._host.initialised(self._host.cloudlet(inst.cloudlet_key))

    async def apply(self, inst: appinst_pb2.AppInst, sender: InfoSender[Info]) -> bool:
        """Act on the requested state; other states need nothing.

        Returns:
            Whether a requested state was carried out (the caller then re-captures the
            cloudlet's resource snapshot).

        Raises:
            EdgeError: What failed, after the matching error state was sent (a missing
                App fails before any state, as in the original).
        """
        if inst.state not in (TS.CREATE_REQUESTED, TS.UPDATE_REQUESTED, TS.DELETE_REQUESTED):
            return False
        app = self._app(inst)
        if inst.state == TS.CREATE_REQUESTED:
            await self._create(app, inst, sender)
        elif inst.state == TS.UPDATE_REQUESTED:
            await self._update(app, inst, sender)
        else:
            await self._delete(app, inst, sender)
        return True

    async def _create(
        self, app: app_pb2.App, inst: appinst_pb2.AppInst, sender: InfoSender[Info]
    ) -> None:
        sender.send_state(TS.CREATING, reset=True)
        try:
            flavor = self._flavor(inst)
            cluster = self._cluster(app, inst)
            platform = await self._platform(inst)
        except EdgeError as err:
            sender.send_state(TS.CREATE_ERROR, error=err.message)
            raise
        uri = inst.uri
        try:
            await platform.create_app_inst(cluster, app, inst, flavor, sender)
        except EdgeError as err:
            sender.send_state(TS.CREATE_ERROR, error=f"Create App Inst failed: {err.message}")
            try:
                await platform.delete_app_inst(cluster, app, inst, NoProgress(), undo=True)
            except EdgeError as undo_err:
                log.info("cleanup of app instance %s failed: %s", inst.key, undo_err)
            raise
        if inst.uri != uri:
            sender.send_update(lambda info: setattr(info, "uri", inst.uri), (URI,))
        sender.send_update(lambda info: setattr(info, "power_state", AI.POWER_ON), (POWER,))
        await self._runtime(platform, cluster, app, inst, sender)
        sender.send_state(TS.READY)

    async def _runtime(
        self,
        platform: Platform,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        inst: appinst_pb2.AppInst,
        sender: InfoSender[Info],
    ) -> None:
        try:
            runtime = await platform.get_app_inst_runtime(cluster, app, inst)
        except EdgeError as err:
            log.warning("cannot get the runtime of app instance %s: %s", inst.key, err)
            return
        sender.send_update(lambda info: info.runtime_info.CopyFrom(runtime), (RUNTIME,))

    async def _update(
        self, app: app_pb2.App, inst: appinst_pb2.AppInst, sender: InfoSender[Info]
    ) -> None:
        sender.send_state(TS.UPDATING, reset=True)
        try:
            flavor = self._flavor(inst)
            platform = await self._platform(inst)
        except EdgeError as err:
            sender.send_state(TS.UPDATE_ERROR, error=err.message)
            raise
        power = _POWER.get(inst.power_state)
        if power is not None:
            transient, final = power
            sender.send_update(lambda info: setattr(info, "power_state", transient), (POWER,))
            try:
                await platform.set_power_state(app, inst, sender)
            except EdgeError as err:
                sender.send_update(
                    lambda info: setattr(info, "power_state", AI.POWER_STATE_ERROR), (POWER,)
                )
                sender.send_state(TS.UPDATE_ERROR, error=err.message)
                raise
            sender.send_update(lambda info: setattr(info, "power_state", final), (POWER,))
            sender.send_state(TS.READY)
            return
        try:
            cluster = self._cluster(app, inst)
            await platform.update_app_inst(cluster, app, inst, flavor, sender)
        except EdgeError as err:
            sender.send_state(TS.UPDATE_ERROR, error=f"Update App Inst failed: {err.message}")
            raise
        await self._runtime(platform, cluster, app, inst, sender)
        sender.send_state(TS.READY)

    async def _delete(
        self, app: app_pb2.App, inst: appinst_pb2.AppInst, sender: InfoSender[Info]
    ) -> None:
        sender.send_state(TS.DELETING, reset=True)
        try:
            cluster = self._cluster(app, inst)
            platform = await self._platform(inst)
            await platform.delete_app_inst(cluster, app, inst, sender)
        except EdgeError as err:
            sender.send_state(TS.DELETE_ERROR, error=err.message)
            raise
        sender.send_state(TS.DELETE_DONE)
