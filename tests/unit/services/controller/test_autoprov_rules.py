"""Auto-prov naming and intent parsing (`services.controller._autoprov`), without servers."""

from __future__ import annotations

import pytest
from edgeproto import app_pb2, appinst_pb2, cloudletkey_pb2, common_pb2

from edge_cloud.errors import InvalidArgument
from services.controller import _appinst, _autoprov


def test_instance_name_is_the_originals() -> None:
    """`autoprov-<app><version>-<8 hex of sha256("<zone>::<zone org>")>`, DNS-sanitised."""
    zone = cloudletkey_pb2.ZoneKey(name="z1", organization="op")
    key = _autoprov.app_inst_key(
        app_pb2.AppKey(name="web", version="1.0", organization="Dev"), zone
    )
    assert key == appinst_pb2.AppInstKey(name="autoprov-web10-fa5969cc", organization="Dev")
    odd = cloudletkey_pb2.ZoneKey(name="Berlin Zone", organization="Oper_1")
    assert _autoprov.zone_key_hash(odd) == "c3a38054"
    key = _autoprov.app_inst_key(
        app_pb2.AppKey(name="My_App", version="v2.1-RC", organization="dev"), odd
    )
    assert key.name == "autoprov-my-appv21-rc-c3a38054"


def test_intent_needs_the_caller_key() -> None:
    assert _autoprov.intent_from_metadata(None) is None
    assert _autoprov.intent_from_metadata([("user-agent", "grpc-python")]) is None
    full = _autoprov.intent_from_metadata(
        [
            ("caller-auto-prov", ""),
            ("auto-prov-reason", b"minmax"),
            ("auto-prov-policy-name", "p1"),
            ("auto-prov-reason", "demand"),  # the first value counts, as in the original
        ]
    )
    assert full == _autoprov.AutoProvIntent(reason="minmax", policy_name="p1")
    assert full.checked
    bare = _autoprov.intent_from_metadata([("caller-auto-prov", "")])
    assert bare == _autoprov.AutoProvIntent()
    assert not bare.checked  # the original skips its checks without reason and policy


@pytest.mark.parametrize("autoprov", [False, True])
def test_reserved_prefix_only_for_auto_prov_callers(autoprov: bool) -> None:
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="autoprov-web10-fa5969cc", organization="dev"),
        app_key=app_pb2.AppKey(name="web", version="1.0", organization="dev"),
    )
    if autoprov:
        _appinst.precheck_create(inst, autoprov=True)
        assert inst.liveness == common_pb2.LIVENESS_STATIC  # AUTOPROV is set by the create
        return
    with pytest.raises(InvalidArgument, match="prefix autoprov- is reserved"):
        _appinst.precheck_create(inst)


async def test_run_as_sets_the_intent_for_the_work_only() -> None:
    seen: list[_autoprov.AutoProvIntent | None] = []

    async def work() -> None:
        seen.append(_autoprov.current_intent())

    await _autoprov.run_as(_autoprov.PROCESS_NOW, work())
    assert seen == [_autoprov.AutoProvIntent(reason="demand", policy_name="dme-process-now")]
    assert _autoprov.current_intent() is None
