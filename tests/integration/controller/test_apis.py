"""The remaining slice-1 APIs against a real etcd: exact texts of the original."""

from __future__ import annotations

from typing import Any

import pytest
from edgeproto import (
    alertpolicy_pb2,
    cloudlet_pb2,
    refs_pb2,
    restagtable_pb2,
    settings_pb2,
    trustpolicy_pb2,
)

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from edge_cloud.objects import codec, keys
from edge_cloud.objects.durations import SECOND
from services.controller.api.alertpolicy import AlertPolicyApi
from services.controller.api.refs import CloudletRefsApi
from services.controller.api.restagtable import ResTagTableApi
from services.controller.api.settings import SettingsApi
from services.controller.api.trustpolicy import TrustPolicyApi
from tests.integration.controller.conftest import StartInstance

CTX: Any = None


async def refused(call: Any, error: type[EdgeError]) -> str:
    with pytest.raises(error) as caught:
        await call
    return caught.value.message


async def test_res_tag_table(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = ResTagTableApi(ctl.runtime)
    table = restagtable_pb2.ResTagTable(
        key=restagtable_pb2.ResTagTableKey(name="GPU", organization="UFGT Inc."),
        tags={"pci": "t4"},
    )
    await api.CreateResTagTable(table, CTX)
    assert await refused(api.CreateResTagTable(table, CTX), AlreadyExists) == (
        'ResTagTable key {"name":"gpu","organization":"UFGT Inc."} already exists'
    )
    key = restagtable_pb2.ResTagTableKey(name="gpu", organization="UFGT Inc.")
    await api.AddResTag(restagtable_pb2.ResTagTable(key=key, tags={"vgpu": "nvidia-63"}), CTX)
    await api.RemoveResTag(restagtable_pb2.ResTagTable(key=key, tags={"pci": ""}), CTX)
    got = await api.GetResTagTable(key, CTX)
    assert dict(got.tags) == {"vgpu": "nvidia-63"}
    await api.UpdateResTagTable(
        restagtable_pb2.ResTagTable(key=key, azone="nova", fields=["4"]), CTX
    )
    [shown] = [t async for t in api.ShowResTagTable(restagtable_pb2.ResTagTable(), CTX)]
    assert shown.azone == "nova"
    await api.DeleteResTagTable(restagtable_pb2.ResTagTable(key=key), CTX)
    assert await refused(api.GetResTagTable(key, CTX), NotFound) == (
        'ResTagTable key {"name":"gpu","organization":"UFGT Inc."} not found'
    )


async def test_alert_policy_uses_settings_minimum(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AlertPolicyApi(ctl.runtime)
    policy = alertpolicy_pb2.AlertPolicy(
        key=alertpolicy_pb2.AlertPolicyKey(organization="dev", name="cpu"),
        cpu_utilization_limit=80,
        severity="warning",
        trigger_time=10 * SECOND,
    )
    assert await refused(api.CreateAlertPolicy(policy, CTX), InvalidArgument) == (
        "Trigger time cannot be less than 30s"
    )
    await SettingsApi(ctl.runtime).UpdateSettings(
        settings_pb2.Settings(alert_policy_min_trigger_time=5 * SECOND, fields=["36"]), CTX
    )
    await api.CreateAlertPolicy(policy, CTX)
    update = alertpolicy_pb2.AlertPolicy(key=policy.key, severity="fatal", fields=["7"])
    assert await refused(api.UpdateAlertPolicy(update, CTX), InvalidArgument) == (
        'Invalid severity. Valid severities: "info", "warning", "error"'
    )
    update.severity = "error"
    await api.UpdateAlertPolicy(update, CTX)
    [shown] = [p async for p in api.ShowAlertPolicy(alertpolicy_pb2.AlertPolicy(), CTX)]
    assert shown.severity == "error"
    await api.DeleteAlertPolicy(policy, CTX)
    assert await refused(api.DeleteAlertPolicy(policy, CTX), NotFound) == (
        'AlertPolicy key {"organization":"dev","name":"cpu"} not found'
    )


async def test_trust_policy_streams_results(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = TrustPolicyApi(ctl.runtime)
    key = trustpolicy_pb2.TrustPolicy(
        key={"organization": "oper", "name": "tp"},  # type: ignore[arg-type]
    ).key
    rule = trustpolicy_pb2.SecurityRule(protocol="tcp", port_range_min=443, remote_cidr="0.0.0.0/0")
    policy = trustpolicy_pb2.TrustPolicy(key=key, outbound_security_rules=[rule])
    assert [r async for r in api.CreateTrustPolicy(policy, CTX)] == []
    [stored] = [p async for p in api.ShowTrustPolicy(trustpolicy_pb2.TrustPolicy(), CTX)]
    assert (
        stored.outbound_security_rules[0].protocol,
        stored.outbound_security_rules[0].port_range_max,
    ) == ("TCP", 443)

    with pytest.raises(AlreadyExists) as caught:
        _ = [r async for r in api.CreateTrustPolicy(policy, CTX)]
    assert caught.value.message == 'key {"organization":"oper","name":"tp"} already exists'

    bad = trustpolicy_pb2.TrustPolicy(key=key, fields=["3"])
    bad.outbound_security_rules.add(protocol="udp", port_range_min=0, remote_cidr="10.0.0.0/8")
    with pytest.raises(InvalidArgument) as caught:
        _ = [r async for r in api.UpdateTrustPolicy(bad, CTX)]
    assert caught.value.message == "Invalid min port: 0"

    good = trustpolicy_pb2.TrustPolicy(key=key, fields=["3"], outbound_security_rules=[rule, rule])
    results = [r.message async for r in api.UpdateTrustPolicy(good, CTX)]
    assert results == ["Trust policy updated, no cloudlets affected"]
    assert [r async for r in api.DeleteTrustPolicy(policy, CTX)] == []
    with pytest.raises(NotFound):
        _ = [r async for r in api.DeleteTrustPolicy(policy, CTX)]


async def test_refs_are_empty_until_later_slices(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    shown = [
        r async for r in CloudletRefsApi(ctl.runtime).ShowCloudletRefs(refs_pb2.CloudletRefs(), CTX)
    ]
    assert shown == []


async def test_trust_policy_in_use_by_cloudlet(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = TrustPolicyApi(ctl.runtime)
    policy = trustpolicy_pb2.TrustPolicy(key={"organization": "o", "name": "p"})  # type: ignore[arg-type]
    _ = [r async for r in api.CreateTrustPolicy(policy, CTX)]
    cloudlet = cloudlet_pb2.Cloudlet(trust_policy="p")
    cloudlet.key.organization, cloudlet.key.name = "o", "c1"
    # a later slice stores cloudlets; one written directly already protects the policy
    revision = await ctl.store.put(keys.object_store_key(cloudlet), codec.encode(cloudlet))
    await ctl.sync.wait_for_revision(revision)
    with pytest.raises(FailedPrecondition) as caught:
        _ = [r async for r in api.DeleteTrustPolicy(policy, CTX)]
    assert caught.value.message == 'Policy in use by Cloudlet {"organization":"o","name":"c1"}'
