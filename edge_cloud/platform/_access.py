"""`AccessApi`: how a platform asks for secrets, DNS records and certificates.

A platform never reads Vault or a DNS provider itself; it gets an `AccessApi` bound to its
cloudlet (crm_platforms.md §1.4). The CCRM and Controller implement it over Vault and the
DNS provider; an edge CRM implements it as `CloudletAccessApi.GetAccessData` calls. Method
names follow the original's, snake_cased; the comment on each names its wire `type`
string for the CRM implementation.

`LocalAccessApi` is the local default for daemons started without Vault (tests, `make
run`): access variables and DNS records in memory, everything that needs Vault refused
with a message saying so. `SecretsAccessApi` is what the CCRM hands its platforms: the
cloudlet's access vars, App secret env vars and registry credentials come from the
secrets backend (Vault or the local sealed store, `edge_cloud.secrets`) at the paths the
original uses; DNS and the rest behave as in `LocalAccessApi`.

Registering a CloudletNode (the VM a platform is about to boot) is the Controller's job:
both classes take a `CloudletNodes` for it, in the CCRM a `ControllerCloudletNodes` on the
Controller's API address (the original's `ctrlConn`), and refuse without one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc.aio
from edgeproto import cloudletkey_pb2, cloudletnode_pb2, cloudletnode_pb2_grpc

from edge_cloud import api, secrets
from edge_cloud.config import TlsFiles
from edge_cloud.errors import FailedPrecondition, InvalidArgument, PermissionDenied, from_rpc_error
from edge_cloud.objects import keys

__all__ = [
    "AccessApi",
    "CloudletNodes",
    "ControllerCloudletNodes",
    "DnsRecord",
    "LocalAccessApi",
    "RegistryAuth",
    "SecretsAccessApi",
]


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for an image registry.

    Attributes:
        auth_type: `basic`, `token` or `noauth`.
        hostname: Registry host.
        username: User for basic auth.
        password: Password for basic auth.
        token: Token for token auth.
    """

    auth_type: str
    hostname: str = ""
    username: str = ""
    password: str = ""
    token: str = ""


@dataclass(frozen=True, slots=True)
class DnsRecord:
    """One DNS record.

    Attributes:
        name: Fully qualified name.
        rtype: `A`, `AAAA` or `CNAME`.
        content: Address or target.
        ttl: Seconds.
    """

    name: str
    rtype: str
    content: str
    ttl: int = 300


