"""The AppInst create's remembered key strings equal `keys.key_string` (issue 4)."""

from __future__ import annotations

import pytest
from edgeproto import appinst_pb2

from edge_cloud.objects import keys
from services.controller._appinst_ops import _inst_key_text


@pytest.mark.parametrize(
    ("name", "organization"),
    [
        ("inst000001", "devorg"),
        ("", "devorg"),
        ("inst", ""),
        ("", ""),
        ('quo"te\\back', "<html>&amp;"),
        ("ünïcode-名前", "org\u2028line"),
    ],
)
def test_remembered_key_string_is_the_key_string(name: str, organization: str) -> None:
    key = appinst_pb2.AppInstKey(name=name, organization=organization)
    expected = keys.key_string(key)
    assert _inst_key_text(key) == expected
    assert _inst_key_text(key) == expected  # the second time from the cache


def test_different_keys_never_share_a_string() -> None:
    a = appinst_pb2.AppInstKey(name="a", organization="b")
    b = appinst_pb2.AppInstKey(name="b", organization="a")
    assert _inst_key_text(a) != _inst_key_text(b)
