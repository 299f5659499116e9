"""Input validation of the objects the Controller stores, with the original's error texts.

Pure functions of one message (no store, no cache): the API modules call them before any
transaction, and again on the merged object of an update. Several of them normalise the
message in place first, as the original does (security-rule protocols upper-cased, GPU
vendors inferred, the autoscale stabilisation window defaulted), so callers validate the copy
they are about to store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from edgeproto import (
    alertpolicy_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    flavor_pb2,
    operatorcode_pb2,
    resources_pb2,
    restagtable_pb2,
    trustpolicy_pb2,
)

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import keys
from edge_cloud.objects.durations import HOUR, format_duration

__all__ = [
    "AUTOSCALE_MAX_NODES",
    "DEFAULT_STABILIZATION_WINDOW_SEC",
    "check_alert_policy",
    "check_alert_trigger",
    "check_autoprov_policy",
    "check_autoscale_policy",
    "check_flavor",
    "check_operator_code",
    "check_opt_res_values",
    "check_res_name",
    "check_security_rules",
    "check_trust_policy",
    "fixup_security_rules",
]

AUTOSCALE_MAX_NODES: Final = 10
DEFAULT_STABILIZATION_WINDOW_SEC: Final = 300
_MAX_ACTIVE_CONNECTIONS: Final = 10**12
_MIN_PORT: Final = 1
_MAX_PORT: Final = 65535
_ALERT_SEVERITIES: Final = ("info", "warning", "error")
_ALERT_MAX_TRIGGER: Final = 72 * HOUR
_GPU_VENDORS: Final = ("amd", "nvidia")
# OptResNames in enum order, lower-cased, as the original lists them.
_OPT_RES_NAMES: Final = tuple(
    name.lower()
    for name in restagtable_pb2.OptResNames.keys()  # noqa: SIM118 - enum wrapper
)


# --- objects ----------------------------------------------------------------------------------


def check_operator_code(code: operatorcode_pb2.OperatorCode) -> None:
    """OperatorCode: a code and an organization are required."""
    keys.validate_key(code)
    if code.organization == "":
        raise InvalidArgument("No organization specified")


def check_flavor(flavor: flavor_pb2.Flavor) -> None:
    """A flavor to create: valid name, non-zero sizes, complete GPUs, valid opt-res values.

    Infers missing GPU vendors from the model id (`nvidia...`, `amd...`) in place.

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(flavor)
    if flavor.ram == 0:
        raise InvalidArgument("Ram cannot be 0")
    if flavor.vcpus == 0:
        raise InvalidArgument("Vcpus cannot be 0")
    if flavor.disk == 0:
        raise InvalidArgument("Disk cannot be 0")
    for gpu in flavor.gpus:
        if gpu.count == 0:
            raise InvalidArgument("flavor gpu count cannot be 0")
        if gpu.model_id == "":
            raise InvalidArgument("flavor gpu model id cannot be empty")
        if gpu.memory == 0:
            raise InvalidArgument("flavor gpu memory cannot be 0")
    check_gpus(flavor.gpus)
    check_opt_res_values(flavor.opt_res_map)


def check_gpus(gpus: Iterable[resources_pb2.GPUResource]) -> None:
    """The original's `ValidateGPUs`: model required, count defaults to 1, vendor inferred.

    Raises:
        InvalidArgument: A GPU has no model, or no vendor and a model naming none.
    """
    for gpu in gpus:
        if gpu.model_id == "":
            raise InvalidArgument("gpu model id cannot be empty")
        if gpu.count == 0:
            gpu.count = 1
        if gpu.vendor == "":
            model = gpu.model_id.lower()
            vendor = next((v for v in _GPU_VENDORS if model.startswith(v)), None)
            if vendor is None:
                raise InvalidArgument(
                    f"gpu vendor for model {_go_q(gpu.model_id)} is empty and cannot be "
                    "inferred from model ID"
                )
            gpu.vendor = vendor


def check_opt_res_values(opt_res: Mapping[str, str]) -> None:
    """Optional-resource requests of a flavor: only `gpu`, as `type:[spec:]count`.

    Raises:
        InvalidArgument: With the original's text.
    """
    for name, value in sorted(opt_res.items()):
        if name != "gpu":
            raise InvalidArgument(
                "Only GPU resources currently supported, use "
                f"optresmap=gpu=$resource:[$specifier:]$count found {name}"
            )
        parse_opt_res_value(value)