class AccessApi(Protocol):
    """Secrets and shared services for one cloudlet's platform; every call may be remote."""

    async def get_cloudlet_access_vars(self) -> dict[str, str]:
        """The cloudlet's access variables (`get-cloudlet-access-vars`)."""
        ...

    async def get_registry_auth(self, image_url: str) -> RegistryAuth:
        """Pull credentials for an image (`get-registry-auth`)."""
        ...

    async def sign_ssh_key(self, public_key: str) -> str:
        """Sign an ssh public key with the cloudlet CA (`sign-ssh-key`)."""
        ...

    async def get_ssh_public_key(self) -> str:
        """The ssh CA public key (`get-ssh-public-key`)."""
        ...

    async def create_or_update_dns_record(
        self, name: str, rtype: str, content: str, ttl: int = 300, proxy: bool = False
    ) -> None:
        """Register a DNS record; only A, AAAA and CNAME (`create-or-update-dns-record`)."""
        ...

    async def get_dns_records(self, fqdn: str) -> list[DnsRecord]:
        """Records of a name (`get-dns-records`)."""
        ...

    async def delete_dns_record(self, fqdn: str) -> None:
        """Remove the records of a name (`delete-dns-record`)."""
        ...

    async def get_session_tokens(self, secret_name: str) -> str:
        """The current TOTP code of a secret (`get-session-tokens`)."""
        ...

    async def get_public_cert(self, common_name: str) -> tuple[str, str]:
        """Certificate and key PEMs for a name (`get-public-cert`)."""
        ...

    async def create_cloudlet_node(self, node: cloudletnode_pb2.CloudletNode) -> str:
        """Register an edge node; returns its one-time password (`create-cloudlet-node`)."""
        ...

    async def delete_cloudlet_node(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        """Unregister an edge node (`delete-cloudlet-node`)."""
        ...

    async def get_app_secret_vars(self, app_key: str) -> dict[str, str]:
        """Secret environment of an App, empty if none (`get-app-secret-vars`)."""
        ...


class CloudletNodes(Protocol):
    """Where CloudletNodes are registered: the Controller's CloudletNodeApi."""

    async def create(self, node: cloudletnode_pb2.CloudletNode) -> str:
        """Store the node; returns its one-time password."""
        ...

    async def delete(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        """Remove the node; a node that is not there is fine."""
        ...


class ControllerCloudletNodes:
    """`CloudletNodes` over gRPC to the Controller (the original CCRM's `ctrlConn` calls).

    The channel is opened on the first call, inside the event loop (a daemon builds this
    before its loop runs), and connects lazily: a CCRM started before its Controller works
    once the Controller is up. `close` it at shutdown.

    Args:
        target: The Controller's API address (`host:port`).
        tls: Client TLS files; None for plaintext (loopback).
        timeout: Seconds each call may take.
    """

    def __init__(self, target: str, *, tls: TlsFiles | None = None, timeout: float = 30.0) -> None:
        self._target = target
        self._tls = tls
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> cloudletnode_pb2_grpc.CloudletNodeApiAsyncStub:
        if self._channel is None:
            self._channel = api.channel(self._target, tls=self._tls, timeout=self._timeout)
        return cloudletnode_pb2_grpc.CloudletNodeApiStub(self._channel)

    async def close(self) -> None:
        """Close the channel, if one was opened; a later call opens a new one."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def create(self, node: cloudletnode_pb2.CloudletNode) -> str:
        """`CreateCloudletNode`; the Controller's error (e.g. no such cloudlet) is raised."""
        try:
            result = await self._stub().CreateCloudletNode(node, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from err
        return result.message

    async def delete(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        """`DeleteCloudletNode`; NOT_FOUND is success, since cleanup paths call it twice."""
        try:
            await self._stub().DeleteCloudletNode(
                cloudletnode_pb2.CloudletNode(key=key), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise from_rpc_error(err) from err


_DNS_TYPES = frozenset({"A", "AAAA", "CNAME"})


class LocalAccessApi:
    """The local default `AccessApi`: in-memory access vars and DNS, no Vault.

    Args:
        access_vars: What `get_cloudlet_access_vars` returns.
        app_secret_vars: Secret environment by App key string.
        nodes: Where CloudletNodes are registered; None refuses registering.
        cloudlet_key: The cloudlet this access API serves; when set, nodes of other
            cloudlets are refused (a platform may register only its own machines).
    """

    def __init__(
        self,
        access_vars: Mapping[str, str] | None = None,
        app_secret_vars: Mapping[str, Mapping[str, str]] | None = None,
        *,
        nodes: CloudletNodes | None = None,
        cloudlet_key: cloudletkey_pb2.CloudletKey | None = None,
    ) -> None:
        self._access_vars = dict(access_vars or {})
        self._app_secrets = {k: dict(v) for k, v in (app_secret_vars or {}).items()}
        self.dns: dict[str, list[DnsRecord]] = {}
        self._nodes = nodes
        self._cloudlet_key = cloudlet_key

    @staticmethod
    def _no_vault(what: str) -> FailedPrecondition:
        return FailedPrecondition(f"{what} needs Vault, and this daemon runs without it")

    async def get_cloudlet_access_vars(self) -> dict[str, str]:
        """The access variables given at construction."""
        return dict(self._access_vars)

    async def get_registry_auth(self, image_url: str) -> RegistryAuth:
        """No credentials: public registries only."""
        return RegistryAuth(auth_type="noauth", hostname=image_url.partition("/")[0])

    async def sign_ssh_key(self, public_key: str) -> str:
        """Refused: signing needs the Vault SSH CA."""
        raise self._no_vault("signing an ssh key")

    async def get_ssh_public_key(self) -> str:
        """Refused: the CA key lives in Vault."""
        raise self._no_vault("the ssh CA public key")

    async def create_or_update_dns_record(
        self, name: str, rtype: str, content: str, ttl: int = 300, proxy: bool = False
    ) -> None:
        """Keep the record in memory."""
        if rtype not in _DNS_TYPES:
            raise InvalidArgument(f"DNS record type {rtype} is not allowed (A, AAAA, CNAME)")
        records = [r for r in self.dns.get(name, []) if r.rtype != rtype]
        records.append(DnsRecord(name, rtype, content, ttl))
        self.dns[name] = records

    async def get_dns_records(self, fqdn: str) -> list[DnsRecord]:
        """Records kept for the name."""
        return list(self.dns.get(fqdn, []))

    async def delete_dns_record(self, fqdn: str) -> None:
        """Forget the name's records; a missing name is fine."""
        self.dns.pop(fqdn, None)

    async def get_session_tokens(self, secret_name: str) -> str:
        """Refused: TOTP codes come from Vault."""
        raise self._no_vault("a session token")

    async def get_public_cert(self, common_name: str) -> tuple[str, str]:
        """Refused: certificates come from Vault."""
        raise self._no_vault(f"a certificate for {common_name}")

    def _own_node(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        if self._cloudlet_key is not None and key.cloudlet_key != self._cloudlet_key:
            raise PermissionDenied(
                f"cloudlet node {key.name} belongs to cloudlet "
                f"{keys.key_string(key.cloudlet_key)}; this platform serves "
                f"{keys.key_string(self._cloudlet_key)} and may register only its own nodes"
            )

    async def create_cloudlet_node(self, node: cloudletnode_pb2.CloudletNode) -> str:
        """Register through the Controller; refused without a connection to it."""
        if self._nodes is None:
            raise self._no_vault("registering a cloudlet node")
        self._own_node(node.key)
        return await self._nodes.create(node)

    async def delete_cloudlet_node(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        """Unregister through the Controller; without one nothing was registered."""
        if self._nodes is None:
            return
        self._own_node(key)
        await self._nodes.delete(key)

    async def get_app_secret_vars(self, app_key: str) -> dict[str, str]:
        """Secrets given at construction, empty if none."""
        return dict(self._app_secrets.get(app_key, {}))


def _app_key_parts(app_key: str) -> tuple[str, str, str]:
    """Organization, name and version from an App key string (`keys.key_string`)."""
    try:
        parsed = json.loads(app_key)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise InvalidArgument(
            f"app key {app_key!r} is not an App key string such as "
            '{"organization":"dev","name":"app","version":"1.0"}'
        )
    org, name, version = (str(parsed.get(k, "")) for k in ("organization", "name", "version"))
    if not org or not name:
        raise InvalidArgument(f"app key {app_key!r} needs an organization and a name")
    return org, name, version


class SecretsAccessApi(LocalAccessApi):
    """The access API of one cloudlet over the secrets backend (the original's VaultClient).

    Reads happen on every call, so an access-var update through the Controller reaches the
    platform on its next call without a restart. Secrets are returned, never logged.

    Args:
        backend: Where the secrets live.
        region: The region, the first segment of every path.
        organization: The cloudlet's organization.
        name: The cloudlet's name.
        physical_name: The cloudlet's physical name (access vars are kept under it).
        nodes: Where CloudletNodes are registered; None refuses registering.
        cloudlet_key: The cloudlet's full key; when set, only its nodes may be registered.
    """

    def __init__(
        self,
        backend: secrets.SecretsBackend,
        *,
        region: str,
        organization: str,
        name: str,
        physical_name: str = "",
        nodes: CloudletNodes | None = None,
        cloudlet_key: cloudletkey_pb2.CloudletKey | None = None,
    ) -> None:
        super().__init__(nodes=nodes, cloudlet_key=cloudlet_key)
        self._backend = backend
        self._region = region
        self._org = organization
        self._name = name
        self._physical = physical_name

    async def get_cloudlet_access_vars(self) -> dict[str, str]:
        """The stored access vars of the cloudlet, empty if none were given."""
        path = secrets.cloudlet_access_vars_path(
            self._region, self._org, self._name, self._physical
        )
        found = await self._backend.get(path)
        return {} if found is None else dict(found.data)

    async def get_session_tokens(self, secret_name: str) -> str:
        """The current TOTP code of one of the cloudlet's TOTP-seed access vars."""
        return await secrets.totp_session_token(
            self._backend,
            region=self._region,
            org=self._org,
            name=self._name,
            physical_name=self._physical,
            secret_name=secret_name,
        )

    async def get_registry_auth(self, image_url: str) -> RegistryAuth:
        """Stored credentials of the image's registry host, else none (public registry)."""
        rest = image_url.split("://", 1)[-1]
        hostname = rest.partition("/")[0].partition(":")[0].lower()
        if not hostname:
            raise InvalidArgument(f"image URL {image_url!r} names no registry host")
        found = await self._backend.get(f"registry/{hostname}")
        if found is None:
            return RegistryAuth(auth_type="noauth", hostname=hostname)
        data = found.data
        return RegistryAuth(
            auth_type=data.get("AuthType", "basic" if data.get("username") else "token"),
            hostname=data.get("hostname", hostname),
            username=data.get("username", ""),
            password=data.get("password", ""),
            token=data.get("token", ""),
        )

    async def get_app_secret_vars(self, app_key: str) -> dict[str, str]:
        """The App's secret env vars from the backend, empty if it has none."""
        org, name, version = _app_key_parts(app_key)
        path = secrets.app_secret_vars_path(self._region, org, name, version)
        found = await self._backend.get(path)
        return {} if found is None else dict(found.data)
