"""Our own etcd contents in the original Controller's storage format (controller.md §2.3).

The original stored each object as Go `encoding/json` of its generated struct. These samples
are composed here from that description and the field names of objects.md, with our own
organizations, cloudlets, apps and values: nothing is taken from the original's test files.
They are written directly as the JSON the Go structs produce, not through our codec, so a
test that decodes them checks the codec against an independent reading of the format:

- snake_case member names, the node pool's name as `"Name"` (its proto name);
- enums as CamelCase text without the enum's prefix (`"Docker"`, `"LoadBalancer"`, `"Ok"`);
- durations as Go's `Duration.String()` text (`"30m0s"`, `"1h30m0s"`, `"500ms"`);
- DME timestamps as RFC 3339 with trimmed fractions and any offset, `""` when unset;
- gogo `google.protobuf.Timestamp` as a `{"seconds":…,"nanos":…}` struct, `{}` when zero;
- `Udec64` as a number when whole and as a decimal string when it has a fraction;
- nested keys without `omitempty` as `{}`, nil lists as `null`.

Three sets: `current()` (data model 62), `older()` (data model 54: keys that still carried
the cloudlet, AutoProvPolicy cloudlet lists, a setting later dropped), and
`model_56_database()` (what `NodePoolsFeature` (57) starts from, for the upgrade test).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

CURRENT: Final = "current (data model 62)"
OLDER: Final = "older (data model 54)"

DEVELOPERS: Final = ("kestrelworks", "orchardlabs", "ferncastle")
OPERATORS: Final = ("tidewater", "granitenet", "bluefjord")
SITES: Final = ("harbor-east", "quarry-2", "lakeside", "ridge-north")


@dataclass(frozen=True, slots=True)
class Record:
    """One etcd entry: the type our registry knows it by, its key and its stored value."""

    type_name: str
    key: str
    value: str

    @property
    def go(self) -> dict[str, Any]:
        """The stored value as a JSON object."""
        data = json.loads(self.value)
        assert isinstance(data, dict)
        return data


class _Omitted:
    """Marks a member `omitempty` leaves out because its value is the zero value."""

    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omitted()


def _without_omitted(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_omitted(v) for k, v in data.items() if v is not OMIT}
    if isinstance(data, list):
        return [_without_omitted(v) for v in data]
    return data


def compact(data: Any) -> str:
    """JSON without spaces, as Go writes it (our names hold no `<`, `>` or `&` to escape).

    Members set to `OMIT` are left out, as `omitempty` leaves out a zero value; writing the
    samples with `OMIT` keeps the zero cases visible where each object is composed.
    """
    return json.dumps(_without_omitted(data), separators=(",", ":"), ensure_ascii=False)


def record(type_name: str, key: dict[str, Any], body: dict[str, Any]) -> Record:
    """An object stored under `1/<Type>/<key JSON>` whose value starts with its key."""
    return Record(type_name, f"1/{type_name}/{compact(key)}", compact({"key": key, **body}))


def go_time(
    year: int, month: int, day: int, hms: tuple[int, int, int], nanos: int, offset_min: int
) -> str:
    """RFC 3339 as Go's `time.Time` marshals it: fraction without trailing zeros, the offset.

    Args:
        year: Local year.
        month: Local month.
        day: Local day.
        hms: Local hour, minute, second.
        nanos: The fraction in nanoseconds.
        offset_min: The zone's offset from UTC in minutes (0 writes `Z`).
    """
    local = datetime.datetime(year, month, day, *hms)
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    if offset_min == 0:
        zone = "Z"
    else:
        sign = "+" if offset_min > 0 else "-"
        zone = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


def udec(whole: int, nanos: int = 0) -> int | str:
    """A `Udec64` as the original's marshaler writes it: a number, or decimal text."""
    if nanos == 0:
        return whole
    return f"{whole}.{nanos:09d}".rstrip("0")


def cloudlet_key(operator: str, site: str) -> dict[str, Any]:
    """A CloudletKey (organization first)."""
    return {"organization": operator, "name": site}


def app_key(developer: str, name: str, version: str) -> dict[str, Any]:
    """An AppKey."""
    return {"organization": developer, "name": name, "version": version}


def name_key(name: str, organization: str) -> dict[str, Any]:
    """A ClusterKey or AppInstKey (region-scoped: name first, no cloudlet)."""
    return {"name": name, "organization": organization}


# --- data model 62 --------------------------------------------------------------------------

