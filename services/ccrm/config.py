"""CCRM settings; defaults are the `make run` topology on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_cloud.config import host_port, option
from edge_cloud.secrets.options import SecretsConfig

__all__ = ["CcrmConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CcrmConfig(SecretsConfig):
    """CCRM settings; defaults are the `make run` topology on loopback."""

    api_addr: str = option(
        "127.0.0.1:19001", "gRPC listen address (platform APIs)", go="apiAddr", parse=host_port
    )
    notify_addrs: tuple[str, ...] = option(
        ("127.0.0.1:50001",),
        "Controller notify addresses (comma list)",
        go="controllerNotifyAddr",
        parse=host_port,
    )
    controller_addr: str = option(
        "127.0.0.1:55001",
        "Controller API address (CloudletNode registration of platform VMs)",
        go="controllerApiAddr",
        parse=host_port,
    )
    node_type: str = option(
        "ccrm", "node type the hosted platforms are registered under", go="nodeType"
    )
    platforms: tuple[str, ...] = option(
        (), "platform types to host (comma list); empty hosts every installed one"
    )
    region: str = option("local", "region name", go="region")
    app_dns_root: str = option("appdnsroot.net", "DNS root of generated names", go="appDNSRoot")
    test_mode: bool = option(False, "test mode: relaxed platform checks", go="testMode")
    cloudlet_registry_path: str = option(
        "", "registry of the cloudlet platform images", go="cloudletRegistryPath"
    )
    version_tag: str = option("", "tag of the cloudlet platform images", go="versionTag")
    cloudlet_vm_image_path: str = option(
        "", "where platform VM base images are downloaded from", go="cloudletVMImagePath"
    )
    controller_public_notify_addr: str = option(
        "", "notify address handed to CRMs on the edge", go="controllerPublicNotifyAddr"
    )
    controller_public_access_api_addr: str = option(
        "", "access API address handed to CRMs on the edge", go="controllerPublicAccessApiAddr"
    )
    ansible_public_addr: str = option(
        "http://127.0.0.1:48880", "node configuration address handed to edge nodes",
        go="ansiblePublicAddr",
    )  # fmt: skip
    thanos_recv_addr: str = option("", "metrics receiver handed to CRMs", go="thanosRecvAddr")
    commercial_certs: bool = option(False, "publicly trusted certificates", go="commercialCerts")
    cache_dir: Path | None = option(None, "directory for per-cloudlet platform files")
    platform_init_timeout: float = option(60.0, "seconds a platform's init may take")
    secrets_key_file: Path | None = option(
        None, "key file of the local secrets backend (the Controller's); none: no secrets"
    )
    etcd_urls: tuple[str, ...] = option(
        ("http://127.0.0.1:2379",), "etcd of the local secrets backend (the Controller's)"
    )
    etcd_namespace: str = option("", "the Controller's etcd key prefix (local secrets)")