def parse_opt_res_value(value: str) -> tuple[str, str, int]:
    """Parse `gpu:1`, `pci:T4:2` or `vgpu:nvidia-63:1` into type, spec and count.

    Raises:
        InvalidArgument: With the original's text (including its quirk of naming the
            second part in the non-numeric error).
    """
    parts = value.split(":")
    if len(parts) == 1:
        raise InvalidArgument(
            f"missing mandatory resource count for {value}, ex: optresmap=gpu=gpu:1"
        )
    if len(parts) == 2:
        typ, spec, count_text = parts[0], "", parts[1]
    elif len(parts) == 3:
        typ, spec, count_text = parts
    else:
        raise InvalidArgument(
            f"invalid optresmap value {value}, should be of form gpu:1 or pci:T4:2"
        )
    count = _go_atoi(count_text)
    if count is None:
        raise InvalidArgument(f"non-numeric resource count {parts[1]} in optres value {value}")
    return typ, spec, count


def check_res_name(name: str) -> None:
    """A resource name of AddFlavorRes: one of the OptResNames values, any case.

    Raises:
        InvalidArgument: `Invalid resource name <x> found, must be one of [gpu nas nic] `
            (the trailing space is the original's).
    """
    if name.lower() not in _OPT_RES_NAMES:
        valid = " ".join(_OPT_RES_NAMES)
        raise InvalidArgument(f"Invalid resource name {name} found, must be one of [{valid}] ")


def check_autoscale_policy(policy: autoscalepolicy_pb2.AutoScalePolicy) -> None:
    """A whole AutoScalePolicy (create, or the merged object of an update).

    Sets the default stabilisation window for target-based policies in place.

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(policy)
    if policy.max_nodes > AUTOSCALE_MAX_NODES:
        raise InvalidArgument(f"Max nodes cannot exceed {AUTOSCALE_MAX_NODES}")
    v0 = policy.scale_up_cpu_thresh > 0 or policy.scale_down_cpu_thresh > 0
    v1 = policy.target_cpu > 0 or policy.target_mem > 0 or policy.target_active_connections > 0
    if v0 and v1:
        raise InvalidArgument(
            "The new target cpu/mem/active-connections can only be used once the old cpu "
            "threshold settings have been disabled (set to 0)"
        )
    if v0:
        if policy.scale_up_cpu_thresh > 100:
            raise InvalidArgument("Scale up CPU threshold must be between 0 and 100")
        if policy.scale_down_cpu_thresh > 100:
            raise InvalidArgument("Scale down CPU threshold must be between 0 and 100")
        if policy.scale_up_cpu_thresh <= policy.scale_down_cpu_thresh:
            raise InvalidArgument(
                "Scale down cpu threshold must be less than scale up cpu threshold"
            )
    elif not v1:
        raise InvalidArgument(
            "One of target cpu or target mem or target active connections must be specified"
        )
    else:
        if policy.stabilization_window_sec == 0:
            policy.stabilization_window_sec = DEFAULT_STABILIZATION_WINDOW_SEC
        if policy.target_cpu > 100:
            raise InvalidArgument("Target cpu must be between 0 (disabled) and 100")
        if policy.target_mem > 100:
            raise InvalidArgument("Target mem must be between 0 (disabled) and 100")
        if policy.target_active_connections > _MAX_ACTIVE_CONNECTIONS:
            raise InvalidArgument(
                "Target active connections must be between 0 (disabled) and "
                f"{_MAX_ACTIVE_CONNECTIONS}"
            )
    if policy.max_nodes <= policy.min_nodes:
        raise InvalidArgument("Max nodes must be greater than Min nodes")


def check_autoprov_policy(policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
    """A whole AutoProvPolicy (create, or the merged object of an update).

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(policy)
    if policy.max_instances != 0 and policy.min_active_instances > policy.max_instances:
        raise InvalidArgument("Minimum active instances cannot be larger than Maximum Instances")
    if policy.min_active_instances == 0 and policy.deploy_client_count == 0:
        raise InvalidArgument(
            "One of deploy client count and minimum active instances must be specified"
        )


