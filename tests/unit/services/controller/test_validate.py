"""Validation rules of the Controller's objects, with the original's exact error texts."""

from __future__ import annotations

import pytest
from edgeproto import (
    alertpolicy_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    flavor_pb2,
    operatorcode_pb2,
    resources_pb2,
    trustpolicy_pb2,
)

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects.durations import HOUR, SECOND
from services.controller import _validate

Rule = trustpolicy_pb2.SecurityRule


def flavor(**kw: object) -> flavor_pb2.Flavor:
    base: dict[str, object] = {"key": flavor_pb2.FlavorKey(name="x1.small"), "ram": 1024}
    base.update(vcpus=2, disk=20)
    base.update(kw)
    return flavor_pb2.Flavor(**base)  # type: ignore[arg-type]


def policy_key(org: str = "dev", name: str = "p") -> autoscalepolicy_pb2.PolicyKey:
    return autoscalepolicy_pb2.PolicyKey(organization=org, name=name)


def refused(check: object, *args: object) -> str:
    with pytest.raises(InvalidArgument) as caught:
        check(*args)  # type: ignore[operator]
    return caught.value.message


# --- Flavor ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": flavor_pb2.FlavorKey(name="-bad")}, "Invalid flavor name"),
        ({"key": flavor_pb2.FlavorKey(name="")}, "Invalid flavor name"),
        ({"ram": 0}, "Ram cannot be 0"),
        ({"vcpus": 0}, "Vcpus cannot be 0"),
        ({"disk": 0}, "Disk cannot be 0"),
        (
            {"gpus": [resources_pb2.GPUResource(model_id="nvidia-t4", memory=4)]},
            "flavor gpu count cannot be 0",
        ),
        (
            {"gpus": [resources_pb2.GPUResource(count=1, memory=4)]},
            "flavor gpu model id cannot be empty",
        ),
        (
            {"gpus": [resources_pb2.GPUResource(model_id="nvidia-t4", count=1)]},
            "flavor gpu memory cannot be 0",
        ),
        (
            {"gpus": [resources_pb2.GPUResource(model_id="t4", count=1, memory=4)]},
            'gpu vendor for model "t4" is empty and cannot be inferred from model ID',
        ),
        (
            {"opt_res_map": {"gpu": "gpu"}},
            "missing mandatory resource count for gpu, ex: optresmap=gpu=gpu:1",
        ),
        (
            {"opt_res_map": {"gpu": "pci:t4:x"}},
            "non-numeric resource count t4 in optres value pci:t4:x",
        ),
        (
            {"opt_res_map": {"gpu": "a:b:c:1"}},
            "invalid optresmap value a:b:c:1, should be of form gpu:1 or pci:T4:2",
        ),
        (
            {"opt_res_map": {"nas": "nas:1"}},
            "Only GPU resources currently supported, use "
            "optresmap=gpu=$resource:[$specifier:]$count found nas",
        ),
    ],
)
def test_flavor_create_rules(changes: dict[str, object], message: str) -> None:
    assert refused(_validate.check_flavor, flavor(**changes)) == message


def test_valid_flavor_gets_gpu_vendor_inferred() -> None:
    f = flavor(
        gpus=[resources_pb2.GPUResource(model_id="NVIDIA-T4", count=1, memory=16)],
        opt_res_map={"gpu": "vgpu:nvidia-63:1"},
    )
    _validate.check_flavor(f)
    assert f.gpus[0].vendor == "nvidia"


def test_res_names() -> None:
    _validate.check_res_name("GPU")
    assert (
        refused(_validate.check_res_name, "tpu")
        == "Invalid resource name tpu found, must be one of [gpu nas nic] "
    )


# --- OperatorCode -----------------------------------------------------------------------------


def test_operator_code_needs_code_and_org() -> None:
    assert refused(_validate.check_operator_code, operatorcode_pb2.OperatorCode()) == (
        "No code specified"
    )
    code = operatorcode_pb2.OperatorCode(code="310-260")
    assert refused(_validate.check_operator_code, code) == "No organization specified"
    _validate.check_operator_code(operatorcode_pb2.OperatorCode(code="310-260", organization="o"))


# --- AutoScalePolicy ------------------------------------------------------------------------


def scale(**kw: object) -> autoscalepolicy_pb2.AutoScalePolicy:
    base: dict[str, object] = {"key": policy_key(), "min_nodes": 1, "max_nodes": 3}
    base.update(scale_up_cpu_thresh=80, scale_down_cpu_thresh=20)
    base.update(kw)
    return autoscalepolicy_pb2.AutoScalePolicy(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_nodes": 100}, "Max nodes cannot exceed 10"),
        ({"scale_up_cpu_thresh": 101}, "Scale up CPU threshold must be between 0 and 100"),
        ({"scale_down_cpu_thresh": 101}, "Scale down CPU threshold must be between 0 and 100"),
        (
            {"scale_up_cpu_thresh": 50, "scale_down_cpu_thresh": 60},
            "Scale down cpu threshold must be less than scale up cpu threshold",
        ),
        ({"min_nodes": 5, "max_nodes": 5}, "Max nodes must be greater than Min nodes"),
        (
            {"target_cpu": 50},
            "The new target cpu/mem/active-connections can only be used once the old cpu "
            "threshold settings have been disabled (set to 0)",
        ),
        (
            {"scale_up_cpu_thresh": 0, "scale_down_cpu_thresh": 0},
            "One of target cpu or target mem or target active connections must be specified",
        ),
        (
            {"scale_up_cpu_thresh": 0, "scale_down_cpu_thresh": 0, "target_mem": 101},
            "Target mem must be between 0 (disabled) and 100",
        ),
        (
            {
                "scale_up_cpu_thresh": 0,
                "scale_down_cpu_thresh": 0,
                "target_active_connections": 10**12 + 1,
            },
            "Target active connections must be between 0 (disabled) and 1000000000000",
        ),
        ({"key": policy_key(name="")}, "Policy name cannot be empty"),
        ({"key": policy_key(org="")}, "Invalid organization name cannot be empty"),
        (
            {"key": policy_key(org="a b")},
            "Invalid organization name can only contain letters, digits, _ . -",
        ),
    ],
)
def test_autoscale_rules(changes: dict[str, object], message: str) -> None:
    assert refused(_validate.check_autoscale_policy, scale(**changes)) == message