FLAVORS: Final[tuple[tuple[str, int, int, int, dict[str, str]], ...]] = (
    # name, vcpus, ram (MB), disk (GB), optional resources
    ("ec.tiny", 1, 1024, 10, {}),
    ("ec.medium", 2, 4096, 40, {}),
    ("ec.large", 8, 16384, 120, {}),
    ("ec.large.gpu", 8, 32768, 200, {"gpu": "pci:2"}),
    ("ec.huge", 32, 131072, 500, {}),
)


def flavors() -> list[Record]:
    """Flavors; the GPU one keeps its optional resource map, the rest have `null`."""
    out = []
    for name, vcpus, ram, disk, opt in FLAVORS:
        body: dict[str, Any] = {
            "ram": ram,
            "vcpus": vcpus,
            "disk": disk,
            "opt_res_map": opt or None,
        }
        if name == "ec.large.gpu":
            body["gpus"] = [{"model_id": "nvidia-t4", "count": 1, "vendor": "nvidia", "memory": 16}]
        else:
            body["gpus"] = None
        out.append(record("Flavor", {"name": name}, body))
    return out


def settings_record() -> Record:
    """The singleton, every duration as Go's text, and the other int64s as numbers."""
    body = {
        "shepherd_metrics_collection_interval": "7s",
        "shepherd_health_check_retries": 4,
        "shepherd_health_check_interval": "9s",
        "auto_deploy_interval_sec": 240,
        "auto_deploy_offset_sec": 15,
        "auto_deploy_max_intervals": 12,
        "create_app_inst_timeout": "45m0s",
        "update_app_inst_timeout": "40m0s",
        "delete_app_inst_timeout": "25m0s",
        "create_cluster_inst_timeout": "50m0s",
        "update_cluster_inst_timeout": "35m0s",
        "delete_cluster_inst_timeout": "30m0s",
        "master_node_flavor": "ec.medium",
        "max_tracked_dme_clients": 250,
        "influx_db_metrics_retention": "504h0m0s",
        "cloudlet_maintenance_timeout": "7m30s",
        "shepherd_alert_evaluation_interval": "20s",
        "update_vm_pool_timeout": "25m0s",
        "update_trust_policy_timeout": "12m0s",
        "dme_api_metrics_collection_interval": "45s",
        "edge_events_metrics_collection_interval": "2h0m0s",
        "cleanup_reservable_auto_cluster_idletime": "45m0s",
        "influx_db_cloudlet_usage_metrics_retention": "17520h0m0s",
        "create_cloudlet_timeout": "1h30m0s",
        "update_cloudlet_timeout": "25m0s",
        "location_tile_side_length_km": 3,
        "edge_events_metrics_continuous_queries_collection_intervals": [
            {"interval": "1h0m0s", "retention": "240h0m0s"},
            {"interval": "12h0m0s", "retention": "1440h0m0s"},
            {"interval": "168h0m0s", "retention": "8760h0m0s"},
        ],
        "influx_db_downsampled_metrics_retention": "8760h0m0s",
        "influx_db_edge_events_metrics_retention": "1440h0m0s",
        "appinst_client_cleanup_interval": "36h0m0s",
        "cluster_auto_scale_averaging_duration_sec": 75,
        "cluster_auto_scale_retry_delay": "1m30s",
        "alert_policy_min_trigger_time": "45s",
        "rate_limit_max_tracked_ips": 5000,
        "shepherd_metrics_scrape_interval": "500ms",
        "resource_snapshot_thread_interval": "15m0s",
        "platform_ha_instance_poll_interval": "750ms",
        "platform_ha_instance_active_expire_time": "2s",
        "ccrm_api_timeout": "1m30s",
    }
    return Record("Settings", "1/Settings/settings", compact(body))


def _location(i: int, stamped: bool) -> dict[str, Any]:
    loc: dict[str, Any] = {"latitude": 47.25 + i * 0.5, "longitude": -122.125 - i}
    loc["timestamp"] = (
        go_time(2025, 1, 5 + i, (8, 15, i), 250_000_000 * (i % 4), 0) if stamped else ""
    )
    return loc


