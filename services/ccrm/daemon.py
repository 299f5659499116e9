"""Wiring of the CCRM daemon: platforms from the registry, notify caches, the three services."""

from __future__ import annotations

import logging
import os
from collections.abc import Coroutine
from typing import Any

import grpc.aio
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    clusterinst_pb2,
    flavor_pb2,
    network_pb2,
    settings_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
)

from edge_cloud.crmutil import LocalCrms, LocalCrmSettings
from edge_cloud.debug import attach as attach_debug
from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys
from edge_cloud.platform import PlatformCaches
from edge_cloud.server import Daemon
from edge_cloud.svcnode import NODE_TYPE_CCRM, my_node
from services.ccrm import api
from services.ccrm._cloudlet import set_local_crms
from services.ccrm._host import PlatformHost, load_platforms
from services.ccrm.config import CcrmConfig

__all__ = ["CcrmDaemon"]

log = logging.getLogger(__name__)


class CcrmDaemon(Daemon[CcrmConfig]):
    """The central CRM.

    Start-up: load the hosted platform classes (an unknown `--platforms` entry is a config
    error), register the notify caches, serve the three platform APIs. Background: the
    notify client to the Controller, which fills the caches and carries the hosted
    platforms' `PlatformFeatures` upstream (the Controller stores them; they are re-sent
    after every reconnect). Calls that need Controller objects answer NOT_FOUND until the
    caches hold them; ApplyCloudlet and GetCloudletResources carry their Cloudlet and work
    without. `deployment_local` cloudlets get a CRM process on this host
    (`edge_cloud.crmutil.LocalCrms`), stopped with their cloudlet or with this daemon.
    """

    name = "ccrm"

    def __init__(self, config: CcrmConfig) -> None:
        super().__init__(config)
        classes = load_platforms(config.platforms)
        self.notify = NotifyClient(config.notify_addrs, name=self.name, tls=config.tls)
        self.debug = attach_debug(self.notify, my_node(NODE_TYPE_CCRM, tls=config.tls is not None))
        notify = self.notify
        cloudlets = notify.cache(cloudlet_pb2.Cloudlet)
        caches = PlatformCaches(
            flavors=notify.cache(flavor_pb2.Flavor),
            cloudlets=cloudlets,
            cluster_insts=notify.cache(clusterinst_pb2.ClusterInst),
            apps=notify.cache(app_pb2.App),
            app_insts=notify.cache(appinst_pb2.AppInst),
            networks=notify.cache(network_pb2.Network),
            trust_policies=notify.cache(trustpolicy_pb2.TrustPolicy),
            trust_policy_exceptions=notify.cache(trustpolicyexception_pb2.TrustPolicyException),
        )
        self.host = PlatformHost(
            config, classes, caches, notify.cache(settings_pb2.Settings), dict(os.environ)
        )

        async def cloudlet_changed(
            new: cloudlet_pb2.Cloudlet, old: cloudlet_pb2.Cloudlet | None
        ) -> None:
            self.host.drop(keys.key_string(new.key))

        async def cloudlet_deleted(old: cloudlet_pb2.Cloudlet) -> None:
            self.host.drop(keys.key_string(old.key))

        cloudlets.on_update(cloudlet_changed)
        cloudlets.on_delete(cloudlet_deleted)
        public = config.controller_public_notify_addr
        self.local_crms = LocalCrms(
            LocalCrmSettings(
                notify_addrs=(public,) if public else config.notify_addrs,
                region=config.region,
                app_dns_root=config.app_dns_root,
                test_mode=config.test_mode,
                log_dir=config.cache_dir,
            ),
            os.environ,
        )
        set_local_crms(self.local_crms)

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        """The three platform services."""
        return api.add_all(
            server,
            api.CloudletPlatformApi(self.host),
            api.ClusterPlatformApi(self.host),
            api.AppInstPlatformApi(self.host),
        )

    async def start(self) -> None:
        """Queue the hosted platforms' features for the Controller."""
        for features in self.host.registrations():
            self.notify.send(features.to_proto())
        log.info(
            "hosting platforms %s as node type %s",
            ", ".join(f.platform_type for f in self.host.registrations()),
            self.host.node_type,
        )

    def background(self) -> list[Coroutine[Any, Any, None]]:
        """The notify client (reconnects by itself)."""
        return [self.notify.run()]

    async def close(self) -> None:
        """Stop the local CRMs this CCRM started (test and demo cloudlets)."""
        set_local_crms(None)
        await self.local_crms.close()
