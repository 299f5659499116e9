"""CRM settings: the original's `crmserver` flags (crm_platforms.md §4.1) in our style."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_cloud.config import CommonConfig, host_port, option

__all__ = ["CrmConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CrmConfig(CommonConfig):
    """CRM settings; defaults are the `make run` topology on loopback.

    `cloudlet_key` has no useful default: a CRM serves exactly one cloudlet, named by the
    process that starts it (the original's `--cloudletKey '{"organization":..,"name":..}'`).
    """

    api_addr: str = option(
        "127.0.0.1:51001",
        "gRPC listen address (health, reflection; the original CRM's own listener port)",
        parse=host_port,
    )
    notify_addrs: tuple[str, ...] = option(
        ("127.0.0.1:50001",),
        "Controller notify addresses (comma list)",
        go="notifyAddrs",
        parse=host_port,
    )
    cloudlet_key: str = option(
        "", 'the cloudlet served, as JSON {"organization":"o","name":"c"}', go="cloudletKey"
    )
    platform: str = option(
        "", "platform type; else $PLATFORM, else the Cloudlet's platform_type", go="platform"
    )
    physical_name: str = option(
        "", "the cloudlet's name on the infrastructure (default: the Cloudlet's)",
        go="physicalName",
    )  # fmt: skip
    hostname: str = option("", "this host's name, for logs", go="hostname")
    region: str = option("local", "region name", go="region")
    span: str = option("", "tracing span of whoever started this CRM (logged)", go="span")
    container_version: str = option(
        "", "version of this CRM, reported in CloudletInfo", go="containerVersion"
    )
    app_dns_root: str = option("appdnsroot.net", "DNS root of generated names", go="appDNSRoot")
    test_mode: bool = option(False, "test mode: relaxed platform checks", go="testMode")
    cache_dir: Path | None = option(None, "directory for platform files", go="cacheDir")
    init_timeout: float = option(
        60.0, "seconds each Controller handshake step may take before the CRM exits"
    )
    platform_init_timeout: float = option(60.0, "seconds the platform's init may take")
    resource_snapshot_interval: float = option(
        0.0,
        "seconds between resource snapshots; 0 follows the Controller's "
        "resource_snapshot_thread_interval setting",
    )
