"""OrganizationInUse against a real etcd: which types use an org, in the original's words."""

from __future__ import annotations

from typing import Any

import pytest
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    flavor_pb2,
    operatorcode_pb2,
    org_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import InvalidArgument
from services.controller._engine import Txn
from services.controller.api.organization import OrganizationApi
from tests.integration.controller.conftest import StartInstance

CTX: Any = None
CLOUDLET = cloudletkey_pb2.CloudletKey(organization="oporg", name="berlin")


async def put(engine: Any, *objs: Message) -> None:
    def fn(txn: Txn) -> None:
        for obj in objs:
            txn.put(obj)

    await engine.apply(fn)


async def in_use(api: OrganizationApi, name: str) -> tuple[int, str]:
    result = await api.OrganizationInUse(org_pb2.Organization(name=name), CTX)
    return result.code, result.message


async def test_organization_in_use(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = OrganizationApi(ctl.runtime)
    assert await in_use(api, "devorg") == (0, "")
    await put(
        ctl.engine,
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small")),  # names no org
        app_pb2.App(key=app_pb2.AppKey(organization="devorg", name="app", version="1")),
        clusterinst_pb2.ClusterInst(
            key=cluster_pb2.ClusterKey(organization="MobiledgeX", name="reservable0"),
            cloudlet_key=CLOUDLET,
            reservable=True,
            reserved_by="devorg2",
        ),
        appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(organization="devorg", name="inst"),
            cloudlet_key=CLOUDLET,
        ),
        operatorcode_pb2.OperatorCode(code="31026", organization="oporg"),
    )
    # sorted type names, as the original's Sync.UsesOrg
    assert await in_use(api, "devorg") == (1, "in use by some App, AppInst")
    assert await in_use(api, "oporg") == (1, "in use by some AppInst, ClusterInst, OperatorCode")
    assert await in_use(api, "devorg2") == (1, "in use by some ClusterInst")
    assert await in_use(api, "MobiledgeX") == (1, "in use by some ClusterInst")
    assert await in_use(api, "nobody") == (0, "")
    with pytest.raises(InvalidArgument, match="Organization name must be specified"):
        await in_use(api, "")
