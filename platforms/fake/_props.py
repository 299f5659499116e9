"""The fake platforms' properties, flavors, capacity defaults and features."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edgeproto import cloudlet_pb2, resources_pb2
from google.protobuf import json_format

from edge_cloud.errors import InvalidArgument
from edge_cloud.platform import (
    COMMON_QUOTA_RESOURCES,
    QUOTA_DESCRIPTIONS,
    RESOURCE_INSTANCES,
    PlatformFeatures,
    PropertyInfo,
    QuotaResource,
)
from platforms.fake._infra import Fault, Limits, parse_points

__all__ = [
    "ACCESS_VARS",
    "DEFAULT_FLAVORS",
    "DEFAULT_LIMITS",
    "DEFAULT_STEP_DELAY",
    "FAKE_FEATURES",
    "PROPERTIES",
    "Settings",
    "default_flavors",
    "parse_settings",
]

DEFAULT_STEP_DELAY: Final = 0.005
"""Seconds each step of an operation takes unless `FAKE_STEP_DELAY` says otherwise."""

DEFAULT_LIMITS: Final = Limits(
    ram=40960, vcpus=50, disk=5000, external_ips=30, gpus={"nvidia-t4": 4}
)


def default_flavors() -> list[cloudlet_pb2.FlavorInfo]:
    """`x1.tiny`, `x1.small`, `x1.small.gpu` (the original's fake flavors), fresh copies."""
    gpu = resources_pb2.GPUResource(model_id="nvidia-t4", vendor="nvidia", count=1, memory=4)
    return [
        cloudlet_pb2.FlavorInfo(name="x1.tiny", vcpus=1, ram=1024, disk=20),
        cloudlet_pb2.FlavorInfo(name="x1.small", vcpus=2, ram=4096, disk=40),
        cloudlet_pb2.FlavorInfo(name="x1.small.gpu", vcpus=2, ram=4096, disk=40, gpus=[gpu]),
    ]


DEFAULT_FLAVORS: Final = tuple(default_flavors())

PROPERTIES: Final[Mapping[str, PropertyInfo]] = {
    "PROP_1": PropertyInfo(name="Property 1", description="First Property", secret=True),
    "PROP_2": PropertyInfo(name="Property 2", description="Second Property"),
    "FLAVORS": PropertyInfo(
        name="Flavors JSON", description="[]edgeproto.FlavorInfo as JSON string"
    ),
    "FAKE_RAM_MAX": PropertyInfo(name="Fake RAM max", description="RAM capacity in MB"),
    "FAKE_VCPUS_MAX": PropertyInfo(name="Fake VCPUs max", description="vCPU capacity"),
    "FAKE_DISK_MAX": PropertyInfo(name="Fake disk max", description="Disk capacity in GB"),
    "FAKE_EXTERNAL_IPS_MAX": PropertyInfo(
        name="Fake external IPs max", description="Number of public addresses"
    ),
    "foo": PropertyInfo(name="foo"),
    "FAKE_PLATFORM_APPINST_CREATE_FAIL": PropertyInfo(
        name="fake platform appinst create fail",
        description="for e2e tests, make appinst create fail",
    ),
    "LOAD_MANAGED_CLUSTERS": PropertyInfo(name="Load fake managed clusters"),
    "FloatingVIPs": PropertyInfo(name="Floating VIPs"),
    "FAKE_FAIL_AT": PropertyInfo(
        name="Fake failure points",
        description="operation:stepN[:transient], comma separated: fail there (see README)",
    ),
    "FAKE_PAUSE_AT": PropertyInfo(
        name="Fake pause points",
        description="operation:stepN, comma separated: wait there until the point is removed",
    ),
    "FAKE_STEP_DELAY": PropertyInfo(
        name="Fake step delay",
        description="seconds each step of an operation takes",
        value=str(DEFAULT_STEP_DELAY),
    ),
}

ACCESS_VARS: Final[Mapping[str, PropertyInfo]] = {
    "APIKey": PropertyInfo(name="API Key", description="API Key for authentication", secret=True),
}

FAKE_FEATURES: Final = PlatformFeatures(
    platform_type="fake",
    supports_multi_tenant_cluster=True,
    supports_shared_volume=True,
    supports_trust_policy=True,
    cloudlet_services_local=True,
    is_fake=True,
    supports_additional_networks=True,
    supports_platform_high_availability_on_docker=True,
    supports_platform_high_availability_on_k8s=True,
    supports_multiple_node_pools=True,
    uses_root_lb=True,
    supports_cloudlet_managed_clusters=True,
    properties=PROPERTIES,
    access_vars=ACCESS_VARS,
    resource_quota_properties=tuple(
        QuotaResource(name=name, description=QUOTA_DESCRIPTIONS[name])
        for name in (*COMMON_QUOTA_RESOURCES, RESOURCE_INSTANCES)
    ),
)
"""The original's fake feature set (crm_platforms.md §1.7)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """What a fake platform reads from its properties at init.

    Attributes:
        flavors: Offered flavors, in order.
        limits: Capacity.
        step_delay: Seconds per step.
        faults: Failure points from `FAKE_FAIL_AT`.
        pauses: Pause points from `FAKE_PAUSE_AT`.
        appinst_create_fail: `FAKE_PLATFORM_APPINST_CREATE_FAIL` is set.
        load_managed_clusters: `LOAD_MANAGED_CLUSTERS` is set.
    """

    flavors: tuple[cloudlet_pb2.FlavorInfo, ...]
    limits: Limits
    step_delay: float
    faults: Mapping[str, Fault]
    pauses: frozenset[str]
    appinst_create_fail: bool
    load_managed_clusters: bool


def _positive(props: Mapping[str, str], name: str, default: int) -> int:
    text = props.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be a whole number, got {text!r}") from None
    return value if value > 0 else default


def _flavors(text: str) -> tuple[cloudlet_pb2.FlavorInfo, ...]:
    if not text:
        return tuple(default_flavors())
    try:
        raw = json.loads(text)
        if not isinstance(raw, list) or not raw:
            raise ValueError("expected a non-empty JSON list")
        flavors = tuple(
            json_format.ParseDict(item, cloudlet_pb2.FlavorInfo(), ignore_unknown_fields=True)
            for item in raw
        )
    except (ValueError, json_format.ParseError) as err:
        raise InvalidArgument(f"failed to unmarshal FLAVORS env var: {text}, {err}") from None
    for flavor in flavors:
        if not flavor.name:
            raise InvalidArgument(f"FLAVORS: every flavor needs a name, got {text}")
    return flavors


def parse_settings(props: Mapping[str, str]) -> Settings:
    """Read the properties a fake platform uses.

    Args:
        props: Resolved property values.

    Returns:
        The settings.

    Raises:
        InvalidArgument: A malformed value, naming the property.
    """
    delay_text = props.get("FAKE_STEP_DELAY", "") or str(DEFAULT_STEP_DELAY)
    try:
        delay = float(delay_text)
    except ValueError:
        raise InvalidArgument(f"FAKE_STEP_DELAY must be seconds, got {delay_text!r}") from None
    if delay < 0:
        raise InvalidArgument(f"FAKE_STEP_DELAY must not be negative, got {delay_text!r}")
    limits = Limits(
        ram=_positive(props, "FAKE_RAM_MAX", DEFAULT_LIMITS.ram),
        vcpus=_positive(props, "FAKE_VCPUS_MAX", DEFAULT_LIMITS.vcpus),
        disk=_positive(props, "FAKE_DISK_MAX", DEFAULT_LIMITS.disk),
        external_ips=_positive(props, "FAKE_EXTERNAL_IPS_MAX", DEFAULT_LIMITS.external_ips),
        gpus=DEFAULT_LIMITS.gpus,
    )
    return Settings(
        flavors=_flavors(props.get("FLAVORS", "")),
        limits=limits,
        step_delay=delay,
        faults=parse_points(props.get("FAKE_FAIL_AT", ""), source="FAKE_FAIL_AT"),
        pauses=frozenset(parse_points(props.get("FAKE_PAUSE_AT", ""), source="FAKE_PAUSE_AT")),
        appinst_create_fail=bool(props.get("FAKE_PLATFORM_APPINST_CREATE_FAIL")),
        load_managed_clusters=bool(props.get("LOAD_MANAGED_CLUSTERS")),
    )