def cloudlet_records() -> list[Record]:
    """Per operator site: Cloudlet, CloudletInfo, Zone, CloudletRefs."""
    out = []
    for o, operator in enumerate(OPERATORS):
        for s, site in enumerate(SITES):
            i = o * len(SITES) + s
            key = cloudlet_key(operator, site)
            created = go_time(2025, 2, 1 + i, (10, 20, 30), 120_300_400 + i, (-420, 0, 330)[o])
            out.append(
                record(
                    "Cloudlet",
                    key,
                    {
                        "location": _location(i, stamped=False),
                        "ip_support": "Dynamic",
                        "num_dynamic_ips": 30 + i,
                        "time_limits": {},
                        "errors": None,
                        "state": "Ready",
                        "platform_type": "fake",
                        "notify_srv_addr": f"127.0.0.1:{51001 + i}",
                        "flavor": {},
                        "physical_name": f"{site}-phys",
                        "env_var": {"FLAVOR_MATCH_PATTERN": "^ec"} if s == 0 else None,
                        "container_version": "2025-02-01",
                        "config": {},
                        "res_tag_map": None,
                        "access_vars": None,
                        "deployment": "docker",
                        "infra_api_access": "RestrictedAccess" if s == 3 else "DirectAccess",
                        "infra_config": {},
                        "maintenance_state": "NormalOperation",
                        "created_at": created,
                        "updated_at": "",
                        "trust_policy_state": "NotPresent",
                        "resource_quotas": [{"name": "RAM", "value": 262144, "alert_threshold": 80}]
                        if o == 1
                        else None,
                        "default_resource_alert_threshold": 75,
                        "gpu_config": {},
                        "alliance_orgs": None,
                        "dns_label": f"{site}-{operator}",
                        "root_lb_fqdn": f"shared.{site}-{operator}.edge.example.net",
                        "federation_config": {},
                        "infra_flavors": None,
                        "crm_on_edge": True,
                        "obj_id": f"01jmq{i:02d}cloudlet{o}{s}x7k2p9w",
                        "static_root_lb_fqdn": f"shared.{site}-{operator}.edge.example.net",
                        "annotations": None,
                        "zone": site,
                        "db_model_id": 58,
                    },
                )
            )
            out.append(
                record(
                    "CloudletInfo",
                    key,
                    {
                        "state": "Ready" if s != 2 else "Offline",
                        "notify_id": 100 + i,
                        "controller": "ctrl-a:55001",
                        "os_max_ram": 524288,
                        "os_max_vcores": 128,
                        "os_max_vol_gb": 8000,
                        "errors": None,
                        "flavors": [
                            {"name": n, "vcpus": v, "ram": r, "disk": d, "prop_map": None}
                            for n, v, r, d, _ in FLAVORS[:3]
                        ],
                        "status": {},
                        "container_version": "2025-02-01",
                        "availability_zones": [{"name": "nova", "status": "available"}],
                        "os_images": None,
                        "controller_cache_received": True,
                        "maintenance_state": "NormalOperation",
                        "resources_snapshot": {
                            "platform_vms": None,
                            "info": None,
                            "cluster_insts": None,
                            "vm_app_insts": None,
                            "k8s_app_insts": None,
                        },
                        "trust_policy_state": "NotPresent",
                        "compatibility_version": 3,
                        "properties": {"site-id": f"S{i:03d}"},
                        "node_infos": None,
                        "active_crm_instance": "primary",
                        "release_version": "v4.1.0",
                        "node_pools": None,
                    },
                )
            )
            zone_key = {"organization": operator, "name": site}
            zone_created = go_time(2025, 3, 9, (7, 41, 12 + i), 87_001_300, (0, 60, -300)[o])
            out.append(
                record(
                    "Zone",
                    zone_key,
                    {
                        "description": f"{site} metro zone",
                        "infra_flavors": None,
                        "location": _location(i, stamped=s == 1),
                        "obj_id": f"01jmq{i:02d}zone{o}{s}abcdefgh",
                        "created_at": zone_created,
                        "updated_at": "",
                    },
                )
            )
            out.append(
                Record(
                    "CloudletRefs",
                    f"1/CloudletRefs/{compact(key)}",
                    compact(
                        {
                            "key": key,
                            "root_lb_ports": {"8080": 1, "10443": 3} if s == 0 else None,
                            "used_dynamic_ips": s or OMIT,
                            "opt_res_used_map": {"gpu": 1} if o == 2 else None,
                            "reserved_auto_cluster_ids": 5 if s == 1 else OMIT,
                            "cluster_insts": [name_key(f"cl-{o}-{s}", DEVELOPERS[0])],
                            "vm_app_insts": None,
                            "k8s_app_insts": [name_key(f"inst-{o}-{s}", DEVELOPERS[0])],
                        }
                    ),
                )
            )
    return out


