"""Controller settings: the original's flags where they apply, loopback defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from edge_cloud.config import ConfigError, host_port, option
from edge_cloud.secrets.options import SecretsConfig
from services.controller._ccrm import parse_platform_service_addrs

__all__ = ["ControllerConfig", "platform_service_addr", "region_name"]

_REGION: Final = re.compile(r"^\w+$")
APP_DNS_ROOT_MAX: Final = 40


def region_name(value: str) -> str:
    r"""Validate `--region` as the original does (Vault approle names are strict).

    Args:
        value: The region name as given.

    Returns:
        The value unchanged.

    Raises:
        ValueError: "invalid region name" when it is not `^\w+$`.
    """
    if not _REGION.match(value):
        raise ValueError("invalid region name")
    return value


def platform_service_addr(value: str) -> str:
    """Validate one `--platform-service-addrs` entry: `nodeType=host:port`.

    The original's `nodeType:host:port` is accepted too.

    Args:
        value: One entry.

    Returns:
        The value unchanged.

    Raises:
        ValueError: When the node type or the address is missing.
    """
    parse_platform_service_addrs([value])
    return value


def app_dns_root(value: str) -> str:
    """Validate `--app-dns-root`: every generated FQDN ends with it, so it must stay short.

    Args:
        value: The DNS root as given.

    Returns:
        The value unchanged.

    Raises:
        ValueError: When it is longer than 40 characters.
    """
    if len(value) > APP_DNS_ROOT_MAX:
        raise ValueError(f"appDNSRoot {value} must be {APP_DNS_ROOT_MAX} characters or less")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerConfig(SecretsConfig):
    """Controller settings; defaults are the `make run` topology on loopback."""

    api_addr: str = option(
        "127.0.0.1:55001", "gRPC listen address of the object APIs", go="apiAddr", parse=host_port
    )
    notify_addr: str = option(
        "127.0.0.1:50001",
        "notify listen address (CRM, DME, Shepherd connect here)",
        go="notifyAddr",
        parse=host_port,
    )
    http_addr: str | None = option(
        "127.0.0.1:8901",
        "REST gateway (/edgeproto/v1) and CAMARA NBI listen address, as the original; empty "
        "disables; give port 0 (or empty) where several Controllers share a host",
        go="httpAddr",
        parse=host_port,
    )
    external_api_addr: str = option(
        "",
        "address other controllers use to reach this one; default: the bound API address",
        go="externalApiAddr",
    )
    etcd_urls: tuple[str, ...] = option(
        ("http://127.0.0.1:2379",), "etcd client endpoints", go="etcdUrls"
    )
    redis_standalone_addr: str = option(
        "127.0.0.1:6379", "Redis address (standalone mode)", go="redisStandaloneAddr"
    )
    influx_addr: str = option("http://127.0.0.1:8086", "InfluxDB address", go="influxAddr")
    region: str = option(
        "local", "region name (letters, digits, _)", go="region", parse=region_name
    )
    app_dns_root: str = option(
        "appdnsroot.net",
        "DNS root of every generated FQDN (at most 40 characters)",
        go="appDNSRoot",
        parse=app_dns_root,
    )
    platform_service_addrs: tuple[str, ...] = option(
        (),
        "CCRM address per platform node type, nodeType=host:port (comma list)",
        go="platformServiceAddr",
        parse=platform_service_addr,
    )
    version_tag: str = option("", "default container version of new cloudlets", go="versionTag")
    test_mode: bool = option(False, "test mode: show fake platforms", go="testMode")
    auto_upgrade: bool = option(
        False,
        "upgrade an older etcd data model at start instead of refusing to start",
        go="autoUpgrade",
    )
    skip_version_check: bool = option(
        False, "start without checking the etcd data-model version", go="skipVersionCheck"
    )
    etcd_timeout: float = option(5.0, "seconds an etcd call may take before it fails")
    etcd_namespace: str = option(
        "", "prefix added to every etcd key (isolates tests sharing one etcd)"
    )

    def __post_init__(self) -> None:
        # Defaults bypass `parse`, and tests may build the class directly.
        try:
            region_name(self.region)
            app_dns_root(self.app_dns_root)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not self.etcd_urls:
            raise ConfigError("--etcd-urls needs at least one endpoint")