def test_autoscale_target_policy_gets_default_window() -> None:
    policy = scale(scale_up_cpu_thresh=0, scale_down_cpu_thresh=0, target_cpu=60)
    _validate.check_autoscale_policy(policy)
    assert policy.stabilization_window_sec == 300


# --- AutoProvPolicy -------------------------------------------------------------------------


def test_autoprov_rules() -> None:
    policy = autoprovpolicy_pb2.AutoProvPolicy(key=policy_key(), max_instances=1)
    policy.min_active_instances = 2
    assert refused(_validate.check_autoprov_policy, policy) == (
        "Minimum active instances cannot be larger than Maximum Instances"
    )
    policy.min_active_instances = 0
    assert refused(_validate.check_autoprov_policy, policy) == (
        "One of deploy client count and minimum active instances must be specified"
    )
    policy.max_instances = 0  # unlimited
    policy.min_active_instances = 5
    _validate.check_autoprov_policy(policy)


# --- TrustPolicy ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            Rule(protocol="sctp", remote_cidr="10.0.0.0/8"),
            "Protocol must be one of: (TCP,UDP,ICMP)",
        ),
        (
            Rule(protocol="icmp", port_range_min=1, remote_cidr="10.0.0.0/8"),
            "Port range must be empty for ICMP",
        ),
        (Rule(protocol="tcp", remote_cidr="10.0.0.0/8"), "Invalid min port: 0"),
        (
            Rule(protocol="tcp", port_range_min=1, port_range_max=70000, remote_cidr="1.1.1.1/32"),
            "Invalid max port: 70000",
        ),
        (
            Rule(protocol="udp", port_range_min=20, port_range_max=10, remote_cidr="1.1.1.1/32"),
            "Min port range: 20 cannot be higher than max: 10",
        ),
        (
            Rule(protocol="tcp", port_range_min=22, remote_cidr="10.0.0.0"),
            "invalid CIDR address: 10.0.0.0",
        ),
        (
            Rule(protocol="tcp", port_range_min=22, remote_cidr="10.0.0.0/33"),
            "invalid CIDR address: 10.0.0.0/33",
        ),
    ],
)
def test_trust_rules(rule: trustpolicy_pb2.SecurityRule, message: str) -> None:
    policy = trustpolicy_pb2.TrustPolicy(key=policy_key(), outbound_security_rules=[rule])
    _validate.fixup_security_rules(policy.outbound_security_rules)
    assert refused(_validate.check_trust_policy, policy) == message


def test_trust_rules_are_normalised() -> None:
    policy = trustpolicy_pb2.TrustPolicy(
        key=policy_key(),
        outbound_security_rules=[
            Rule(protocol="tcp", port_range_min=443, remote_cidr="0.0.0.0/0"),
            Rule(protocol="icmp", remote_cidr="::/0"),
        ],
    )
    _validate.fixup_security_rules(policy.outbound_security_rules)
    _validate.check_trust_policy(policy)
    first = policy.outbound_security_rules[0]
    assert (first.protocol, first.port_range_max) == ("TCP", 443)


# --- AlertPolicy ----------------------------------------------------------------------------


def alert(**kw: object) -> alertpolicy_pb2.AlertPolicy:
    base: dict[str, object] = {
        "key": alertpolicy_pb2.AlertPolicyKey(organization="dev", name="cpu"),
        "cpu_utilization_limit": 80,
        "severity": "warning",
        "trigger_time": 60 * SECOND,
    }
    base.update(kw)
    return alertpolicy_pb2.AlertPolicy(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"active_conn_limit": 10},
            "Active Connection Alerts should not include any other triggers",
        ),
        ({"cpu_utilization_limit": 0}, "At least one of the measurements for alert should be set"),
        ({"cpu_utilization_limit": 101}, "Cpu utilization limit is percent. Valid values 1-100%"),
        (
            {"mem_utilization_limit": 200},
            "Memory utilization limit is percent. Valid values 1-100%",
        ),
        ({"trigger_time": 73 * HOUR}, "Trigger duration should not exceed 72 hours"),
        ({"key": alertpolicy_pb2.AlertPolicyKey(organization="dev")}, "Invalid alert policy name"),
    ],
)
def test_alert_policy_rules(changes: dict[str, object], message: str) -> None:
    assert refused(_validate.check_alert_policy, alert(**changes)) == message


def test_alert_trigger_and_severity() -> None:
    assert refused(_validate.check_alert_trigger, alert(trigger_time=SECOND), 30 * SECOND) == (
        "Trigger time cannot be less than 30s"
    )
    assert refused(_validate.check_alert_trigger, alert(severity="fatal"), 30 * SECOND) == (
        'Invalid severity. Valid severities: "info", "warning", "error"'
    )
    _validate.check_alert_trigger(alert(), 30 * SECOND)