APPS: Final = (
    # name, deployment, image type, access type
    ("mapviewer", "kubernetes", "Docker", "LoadBalancer"),
    ("telemetry", "helm", "Helm", "LoadBalancer"),
    ("transcoder", "docker", "Docker", "Direct"),
    ("gateway", "vm", "Qcow", "LoadBalancer"),
    ("inference", "kubernetes", "Docker", "DefaultForDeployment"),
    ("ledger", "docker", "Docker", "LoadBalancer"),
)


def _kubernetes_resources(total_vcpus: int | str, gpu: bool) -> dict[str, Any]:
    pool = {
        "total_vcpus": total_vcpus,
        "total_memory": 6144,
        "total_disk": 30,
        "total_opt_res": {"gpu": "pci:1"} if gpu else None,
        "topology": {
            "min_node_vcpus": 2,
            "min_node_memory": 2048,
            "min_number_of_nodes": 2,
            "min_node_opt_res": None,
            "min_node_gpus": None,
        },
        "total_gpus": None,
    }
    empty: dict[str, Any] = {
        "total_vcpus": 0,
        "total_opt_res": None,
        "topology": {},
        "total_gpus": None,
    }
    if gpu:
        return {"cpu_pool": empty, "gpu_pool": pool, "min_kubernetes_version": "1.29"}
    return {"cpu_pool": pool, "gpu_pool": empty}


def app_records() -> list[Record]:
    """Apps of both developers: every deployment, Udec64 numbers and decimal strings."""
    out = []
    for d, developer in enumerate(DEVELOPERS):
        for a, (name, deployment, image, access) in enumerate(APPS):
            i = d * len(APPS) + a
            body: dict[str, Any] = {
                "image_path": f"registry.example.net/{developer}/{name}:1.{a}",
                "image_type": image,
                "access_ports": f"tcp:{8000 + a},udp:{9000 + a}",
                "default_flavor": {},
                "deployment": deployment,
                "del_opt": OMIT if a else "AutoDelete",
                "configs": None,
                "access_type": access,
                "auto_prov_policies": [f"{developer}-spread"] if a == 0 else None,
                "created_at": go_time(2025, 4, 1 + i, (9, 0, i), 1_000 * i, (0, -420, 60)[d]),
                "updated_at": ""
                if a % 2
                else go_time(2025, 5, 2, (23, 59, 59), 999_999_999, (0, 330, -150)[d]),
                "required_outbound_connections": [
                    {
                        "protocol": "TCP",
                        "port_range_min": 443,
                        "port_range_max": 443,
                        "remote_cidr": "0.0.0.0/0",
                    }
                ]
                if a == 1
                else None,
                "serverless_config": {},
                "vm_app_os_type": "Linux" if deployment == "vm" else OMIT,
                "alert_policies": None,
                "qos_session_profile": "LowLatency" if a == 2 else OMIT,
                "qos_session_duration": "10m0s" if a == 2 else OMIT,
                "global_id": f"{developer}{name}10",
                "command_args": ["--listen", ":8080"] if a == 5 else None,
                "env_vars": {"MODE": "edge"} if a == 5 else None,
                "secret_env_vars": None,
                "obj_id": f"01jn{i:02d}app{d}{a}qwertyuiopas",
                "app_annotations": None,
                "compatibility_version": 2,
                "tags": None,
            }
            if deployment in ("kubernetes", "helm"):
                body["allow_serverless"] = True if a == 0 else OMIT
                if a == 0:
                    body["serverless_config"] = {
                        "vcpus": udec(0, 500_000_000 if d == 0 else 250_000_000),
                        "ram": 512,
                        "min_replicas": 2,
                        "gpu_config": {},
                    }
                vcpus = (udec(6), udec(3, 500_000_000), udec(12))[a % 3]
                body["kubernetes_resources"] = _kubernetes_resources(vcpus, gpu=a == 4)
            else:
                body["node_resources"] = {
                    "vcpus": 2 + a,
                    "ram": 2048,
                    "disk": 20,
                    "opt_res_map": None,
                    "infra_node_flavor": "ec.medium" if deployment == "vm" else OMIT,
                    "gpus": None,
                }
            out.append(record("App", app_key(developer, name, "1.0"), body))
            refs = {
                compact(name_key(f"{name}-{op}", developer)): 1 for op in OPERATORS[: 1 + a % 3]
            }
            out.append(
                Record(
                    "AppInstRefs",
                    f"1/AppInstRefs/{compact(app_key(developer, name, '1.0'))}",
                    compact(
                        {
                            "key": app_key(developer, name, "1.0"),
                            "insts": refs,
                            "delete_requested_insts": None,
                        }
                    ),
                )
            )
    return out


