"""BareMetalHostApi: the bare-metal inventory of cloudlets, from their platforms (issue 4).

Bare-metal platforms (cluster-API/metal3, `fakebaremetal`) build clusters out of physical
hosts; operators need to see which hosts exist and in what state. Nothing of it is stored:
each Show asks the CCRM of every matching cloudlet whose platform `supports_bare_metal`
(`CloudletPlatformAPI.GetBareMetalHosts`) and passes on the hosts that match the filter.

As in the original, cloudlets run by a CRM on the edge site and platforms without bare metal
are skipped silently: a wildcard Show over a region lists what can be listed. A failure of
one cloudlet does not hide the hosts of the others; the call then ends with every
cloudlet's error in one message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import baremetalhost_pb2, baremetalhost_pb2_grpc, cloudlet_pb2, cloudletkey_pb2

from edge_cloud.errors import EdgeError, Unavailable
from edge_cloud.objects import keys, match
from services.controller._inst_common import PLATFORM_FEATURES
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime, seconds

__all__ = ["BareMetalHostApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class BareMetalHostApi(baremetalhost_pb2_grpc.BareMetalHostApiServicer):
    """ShowBareMetalHost."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowBareMetalHost(
        self, request: baremetalhost_pb2.BareMetalHost, context: _Ctx
    ) -> AsyncIterator[baremetalhost_pb2.BareMetalHost]:
        """Hosts of the cloudlets `key.organization`/`key.cloudlet` select (empty: all).

        Every other non-empty field of the request filters the hosts too (a `status`, a
        `hardware_profile`, a label).

        Raises:
            EdgeError: After streaming what the others returned, when a cloudlet's CCRM
                failed; the message names each failed cloudlet.
        """
        rt = self._rt
        if not isinstance(rt, TrackedRuntime):
            raise Unavailable("this Controller runs without its CCRM clients")
        wanted = cloudlet_pb2.Cloudlet(
            key=cloudletkey_pb2.CloudletKey(
                organization=request.key.organization, name=request.key.cloudlet
            )
        )
        failures: list[EdgeError] = []
        for cloudlet in sorted(rt.engine.show(wanted), key=lambda c: keys.key_string(c.key)):
            try:
                async for host in self._hosts(rt, cloudlet, request):
                    yield host
            except EdgeError as err:
                failures.append(type(err)(f"{keys.key_string(cloudlet.key)}: {err.message}"))
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise type(failures[0])(", ".join(f.message for f in failures))

    @staticmethod
    async def _hosts(
        rt: TrackedRuntime,
        cloudlet: cloudlet_pb2.Cloudlet,
        request: baremetalhost_pb2.BareMetalHost,
    ) -> AsyncIterator[baremetalhost_pb2.BareMetalHost]:
        """The matching hosts of one cloudlet; nothing when it has no bare-metal channel."""
        if cloudlet.crm_on_edge:
            return  # only CCRM-run cloudlets answer this (the original)
        features = rt.caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
        if features is None:
            raise keys.not_found(
                cloudlet_pb2.PlatformFeatures(platform_type=cloudlet.platform_type)
            )
        if not features.supports_bare_metal:
            return
        listed: AsyncIterator[baremetalhost_pb2.BareMetalHost] = rt.tracked.ccrm.stream(
            features.node_type,
            lambda stub, timeout: stub.GetBareMetalHosts(cloudlet.key, timeout=timeout),
            f"listing the bare-metal hosts of cloudlet {keys.key_string(cloudlet.key)}",
            timeout=seconds(rt.settings().ccrm_api_timeout),
        )
        async for host in listed:
            # the platform knows its hosts by name; the key's cloudlet part is ours to set
            host.key.organization = cloudlet.key.organization
            host.key.cloudlet = cloudlet.key.name
            if match.matches(request, host):
                yield host


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    baremetalhost_pb2_grpc.add_BareMetalHostApiServicer_to_server(BareMetalHostApi(runtime), server)
    return ["edgeproto.BareMetalHostApi"]
