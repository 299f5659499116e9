"""gRPC servicers of the Controller, one module per service of objects.md §3.1.

`add_all` registers them, plus UNIMPLEMENTED stand-ins for the services later slices serve.
"""

from __future__ import annotations

import grpc.aio

from services.controller._runtime import Runtime
from services.controller.api import (
    alert,
    alertpolicy,
    app,
    appinst,
    appinstclient,
    appinstlatency,
    autoprovpolicy,
    autoscalepolicy,
    baremetalhost,
    cloudlet,
    cloudletinfo,
    cloudletmanagedcluster,
    cloudletnode,
    clusterinst,
    controller,
    debug,
    device,
    flavor,
    gpudriver,
    network,
    operatorcode,
    organization,
    platformfeatures,
    ratelimit,
    refs,
    restagtable,
    settings,
    streamobj,
    svcnode,
    trustpolicy,
    trustpolicyexception,
    unimplemented,
    vmpool,
    zone,
    zonepool,
)

__all__ = ["add_all"]

_MODULES = (
    flavor,
    operatorcode,
    settings,
    zone,
    zonepool,
    restagtable,
    autoprovpolicy,
    autoscalepolicy,
    trustpolicy,
    trustpolicyexception,
    alertpolicy,
    alert,
    controller,
    refs,
    app,
    platformfeatures,
    gpudriver,
    vmpool,
    cloudlet,
    cloudletinfo,
    cloudletnode,
    clusterinst,
    appinst,
    network,
    streamobj,
    appinstclient,
    appinstlatency,
    device,
    organization,
    ratelimit,
    cloudletmanagedcluster,
    baremetalhost,
    svcnode,
    debug,
)


def add_all(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register every Controller service on `server`.

    Returns:
        Full names of the services, for health and reflection.
    """
    names: list[str] = []
    for module in _MODULES:
        names.extend(module.add(server, runtime))
    names.extend(unimplemented.add(server, exclude=frozenset(names)))
    return names