def cluster_records() -> list[Record]:
    """Kubernetes clusters with node pools (`"Name"`), Docker clusters with node resources."""
    out = []
    for o, operator in enumerate(OPERATORS):
        for s, site in enumerate(SITES):
            i = o * len(SITES) + s
            for developer in DEVELOPERS:
                name = f"cl-{o}-{s}"
                body: dict[str, Any] = {
                    "flavor": {},
                    "state": "Ready",
                    "errors": None,
                    "ip_access": "Dedicated" if s % 2 else "Shared",
                    "liveness": "Static",
                    "num_masters": 1 if s % 2 == 0 else OMIT,
                    "deployment": "kubernetes" if s % 2 == 0 else "docker",
                    "resources": {"vms": None},
                    "created_at": go_time(2025, 6, 10, (4, 5, 6 + i), 5_000_000, 0),
                    "updated_at": "",
                    "reservation_ended_at": "",
                    "networks": None,
                    "dns_label": f"{name}-{developer}",
                    "fqdn": f"{name}-{developer}.{site}-{operator}.edge.example.net",
                    "obj_id": f"01jp{i:02d}cluster{o}{s}zxcvbnmlk",
                    "cloudlet_key": cloudlet_key(operator, site),
                    "annotations": None,
                    "zone_key": {"organization": operator, "name": site},
                    "db_model_id": 58,
                    "infra_annotations": None,
                    "tags": {"team": "maps"} if i == 5 else None,
                }
                if s % 2 == 0:
                    pools = [
                        {
                            "Name": "workers",
                            "num_nodes": 2,
                            "node_resources": {
                                "vcpus": 8,
                                "ram": 16384,
                                "disk": 120,
                                "opt_res_map": {"gpu": "pci:2"} if s == 2 else None,
                                "gpus": None,
                            },
                            "scalable": True,
                        }
                    ]
                    if s == 0:
                        pools.append(
                            {
                                "Name": "burst",
                                "num_nodes": 1,
                                "node_resources": {"vcpus": 2, "ram": 4096, "disk": 40},
                            }
                        )
                    body["num_nodes"] = sum(p["num_nodes"] for p in pools)
                    body["node_pools"] = pools
                    body["kubernetes_version"] = "1.30"
                else:
                    body["node_resources"] = {
                        "vcpus": 2,
                        "ram": 4096,
                        "disk": 40,
                        "opt_res_map": None,
                        "gpus": None,
                    }
                    body["node_pools"] = None
                out.append(record("ClusterInst", name_key(name, developer), body))
                out.append(
                    record(
                        "ClusterRefs",
                        name_key(name, developer),
                        {"apps": [name_key(f"inst-{o}-{s}", developer)]},
                    )
                )
    return out


def app_inst_records() -> list[Record]:
    """AppInsts in every state the tests read: tracked state, liveness, health, ports."""
    out = []
    states = ("Ready", "CreateRequested", "Ready", "UpdateError")
    for o, operator in enumerate(OPERATORS):
        for s, site in enumerate(SITES):
            i = o * len(SITES) + s
            for d, developer in enumerate(DEVELOPERS):
                app_name, deployment, _, _ = APPS[(i + d) % len(APPS)]
                name = f"inst-{o}-{s}"
                body: dict[str, Any] = {
                    "cloudlet_loc": _location(i, stamped=d == 1),
                    "uri": f"{name}.{site}-{operator}.edge.example.net",
                    "liveness": "Static" if s else "Autoprov",
                    "mapped_ports": [
                        {
                            "proto": "Tcp",
                            "internal_port": 8000,
                            "public_port": 18000 + i,
                            "tls": True if s == 1 else OMIT,
                        },
                        {"proto": "Udp", "internal_port": 9000, "public_port": 19000 + i},
                    ],
                    "flavor": {},
                    "state": states[s],
                    "errors": ["image pull back-off"] if s == 3 else None,
                    "runtime_info": {"container_ids": ["c0ffee01", "c0ffee02"]} if d else {},
                    "created_at": go_time(2025, 7, 1, (12, 0, i), 10 ** (i % 9), (0, -420, 0)[d]),
                    "health_check": "Ok" if s != 2 else "ServerFail",
                    "power_state": "PowerOn" if deployment == "vm" else OMIT,
                    "vm_flavor": "ec.medium" if deployment == "vm" else OMIT,
                    "updated_at": "",
                    "internal_port_to_lb_ip": None,
                    "unique_id": f"{developer}-{name}-{site}",
                    "dns_label": f"{name}-{developer}",
                    "fed_key": {},
                    "app_key": app_key(developer, app_name, "1.0"),
                    "cluster_key": name_key(f"cl-{o}-{s}", developer)
                    if deployment in ("kubernetes", "helm", "docker")
                    else {},
                    "compatibility_version": 2,
                    "virtual_cluster_key": {},
                    "obj_id": f"01jq{i:02d}inst{d}{o}{s}poiuytrewq",
                    "cloudlet_key": cloudlet_key(operator, site),
                    "annotations": None,
                    "zone_key": {"organization": operator, "name": site},
                    "db_model_id": 58,
                    "tags": None,
                }
                if deployment in ("kubernetes", "helm"):
                    body["kubernetes_resources"] = _kubernetes_resources(
                        udec(1, 250_000_000), False
                    )
                else:
                    body["node_resources"] = {
                        "vcpus": 2,
                        "ram": 2048,
                        "disk": 20,
                        "infra_node_flavor": "ec.medium" if deployment == "vm" else OMIT,
                    }
                out.append(record("AppInst", name_key(name, developer), body))
    return out