def fixup_security_rules(rules: Iterable[trustpolicy_pb2.SecurityRule]) -> None:
    """Normalise rules in place: protocol upper-cased, an empty max port set to the min."""
    for rule in rules:
        if rule.port_range_max == 0:
            rule.port_range_max = rule.port_range_min
        rule.protocol = rule.protocol.upper()


def check_security_rules(rules: Iterable[trustpolicy_pb2.SecurityRule]) -> None:
    """Outbound security rules, already normalised by `fixup_security_rules`.

    Raises:
        InvalidArgument: With the original's text for the first bad rule.
    """
    for rule in rules:
        if rule.protocol not in ("TCP", "UDP", "ICMP"):
            raise InvalidArgument("Protocol must be one of: (TCP,UDP,ICMP)")
        if rule.protocol == "ICMP":
            if rule.port_range_min != 0 or rule.port_range_max != 0:
                raise InvalidArgument("Port range must be empty for ICMP")
        else:
            if not _MIN_PORT <= rule.port_range_min <= _MAX_PORT:
                raise InvalidArgument(f"Invalid min port: {rule.port_range_min}")
            if rule.port_range_max > _MAX_PORT:
                raise InvalidArgument(f"Invalid max port: {rule.port_range_max}")
            if rule.port_range_min > rule.port_range_max:
                raise InvalidArgument(
                    f"Min port range: {rule.port_range_min} cannot be higher than max: "
                    f"{rule.port_range_max}"
                )
        check_cidr(rule.remote_cidr)


def check_trust_policy(policy: trustpolicy_pb2.TrustPolicy) -> None:
    """A whole TrustPolicy: key, then rules (normalise them first)."""
    keys.validate_key(policy)
    check_security_rules(policy.outbound_security_rules)


def check_cidr(text: str) -> None:
    """Go's `net.ParseCIDR`: `addr/prefix` with a prefix that fits the address family.

    Raises:
        InvalidArgument: `invalid CIDR address: <text>`, Go's wording.
    """
    addr, sep, prefix = text.partition("/")
    try:
        if not sep or not prefix.isdigit() or len(prefix) > 3:
            raise ValueError(text)
        ip = ipaddress.ip_address(addr)
        if "%" in addr or int(prefix) > ip.max_prefixlen:
            raise ValueError(text)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text}") from None


def check_alert_policy(policy: alertpolicy_pb2.AlertPolicy) -> None:
    """An AlertPolicy's own fields (the settings-dependent trigger check is separate).

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(policy)
    cpu, mem, disk = (
        policy.cpu_utilization_limit,
        policy.mem_utilization_limit,
        policy.disk_utilization_limit,
    )
    if policy.active_conn_limit != 0 and (cpu or mem or disk):
        raise InvalidArgument("Active Connection Alerts should not include any other triggers")
    if policy.active_conn_limit == 0 and not (cpu or mem or disk):
        raise InvalidArgument("At least one of the measurements for alert should be set")
    if cpu > 100:
        raise InvalidArgument("Cpu utilization limit is percent. Valid values 1-100%")
    if mem > 100:
        raise InvalidArgument("Memory utilization limit is percent. Valid values 1-100%")
    if disk > 100:
        raise InvalidArgument("Disk utilization limit is percent. Valid values 1-100%")
    if policy.trigger_time > _ALERT_MAX_TRIGGER:
        raise InvalidArgument("Trigger duration should not exceed 72 hours")


def check_alert_trigger(policy: alertpolicy_pb2.AlertPolicy, min_trigger_ns: int) -> None:
    """The checks of an AlertPolicy that need Settings, then the severity.

    Raises:
        InvalidArgument: `Trigger time cannot be less than <d>` or an invalid severity.
    """
    if policy.trigger_time < min_trigger_ns:
        raise InvalidArgument(f"Trigger time cannot be less than {format_duration(min_trigger_ns)}")
    if policy.severity not in _ALERT_SEVERITIES:
        valid = ", ".join(f'"{s}"' for s in _ALERT_SEVERITIES)
        raise InvalidArgument(f"Invalid severity. Valid severities: {valid}")


# --- helpers ----------------------------------------------------------------------------------


def _go_atoi(text: str) -> int | None:
    """Go's `strconv.Atoi`: optional sign, ASCII digits only, 64-bit range."""
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _go_q(text: str) -> str:
    """Go's `%q` for plain text (the cases a GPU model id can hold)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
