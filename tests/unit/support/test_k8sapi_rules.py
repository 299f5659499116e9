"""The k8sapi server's rules without a server: patches, selectors, names, EKS token shapes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.k8sapi._auth import eks_token_problem
from tests.support.k8sapi._errors import ApiError
from tests.support.k8sapi._patch import json_patch, merge_patch, strategic_merge_patch
from tests.support.k8sapi._resources import name_error
from tests.support.k8sapi._selectors import (
    match_labels_selector,
    parse_field_selector,
    parse_label_selector,
)

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
    "spec": {
        "containers": [
            {"name": "main", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "side", "image": "b:1"},
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
    },
}


def test_merge_patch_is_rfc7386() -> None:
    out = merge_patch(POD, {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {"volumes": []}})
    assert out["metadata"]["labels"] == {"b": "2"}
    assert out["spec"]["volumes"] == []
    assert out["spec"]["containers"] == POD["spec"]["containers"]
    assert POD["metadata"]["labels"] == {"a": "1"}  # the input is not modified


def test_strategic_merge_merges_keyed_lists() -> None:
    out = strategic_merge_patch(
        POD,
        {
            "metadata": {"finalizers": ["y"]},
            "spec": {
                "containers": [
                    {"name": "main", "env": [{"name": "B", "value": "2"}]},
                    {"name": "side", "$patch": "delete"},
                    {"name": "new", "image": "c:1"},
                ]
            },
        },
    )
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["main", "new"]
    assert out["spec"]["containers"][0]["image"] == "a:1"
    assert [e["name"] for e in out["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert out["metadata"]["finalizers"] == ["x", "y"]
    replaced = strategic_merge_patch(POD, {"spec": {"$patch": "replace", "containers": []}})
    assert replaced["spec"] == {"containers": []}


def test_json_patch_operations_and_failures() -> None:
    out = json_patch(
        POD,
        [
            {"op": "add", "path": "/spec/containers/-", "value": {"name": "z", "image": "z:1"}},
            {"op": "remove", "path": "/spec/containers/1"},
            {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/c"},
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
            {"op": "replace", "path": "/metadata/name", "value": "q"},
            {"op": "test", "path": "/metadata/name", "value": "q"},
        ],
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["main", "z"]
    assert out["metadata"]["labels"] == {"c": "1", "b": "1"}
    with pytest.raises(ApiError) as err:
        json_patch(POD, [{"op": "remove", "path": "/metadata/nothing"}])
    assert err.value.code == 422
    with pytest.raises(ApiError) as err:
        json_patch(POD, {"op": "add"})
    assert err.value.code == 400
    with pytest.raises(ApiError) as err:
        json_patch(POD, [{"op": "replace", "path": "/metadata/missing", "value": 1}])
    assert err.value.code == 422


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=1", {"a": "1"}, True),
        ("a==1,b!=2", {"a": "1", "b": "3"}, True),
        ("a!=1", {}, True),
        ("a in (1, 2),!c", {"a": "2"}, True),
        ("a notin (1)", {"a": "1"}, False),
        ("example.com/tier", {"example.com/tier": "x"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector_grammar(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector)(labels) is matches


@pytest.mark.parametrize("bad", ["a=(", "a in (b", ",a", "a=b c"])
def test_bad_label_selectors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector(bad)
    assert err.value.code == 400


def test_workload_selectors_and_field_selectors() -> None:
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe"]}],
    }
    assert match_labels_selector(selector)({"app": "web", "tier": "fe"})
    assert not match_labels_selector(selector)({"app": "web"})
    assert not match_labels_selector({})({"app": "web"})
    fields = parse_field_selector("status.phase!=Failed,metadata.name=p", "Pod", ("status.phase",))
    assert fields({"metadata": {"name": "p"}, "status": {"phase": "Running"}})
    assert not fields({"metadata": {"name": "p"}, "status": {"phase": "Failed"}})
    with pytest.raises(ApiError, match="field label not supported"):
        parse_field_selector("spec.x=1", "Pod", ())


def test_name_rules() -> None:
    assert name_error("subdomain", "a.b-c") is None
    assert name_error("label", "a.b") is not None
    assert name_error("dns1035", "1abc") is not None
    assert name_error("subdomain", "a" * 254) == "must be no more than 253 characters"


def token(url: str) -> str:
    return "k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def sts_url(
    when: datetime, host: str = "sts.us-east-1.amazonaws.com", scheme: str = "https"
) -> str:
    return (
        f"{scheme}://{host}/?Action=GetCallerIdentity&Version=2011-06-15"
        "&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F{when:%Y%m%d}%2Fus-east-1%2Fsts%2Faws4_request"
        f"&X-Amz-Date={when:%Y%m%dT%H%M%SZ}&X-Amz-Expires=60"
        "&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id"
        f"&X-Amz-Signature={'ab' * 32}"
    )


def test_eks_token_shapes() -> None:
    now = datetime.now(UTC)
    assert eks_token_problem(token(sts_url(now))) is None
    assert eks_token_problem(token(sts_url(now, host="sts.amazonaws.com"))) is None
    assert "not https" in (eks_token_problem(token(sts_url(now, scheme="http"))) or "")
    emulator = token(sts_url(now, host="127.0.0.1:5000", scheme="http"))
    assert eks_token_problem(emulator, extra_hosts=["127.0.0.1:5000"]) is None
    assert "expired" in (eks_token_problem(token(sts_url(now - timedelta(minutes=16)))) or "")
    unsigned = token(sts_url(now).replace("host%3Bx-k8s-aws-id", "host"))
    assert "x-k8s-aws-id" in (eks_token_problem(unsigned) or "")
    padded = token(sts_url(now)) + "=="
    assert "unpadded" in (eks_token_problem(padded) or "")