def policy_records() -> list[Record]:
    """Policies, pools, networks, tag tables, a VM pool and devices."""
    dev, op = DEVELOPERS[0], OPERATORS[0]
    out = [
        record(
            "AutoProvPolicy",
            {"organization": dev, "name": f"{dev}-spread"},
            {
                "deploy_client_count": 4,
                "deploy_interval_count": 2,
                "zones": [{"organization": o, "name": SITES[0]} for o in OPERATORS],
                "min_active_instances": 1,
                "max_instances": 3,
            },
        ),
        record(
            "AutoScalePolicy",
            {"organization": dev, "name": "steady"},
            {
                "min_nodes": 1,
                "max_nodes": 5,
                "stabilization_window_sec": 120,
                "target_cpu": 70,
                "target_mem": 75,
                "target_active_connections": 200,
            },
        ),
        record(
            "TrustPolicy",
            {"organization": op, "name": "egress-https"},
            {
                "outbound_security_rules": [
                    {
                        "protocol": "TCP",
                        "port_range_min": 443,
                        "port_range_max": 443,
                        "remote_cidr": "10.20.0.0/16",
                    },
                    {"protocol": "ICMP", "remote_cidr": "0.0.0.0/0"},
                ]
            },
        ),
        record(
            "AlertPolicy",
            {"organization": dev, "name": "hot-cpu"},
            {
                "cpu_utilization_limit": 85,
                "severity": "warning",
                "trigger_time": "2m30s",
                "labels": {"tier": "gold"},
                "annotations": None,
                "description": "CPU above 85% for 2.5 minutes",
            },
        ),
        record(
            "ZonePool",
            {"organization": op, "name": "coastal"},
            {
                "zones": [{"organization": op, "name": s} for s in SITES[:2]],
                "created_at": go_time(2025, 8, 8, (8, 8, 8), 808_000_000, 120),
                "updated_at": "",
            },
        ),
        record(
            "Network",
            {"cloudlet_key": cloudlet_key(op, SITES[0]), "name": "backhaul"},
            {
                "routes": [{"destination_cidr": "10.99.0.0/16", "next_hop_ip": "10.0.0.1"}],
                "connection_type": "ConnectToClusterNodes",
            },
        ),
        record(
            "ResTagTable",
            {"name": "gpumap", "organization": op},
            {"tags": {"pci": "t4:1"}, "azone": "nova"},
        ),
        record(
            "VMPool",
            {"organization": op, "name": "metal-a"},
            {
                "vms": [
                    {
                        "name": "metal-a-1",
                        "net_info": {"external_ip": "192.0.2.10", "internal_ip": "10.1.0.10"},
                        "state": "Free",
                        "updated_at": {},
                        "flavor": {},
                    },
                    {
                        "name": "metal-a-2",
                        "net_info": {"internal_ip": "10.1.0.11"},
                        "group_name": "grp-7",
                        "state": "InUse",
                        "updated_at": {"seconds": 1736950000, "nanos": 4_200},
                        "internal_name": "grp-7-node-1",
                        "flavor": {"name": "ec.large", "vcpus": 8, "ram": 16384, "disk": 120},
                    },
                ],
                "state": "Ready",
                "errors": None,
                "crm_override": "NoOverride",
            },
        ),
    ]
    for n, (kind, uid) in enumerate((("sim-iccid", "8944500102198304826"), ("imei", "35-2099"))):
        out.append(
            record(
                "Device",
                {"unique_id_type": kind, "unique_id": uid},
                {
                    "first_seen": {"seconds": 1740000000 + n, "nanos": 312_000_000},
                    "last_seen": {} if n else {"seconds": 1740003600},
                    "notify_id": 11 + n,
                },
            )
        )
    return out


def current() -> list[Record]:
    """Every object of the data-model-62 set."""
    return [
        *flavors(),
        settings_record(),
        *cloudlet_records(),
        *app_records(),
        *cluster_records(),
        *app_inst_records(),
        *policy_records(),
    ]


# --- data model 54 --------------------------------------------------------------------------

OLDER_ONLY: Final = frozenset(
    {
        "edgeproto.AppInstKey.cloudlet_key",
        "edgeproto.ClusterKey.cloudlet_key",
        "edgeproto.ClusterKey.cluster_key",
        "edgeproto.AutoProvPolicy.cloudlets",
        "edgeproto.Settings.ccrm_redisapi_timeout",
    }
)
"""The members of `older()` our data model has no field for (55 moved the cloudlet out of
instance keys, 56 replaced AutoProvPolicy cloudlets by zones, the setting was dropped)."""


def older() -> list[Record]:
    """A data-model-54 region: instance keys still carry their cloudlet, no zones."""
    dev, op = DEVELOPERS[1], OPERATORS[2]
    out = [
        Record(
            "Settings",
            "1/Settings/settings",
            compact(
                {
                    "shepherd_metrics_collection_interval": "5s",
                    "create_app_inst_timeout": "30m0s",
                    "update_cloudlet_timeout": "20m0s",
                    "ccrm_redisapi_timeout": "15s",
                    "edge_events_metrics_continuous_queries_collection_intervals": [
                        {"interval": "24h0m0s", "retention": "2160h0m0s"}
                    ],
                }
            ),
        ),
        record(
            "AutoProvPolicy",
            {"organization": dev, "name": "nearby"},
            {
                "deploy_client_count": 2,
                "cloudlets": [{"key": cloudlet_key(op, site)} for site in SITES[:2]],
                "max_instances": 2,
            },
        ),
    ]
    for s, site in enumerate(SITES):
        ckey = cloudlet_key(op, site)
        out.append(
            record(
                "Cloudlet",
                ckey,
                {
                    "location": _location(s, stamped=False),
                    "ip_support": "Dynamic",
                    "state": "Ready",
                    "platform_type": "fake",
                    "created_at": go_time(2023, 11, 3, (16, 25, s), 44_000 * (s + 1), -420),
                    "updated_at": "",
                    "root_lb_fqdn": f"{site}.{op}.old.example.net",
                    "static_root_lb_fqdn": f"{site}.{op}.old.example.net",
                    "crm_on_edge": True,
                    "obj_id": f"01hf{s:02d}oldcloudlet{s}mnbvcxz",
                },
            )
        )
        out.append(record("CloudletInfo", ckey, {"state": "Ready", "notify_id": 40 + s}))
        out.append(
            record(
                "App",
                app_key(dev, f"legacy{s}", "2.1"),
                {
                    "image_path": f"registry.example.net/{dev}/legacy{s}:2.1",
                    "image_type": "Docker",
                    "deployment": "docker",
                    "default_flavor": {"name": "ec.medium"},
                    "access_type": "LoadBalancer",
                    "created_at": go_time(2023, 10, 30 - s, (8, 0, 0), 5 * 10**8, -420),
                    "updated_at": "",
                },
            )
        )
        out.append(
            record(
                "ClusterInst",
                {"cluster_key": {"name": "shared"}, "cloudlet_key": ckey, "organization": dev},
                {
                    "flavor": {"name": "ec.medium"},
                    "state": "Ready",
                    "deployment": "docker",
                    "fqdn": f"shared.{site}.{op}.old.example.net",
                    "static_fqdn": f"shared.{site}.{op}.old.example.net",
                    "obj_id": f"01hf{s:02d}oldcluster{s}lkjhgfd",
                    "created_at": "",
                    "updated_at": "",
                    "reservation_ended_at": "",
                },
            )
        )
        out.append(
            record(
                "AppInst",
                {"name": f"legacy{s}", "organization": dev, "cloudlet_key": ckey},
                {
                    "uri": f"legacy{s}.{site}.{op}.old.example.net",
                    "static_uri": f"legacy{s}.{site}.{op}.old.example.net",
                    "liveness": "Static",
                    "mapped_ports": [{"proto": "Tcp", "internal_port": 80, "public_port": 80}],
                    "flavor": {"name": "ec.medium"},
                    "state": "Ready",
                    "health_check": "Ok",
                    "app_key": app_key(dev, f"legacy{s}", "2.1"),
                    "cluster_key": {"name": "shared", "organization": dev},
                    "obj_id": f"01hf{s:02d}oldinst{s}poiuytr",
                    "created_at": go_time(2023, 11, 4, (1, 2, 3), 0, 0),
                    "updated_at": "",
                },
            )
        )
    return out


# --- data model 56, before NodePoolsFeature (57) ------------------------------------------------

MODEL_56_DEVELOPER: Final = "quillstack"
MODEL_56_CLOUDLET: Final = {"organization": "tidewater", "name": "pier-9"}


class FlavorSize(NamedTuple):
    """A flavor's name and size."""

    name: str
    vcpus: int
    ram: int
    disk: int


MODEL_56_FLAVOR: Final = FlavorSize("ec.xlarge.gpu", vcpus=6, ram=12288, disk=80)
MODEL_56_OPT_RES: Final = {"gpu": "pci:1"}
MODEL_56_DEPLOYMENTS: Final = ("docker", "kubernetes", "helm", "vm")


def model_56_database() -> list[Record]:
    """Apps, AppInsts and ClusterInsts sized by one flavor, as data model 56 stored them.

    Apps carry `default_flavor`, instances `flavor`, no resources anywhere; the Kubernetes
    cluster has `num_nodes` 2 and a master flavor. Every instance is stamped
    `db_model_id` 56 and has a zone, as 56 left it.
    """
    dev, cloudlet = MODEL_56_DEVELOPER, MODEL_56_CLOUDLET
    flavor = {"name": MODEL_56_FLAVOR.name}
    size = MODEL_56_FLAVOR
    out = [
        record(
            "Flavor",
            flavor,
            {
                "ram": size.ram,
                "vcpus": size.vcpus,
                "disk": size.disk,
                "opt_res_map": MODEL_56_OPT_RES,
            },
        )
    ]
    for deployment in MODEL_56_DEPLOYMENTS:
        out.append(
            record(
                "App",
                app_key(dev, f"{deployment}-svc", "0.9"),
                {
                    "image_path": "vm.qcow2#md5:0123456789abcdef0123456789abcdef"
                    if deployment == "vm"
                    else f"registry.example.net/{dev}/svc:0.9",
                    "image_type": "QCOW" if deployment == "vm" else "Docker",  # the parser takes it
                    "access_ports": "tcp:7443",
                    "default_flavor": flavor,
                    "deployment": deployment,
                    "access_type": "LoadBalancer",
                },
            )
        )
    for deployment in MODEL_56_DEPLOYMENTS:
        out.append(
            record(
                "AppInst",
                name_key(f"{deployment}-svc-1", dev),
                {
                    "app_key": app_key(dev, f"{deployment}-svc", "0.9"),
                    "cluster_key": {},
                    "cloudlet_key": cloudlet,
                    "zone_key": cloudlet,
                    "cloudlet_loc": {},
                    "mapped_ports": None,
                    "flavor": flavor,
                    "vm_flavor": "m5.2xlarge" if deployment == "vm" else OMIT,
                    "external_volume_size": 50 if deployment == "vm" else OMIT,
                    "runtime_info": {},
                    "created_at": "",
                    "updated_at": "",
                    "fed_key": {},
                    "virtual_cluster_key": {},
                    "obj_id": f"01hz56inst{deployment[:3]}q1w2e3r4t5",
                    "db_model_id": 56,
                },
            )
        )
    for deployment, extra in (
        ("docker", {}),
        (
            "kubernetes",
            {
                "num_masters": 1,
                "num_nodes": 2,
                "shared_volume_size": 5,
                "master_node_flavor": "ec.medium",
            },
        ),
    ):
        out.append(
            record(
                "ClusterInst",
                name_key(f"{deployment}-pool", dev),
                {
                    "cloudlet_key": cloudlet,
                    "zone_key": cloudlet,
                    "flavor": flavor,
                    "deployment": deployment,
                    **extra,
                    "resources": {"vms": None},
                    "created_at": "",
                    "updated_at": "",
                    "reservation_ended_at": "",
                    "obj_id": f"01hz56cluster{deployment[:3]}a1s2d3f4",
                    "db_model_id": 56,
                },
            )
        )
    return out
