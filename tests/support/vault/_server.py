"""The Vault test server itself (aiohttp); import it only with `AIOHTTP_NO_EXTENSIONS=1`.

State lives in memory for the life of the process. What it models, and where it is simpler
than Vault:

- **Tokens.** The root token (`--token`) may do everything. Tokens from an AppRole login
  carry the role's `token_ttl` (expired → 403, as Vault) and may use every secrets engine
  but not `sys/` or the AppRole admin paths (a stand-in for policies, which are not
  evaluated). `auth/token/lookup-self` and `revoke-self` work for both.
- **KV version 2** at any mount enabled as `kv` with `version: 2` (`secret/` exists at
  start): versions with `max_versions` (default 10), check-and-set (`options.cas`, and
  `cas_required` per mount or secret), soft delete / undelete / destroy, metadata read,
  update and delete, `LIST` (or `GET ?list=true`) of folders.
- **PKI** at `pki/` (more with `sys/mounts`): a CA generated at start (EC P-256), roles
  (`allowed_domains`, `allow_subdomains`, `allow_bare_domains`, `allow_any_name`,
  `allow_localhost`, `allow_ip_sans`, `ttl`, `max_ttl`), `issue/<role>` returning a real
  certificate and key signed by that CA, `ca/pem` and `cert/ca`.
- **TOTP** at any mount enabled as `totp` (the original mounts one per region at
  `<region>/totp`): keys from a given base32 `key` (`digits`, `period`, `algorithm`),
  read, delete, `LIST`, and `code/<name>` with the current RFC 6238 code.
- **sys:** `health` (no token; 503 while sealed), `mounts` (list, enable, disable), `seal`
  and `unseal` (the unseal key is `--unseal-key`, default the root token), so callers can
  be tested against a sealed Vault.

Every error is `{"errors": [...]}` with Vault's status: 400 bad request or check-and-set,
403 permission denied, 404 no such secret or path, 405 unsupported operation, 503 sealed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import ipaddress
import json
import re
import secrets
import signal
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["VaultState", "build_app", "main"]

DEFAULT_MAX_VERSIONS: Final = 10
DEFAULT_PKI_TTL: Final = 72 * 3600
_DURATION: Final = re.compile(r"(\d+)([hms])")

Json = dict[str, Any]


class VaultHTTPError(Exception):
    """An error reply: status and the `errors` list."""

    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status, errors)
        self.status = status
        self.errors = list(errors)


def _now() -> str:
    """Vault's timestamps: RFC 3339 UTC with nanosecond digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def _seconds(value: Any, default: int = 0) -> int:
    """A Vault duration: an int of seconds, or `1h30m`, `45s`, `72h`."""
    if value in (None, ""):
        return default
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise VaultHTTPError(400, f'invalid duration "{text}"')
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _bool(value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


def _str_list(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


# --- state -------------------------------------------------------------------------------------


@dataclass
class Token:
    """A token and what it may do."""

    id: str
    policies: list[str]
    path: str
    ttl: int = 0
    created: float = field(default_factory=time.time)
    accessor: str = field(default_factory=lambda: str(uuid.uuid4()))
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> bool:
        return "root" in self.policies

    def expired(self) -> bool:
        return self.ttl > 0 and time.time() >= self.created + self.ttl


@dataclass
class Role:
    """An AppRole role."""

    name: str
    role_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    secret_ids: dict[str, str] = field(default_factory=dict)  # secret id → accessor
    token_ttl: int = 0
    token_policies: list[str] = field(default_factory=list)
    bind_secret_id: bool = True


@dataclass
class Version:
    """One version of a KV v2 secret."""

    data: Json | None
    created: str
    deleted: str = ""
    destroyed: bool = False

    def metadata(self, number: int) -> Json:
        return {
            "created_time": self.created,
            "custom_metadata": None,
            "deletion_time": self.deleted,
            "destroyed": self.destroyed,
            "version": number,
        }


@dataclass
class Entry:
    """A KV v2 secret: its versions and metadata."""

    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    current: int = 0
    oldest: int = 0
    max_versions: int = 0
    cas_required: bool = False
    versions: dict[int, Version] = field(default_factory=dict)


@dataclass
class KvMount:
    """A KV version 2 engine."""

    max_versions: int = 0
    cas_required: bool = False
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass
class PkiMount:
    """A PKI engine with its CA and roles."""

    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    roles: dict[str, Json] = field(default_factory=dict)

    @classmethod
    def generate(cls, name: str) -> PkiMount:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vault-test {name} CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def ca_pem(self) -> str:
        # Vault hands out PEMs without the final newline
        return self.ca_cert.public_bytes(serialization.Encoding.PEM).decode().strip()


@dataclass
class TotpMount:
    """A TOTP engine: keys by name (raw secret, digits, period, hash)."""

    keys: dict[str, Json] = field(default_factory=dict)

    @staticmethod
    def code(key: Json, at: float) -> str:
        """RFC 6238: HMAC over the time step, dynamic truncation."""
        counter = struct.pack(">Q", int(at // key["period"]))
        mac = hmac.new(key["secret"], counter, key["algorithm"]).digest()
        offset = mac[-1] & 0x0F
        value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
        return str(value % 10 ** key["digits"]).zfill(key["digits"])


Engine = KvMount | PkiMount | TotpMount


@dataclass
class VaultState:
    """Everything the server knows."""

    root_token: str
    unseal_key: str
    sealed: bool = False
    tokens: dict[str, Token] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    mounts: dict[str, Engine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tokens[self.root_token] = Token(self.root_token, ["root"], "auth/token/root")
        self.mounts.setdefault("secret", KvMount())
        self.mounts.setdefault("pki", PkiMount.generate("pki"))


# --- HTTP plumbing ----------------------------------------------------------------------------


def _json(body: Json, status: int = 200) -> web.Response:
    """A JSON reply with Vault's exact `Content-Type` (hvac parses error bodies only then)."""
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={"Content-Type": "application/json"},
    )


def _envelope(data: Json | None = None, auth: Json | None = None) -> Json:
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": auth,
    }


def _reply(data: Json | None = None, auth: Json | None = None) -> web.Response:
    return _json(_envelope(data, auth))


def _no_content() -> web.Response:
    return web.Response(status=204)


async def _body(request: web.Request) -> Json:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as err:
        raise VaultHTTPError(400, f"failed to parse JSON input: {err}") from None
    if not isinstance(parsed, dict):
        raise VaultHTTPError(400, "failed to parse JSON input: not an object")
    return parsed


Handler = Callable[[web.Request, str, str, Token | None], Awaitable[web.StreamResponse]]


class VaultServer:
    """Dispatches `/v1/...` requests to the engines."""

    def __init__(self, state: VaultState) -> None:
        self.state = state

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one route: authenticate, dispatch, and shape errors as Vault does."""
        try:
            return await self._dispatch(request)
        except VaultHTTPError as err:
            return _json({"errors": err.errors}, status=err.status)

    def _method(self, request: web.Request) -> str:
        if request.method == "GET" and request.query.get("list", "").lower() in ("true", "1"):
            return "LIST"
        return "POST" if request.method == "PUT" else request.method

    def _token(self, request: web.Request) -> Token:
        value = request.headers.get("X-Vault-Token", "")
        if not value:
            bearer = request.headers.get("Authorization", "")
            value = bearer.removeprefix("Bearer ").strip()
        token = self.state.tokens.get(value)
        if token is None or token.expired():
            if token is not None:
                del self.state.tokens[value]
            raise VaultHTTPError(403, "permission denied")
        return token

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"].strip("/")
        method = self._method(request)
        if path == "sys/health":
            return self._health(request)
        if self.state.sealed and path != "sys/unseal":
            raise VaultHTTPError(503, "Vault is sealed")
        if path == "sys/unseal" and method == "POST":
            return await self._unseal(request)
        if path == "auth/approle/login" and method == "POST":
            return await self._approle_login(request)
        token = self._token(request)
        if path.startswith("sys/"):
            self._require_root(token)
            return await self._sys(request, method, path[4:])
        if path.startswith("auth/token/"):
            return await self._token_api(method, path[len("auth/token/") :], token)
        if path.startswith("auth/approle/"):
            self._require_root(token)
            return await self._approle_admin(request, method, path[len("auth/approle/") :])
        mount, rest = self._mount_of(path)
        engine = self.state.mounts[mount]
        if isinstance(engine, KvMount):
            return await self._kv(request, method, engine, rest)
        if isinstance(engine, TotpMount):
            return await self._totp(request, method, engine, rest)
        return await self._pki(request, method, engine, rest)

    @staticmethod
    def _require_root(token: Token) -> None:
        if not token.root:
            raise VaultHTTPError(403, "permission denied")

    def _mount_of(self, path: str) -> tuple[str, str]:
        for mount in sorted(self.state.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount + "/"):
                return mount, path[len(mount) + 1 :]
        raise VaultHTTPError(404, f"no handler for route {path!r}. route entry not found.")

    # -- sys ------------------------------------------------------------------------------------

    def _health(self, request: web.Request) -> web.Response:
        body = {
            "initialized": True,
            "sealed": self.state.sealed,
            "standby": False,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()),
            "version": "1.15.0+vault-test",
            "cluster_name": "vault-test",
            "cluster_id": "00000000-0000-0000-0000-000000000000",
        }
        status = 503 if self.state.sealed else 200
        if request.method == "HEAD":
            return web.Response(status=status)
        return _json(body, status=status)

    async def _unseal(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body.get("reset"):
            return _json(self._seal_status())
        if body.get("key") != self.state.unseal_key:
            raise VaultHTTPError(400, "Error unsealing: invalid key")
        self.state.sealed = False
        return _json(self._seal_status())

    def _seal_status(self) -> Json:
        return {
            "type": "shamir",
            "initialized": True,
            "sealed": self.state.sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": "1.15.0+vault-test",
        }

    async def _sys(self, request: web.Request, method: str, path: str) -> web.StreamResponse:
        if path == "seal" and method == "POST":
            self.state.sealed = True
            return _no_content()
        if path == "seal-status" and method == "GET":
            return _json(self._seal_status())
        if path == "mounts" and method == "GET":
            listing = {
                f"{name}/": self._mount_info(engine) for name, engine in self.state.mounts.items()
            }
            return _json({**listing, **_envelope(listing)})
        if path.startswith("mounts/"):
            name = path[len("mounts/") :].strip("/")
            if method == "POST":
                return await self._enable(request, name)
            if method == "DELETE":
                self.state.mounts.pop(name, None)
                return _no_content()
        raise VaultHTTPError(405, "unsupported operation")

    @staticmethod
    def _mount_info(engine: Engine) -> Json:
        if isinstance(engine, KvMount):
            return {"type": "kv", "options": {"version": "2"}, "description": ""}
        if isinstance(engine, TotpMount):
            return {"type": "totp", "options": None, "description": ""}
        return {"type": "pki", "options": None, "description": ""}

    async def _enable(self, request: web.Request, name: str) -> web.Response:
        body = await _body(request)
        kind = body.get("type", "")
        if not name or name in self.state.mounts:
            raise VaultHTTPError(400, f"path is already in use at {name}/")
        if kind == "kv":
            version = str((body.get("options") or {}).get("version", "1"))
            if version != "2":
                raise VaultHTTPError(400, "this test server has KV version 2 only")
            self.state.mounts[name] = KvMount()
        elif kind == "pki":
            self.state.mounts[name] = PkiMount.generate(name)
        elif kind == "totp":
            self.state.mounts[name] = TotpMount()
        else:
            raise VaultHTTPError(400, f"plugin not found in the catalog: {kind or '(none)'}")
        return _no_content()

    # -- tokens and AppRole ------------------------------------------------------------------

    @staticmethod
    def _token_data(token: Token) -> Json:
        ttl = max(int(token.created + token.ttl - time.time()), 0) if token.ttl else 0
        expire = (
            dt.datetime.fromtimestamp(token.created + token.ttl, dt.UTC).isoformat()
            if token.ttl
            else None
        )
        return {
            "accessor": token.accessor,
            "creation_time": int(token.created),
            "creation_ttl": token.ttl,
            "display_name": "root" if token.root else "approle",
            "entity_id": "",
            "expire_time": expire,
            "explicit_max_ttl": 0,
            "id": token.id,
            "meta": token.meta or None,
            "num_uses": 0,
            "orphan": True,
            "path": token.path,
            "policies": token.policies,
            "renewable": bool(token.ttl),
            "ttl": ttl,
            "type": "service",
        }

    async def _token_api(self, method: str, path: str, token: Token) -> web.Response:
        if path == "lookup-self" and method == "GET":
            return _reply(self._token_data(token))
        if path == "revoke-self" and method == "POST":
            self.state.tokens.pop(token.id, None)
            return _no_content()
        raise VaultHTTPError(405, "unsupported operation")

    async def _approle_login(self, request: web.Request) -> web.Response:
        body = await _body(request)
        role_id = str(body.get("role_id", ""))
        secret_id = str(body.get("secret_id", ""))
        if not role_id:
            raise VaultHTTPError(400, "missing role_id")
        role = next((r for r in self.state.roles.values() if r.role_id == role_id), None)
        if role is None:
            raise VaultHTTPError(400, "invalid role or secret ID")
        if role.bind_secret_id and secret_id not in role.secret_ids:
            raise VaultHTTPError(400, "invalid role or secret ID")
        policies = ["default", *role.token_policies]
        token = Token(
            f"hvs.{secrets.token_urlsafe(24)}",
            policies,
            "auth/approle/login",
            ttl=role.token_ttl,
            meta={"role_name": role.name},
        )
        self.state.tokens[token.id] = token
        auth = {
            "client_token": token.id,
            "accessor": token.accessor,
            "policies": policies,
            "token_policies": policies,
            "metadata": {"role_name": role.name},
            "lease_duration": role.token_ttl,
            "renewable": True,
            "entity_id": "",
            "token_type": "service",
            "orphan": True,
            "mfa_requirement": None,
            "num_uses": 0,
        }
        return _reply(None, auth)

    async def _approle_admin(self, request: web.Request, method: str, path: str) -> web.Response:
        parts = path.split("/")
        if parts == ["role"] and method == "LIST":
            if not self.state.roles:
                raise VaultHTTPError(404)
            return _reply({"keys": sorted(self.state.roles)})
        if len(parts) < 2 or parts[0] != "role" or not parts[1]:
            raise VaultHTTPError(405, "unsupported operation")
        name, tail = parts[1], "/".join(parts[2:])
        if tail == "" and method == "POST":
            body = await _body(request)
            new = self.state.roles.get(name) or Role(name)
            new.token_ttl = _seconds(body.get("token_ttl"), new.token_ttl)
            new.token_policies = _str_list(body.get("token_policies")) or new.token_policies
            new.bind_secret_id = _bool(body.get("bind_secret_id"), new.bind_secret_id)
            self.state.roles[name] = new
            return _no_content()
        role = self.state.roles.get(name)
        if role is None:
            raise VaultHTTPError(404)
        if tail == "" and method == "GET":
            return _reply(
                {
                    "token_ttl": role.token_ttl,
                    "token_policies": role.token_policies,
                    "bind_secret_id": role.bind_secret_id,
                }
            )
        if tail == "" and method == "DELETE":
            del self.state.roles[name]
            return _no_content()
        if tail == "role-id" and method == "GET":
            return _reply({"role_id": role.role_id})
        if tail == "role-id" and method == "POST":
            body = await _body(request)
            role.role_id = str(body.get("role_id") or role.role_id)
            return _no_content()
        if tail == "secret-id" and method == "POST":
            secret_id, accessor = str(uuid.uuid4()), str(uuid.uuid4())
            role.secret_ids[secret_id] = accessor
            return _reply(
                {
                    "secret_id": secret_id,
                    "secret_id_accessor": accessor,
                    "secret_id_ttl": 0,
                    "secret_id_num_uses": 0,
                }
            )
        raise VaultHTTPError(405, "unsupported operation")

    # -- KV version 2 ----------------------------------------------------------------------------

    async def _kv(
        self, request: web.Request, method: str, mount: KvMount, rest: str
    ) -> web.StreamResponse:
        op, _, path = rest.partition("/")
        if op == "config":
            return await self._kv_config(request, method, mount)
        if op == "metadata" and method == "LIST":
            return self._kv_list(mount, path)
        path = path.strip("/")
        if not path:
            raise VaultHTTPError(404)
        if op == "data":
            if method == "GET":
                return self._kv_read(request, mount, path)
            if method == "POST":
                return await self._kv_write(request, mount, path)
            if method == "DELETE":
                return self._kv_soft_delete(mount, path, None)
        elif op in ("delete", "undelete", "destroy") and method == "POST":
            versions = [int(v) for v in (await _body(request)).get("versions") or []]
            if not versions:
                raise VaultHTTPError(400, "no version number provided")
            if op == "delete":
                return self._kv_soft_delete(mount, path, versions)
            return self._kv_versions(mount, path, versions, destroy=op == "destroy")
        elif op == "metadata":
            if method == "GET":
                return self._kv_metadata(mount, path)
            if method == "POST":
                return await self._kv_update_metadata(request, mount, path)
            if method == "DELETE":
                mount.entries.pop(path, None)
                return _no_content()
        raise VaultHTTPError(405, "unsupported operation")

    async def _kv_config(self, request: web.Request, method: str, mount: KvMount) -> web.Response:
        if method == "GET":
            return _reply(
                {
                    "max_versions": mount.max_versions,
                    "cas_required": mount.cas_required,
                    "delete_version_after": "0s",
                }
            )
        if method == "POST":
            body = await _body(request)
            mount.max_versions = int(body.get("max_versions", mount.max_versions))
            mount.cas_required = _bool(body.get("cas_required"), mount.cas_required)
            return _no_content()
        raise VaultHTTPError(405, "unsupported operation")

    def _kv_read(self, request: web.Request, mount: KvMount, path: str) -> web.Response:
        entry = mount.entries.get(path)
        if entry is None or entry.current == 0:
            raise VaultHTTPError(404)
        wanted = int(request.query.get("version") or 0) or entry.current
        version = entry.versions.get(wanted)
        if version is None:
            raise VaultHTTPError(404)
        gone = bool(version.deleted or version.destroyed)
        data = None if gone else version.data
        body = _envelope({"data": data, "metadata": version.metadata(wanted)})
        if gone:
            return _json(body, status=404)  # Vault's shape: 404 with metadata
        return _json(body)

    async def _kv_write(self, request: web.Request, mount: KvMount, path: str) -> web.Response:
        body = await _body(request)
        data = body.get("data")
        if not isinstance(data, dict):
            raise VaultHTTPError(400, "no data provided")
        options = body.get("options") or {}
        entry = mount.entries.get(path)
        cas = options.get("cas")
        required = mount.cas_required or (entry is not None and entry.cas_required)
        if cas is None and required:
            raise VaultHTTPError(400, "check-and-set parameter required for this call")
        current = entry.current if entry is not None else 0
        if cas is not None and int(cas) != current:
            raise VaultHTTPError(400, "check-and-set parameter did not match the current version")
        if entry is None:
            entry = mount.entries[path] = Entry()
        entry.current += 1
        entry.updated = _now()
        entry.versions[entry.current] = Version(data=dict(data), created=entry.updated)
        if entry.oldest == 0:
            entry.oldest = entry.current
        keep = entry.max_versions or mount.max_versions or DEFAULT_MAX_VERSIONS
        for number in sorted(entry.versions)[:-keep]:
            del entry.versions[number]
        entry.oldest = min(entry.versions)
        return _reply(entry.versions[entry.current].metadata(entry.current))

    def _kv_soft_delete(
        self, mount: KvMount, path: str, versions: list[int] | None
    ) -> web.Response:
        entry = mount.entries.get(path)
        if entry is None:
            return _no_content()
        for number in versions if versions is not None else [entry.current]:
            version = entry.versions.get(number)
            if version is not None and not version.deleted and not version.destroyed:
                version.deleted = _now()
        return _no_content()

    def _kv_versions(
        self, mount: KvMount, path: str, versions: list[int], *, destroy: bool
    ) -> web.Response:
        entry = mount.entries.get(path)
        if entry is None:
            return _no_content()
        for number in versions:
            version = entry.versions.get(number)
            if version is None:
                continue
            if destroy:
                version.destroyed, version.data = True, None
            elif not version.destroyed:
                version.deleted = ""
        return _no_content()

    def _kv_metadata(self, mount: KvMount, path: str) -> web.Response:
        entry = mount.entries.get(path)
        if entry is None:
            raise VaultHTTPError(404)
        return _reply(
            {
                "cas_required": entry.cas_required,
                "created_time": entry.created,
                "current_version": entry.current,
                "custom_metadata": None,
                "delete_version_after": "0s",
                "max_versions": entry.max_versions,
                "oldest_version": entry.oldest,
                "updated_time": entry.updated,
                "versions": {
                    str(n): {k: v for k, v in ver.metadata(n).items() if k != "version"}
                    for n, ver in sorted(entry.versions.items())
                },
            }
        )

    async def _kv_update_metadata(
        self, request: web.Request, mount: KvMount, path: str
    ) -> web.Response:
        body = await _body(request)
        entry = mount.entries.setdefault(path, Entry())
        entry.max_versions = int(body.get("max_versions", entry.max_versions))
        entry.cas_required = _bool(body.get("cas_required"), entry.cas_required)
        entry.updated = _now()
        return _no_content()

    def _kv_list(self, mount: KvMount, folder: str) -> web.Response:
        prefix = folder.strip("/")
        prefix = prefix + "/" if prefix else ""
        keys: set[str] = set()
        for path in mount.entries:
            if path.startswith(prefix):
                head, sep, _ = path[len(prefix) :].partition("/")
                keys.add(head + sep)
        if not keys:
            raise VaultHTTPError(404)
        return _reply({"keys": sorted(keys)})

    # -- TOTP ------------------------------------------------------------------------------------

    async def _totp(
        self, request: web.Request, method: str, mount: TotpMount, rest: str
    ) -> web.Response:
        op, _, name = rest.partition("/")
        if op == "keys" and not name and method == "LIST":
            if not mount.keys:
                raise VaultHTTPError(404)
            return _reply({"keys": sorted(mount.keys)})
        if not name:
            raise VaultHTTPError(405, "unsupported operation")
        if op == "keys" and method == "POST":
            mount.keys[name] = self._totp_key(await _body(request))
            return _no_content()
        if op == "keys" and method == "GET":
            key = mount.keys.get(name)
            if key is None:
                raise VaultHTTPError(404)
            return _reply(
                {
                    "account_name": "",
                    "algorithm": key["algorithm"].upper(),
                    "digits": key["digits"],
                    "issuer": "",
                    "period": key["period"],
                }
            )
        if op == "keys" and method == "DELETE":
            mount.keys.pop(name, None)
            return _no_content()
        if op == "code" and method == "GET":
            key = mount.keys.get(name)
            if key is None:
                raise VaultHTTPError(400, f"unknown key: {name}")
            return _reply({"code": TotpMount.code(key, time.time())})
        raise VaultHTTPError(405, "unsupported operation")

    @staticmethod
    def _totp_key(body: Json) -> Json:
        if _bool(body.get("generate"), False):
            raise VaultHTTPError(400, "this test server does not generate TOTP keys")
        text = str(body.get("key", "")).replace(" ", "").upper().rstrip("=")
        if not text:
            raise VaultHTTPError(400, "the key value is required")
        try:
            secret = base64.b32decode(text + "=" * (-len(text) % 8))
        except (binascii.Error, ValueError):
            raise VaultHTTPError(400, "invalid key value: illegal base32 data") from None
        digits = int(body.get("digits", 6))
        if digits not in (6, 8):
            raise VaultHTTPError(400, "the digits value can only be 6 or 8")
        algorithm = str(body.get("algorithm", "SHA1")).lower()
        if algorithm not in ("sha1", "sha256", "sha512"):
            raise VaultHTTPError(400, "unknown algorithm")
        period = _seconds(body.get("period"), 30)
        if period <= 0:
            raise VaultHTTPError(400, "the period value must be greater than zero")
        return {"secret": secret, "digits": digits, "algorithm": algorithm, "period": period}

    # -- PKI ---------------------------------------------------------------------------------------

    async def _pki(
        self, request: web.Request, method: str, mount: PkiMount, rest: str
    ) -> web.StreamResponse:
        if rest == "ca/pem" and method == "GET":
            return web.Response(text=mount.ca_pem, content_type="application/pem-certificate-chain")
        if rest == "cert/ca" and method == "GET":
            return _reply({"certificate": mount.ca_pem})
        op, _, name = rest.partition("/")
        if op == "roles" and name:
            if method == "POST":
                mount.roles[name] = await _body(request)
                return _no_content()
            if method == "GET":
                if name not in mount.roles:
                    raise VaultHTTPError(404)
                return _reply(mount.roles[name])
            if method == "DELETE":
                mount.roles.pop(name, None)
                return _no_content()
        if op == "roles" and method == "LIST":
            if not mount.roles:
                raise VaultHTTPError(404)
            return _reply({"keys": sorted(mount.roles)})
        if op == "issue" and name and method == "POST":
            return self._issue(mount, name, await _body(request))
        raise VaultHTTPError(405, "unsupported operation")

    @staticmethod
    def _name_allowed(role: Json, name: str) -> bool:
        if _bool(role.get("allow_any_name"), False):
            return True
        if name == "localhost" and _bool(role.get("allow_localhost"), True):
            return True
        for domain in _str_list(role.get("allowed_domains")):
            if name == domain and _bool(role.get("allow_bare_domains"), False):
                return True
            if name.endswith("." + domain) and _bool(role.get("allow_subdomains"), False):
                return True
            if "*" in domain and re.fullmatch(re.escape(domain).replace(r"\*", "[^.]+"), name):
                return True
        return False

    def _issue(self, mount: PkiMount, role_name: str, body: Json) -> web.Response:
        role = mount.roles.get(role_name)
        if role is None:
            raise VaultHTTPError(400, f"unknown role: {role_name}")
        common_name = str(body.get("common_name", ""))
        if not common_name:
            raise VaultHTTPError(400, "the common_name field is required")
        dns_names = [common_name, *_str_list(body.get("alt_names"))]
        for name in dns_names:
            if not self._name_allowed(role, name):
                raise VaultHTTPError(400, f"common name {name} not allowed by this role")
        ips = _str_list(body.get("ip_sans"))
        if ips and not _bool(role.get("allow_ip_sans"), True):
            raise VaultHTTPError(400, "IP Subject Alternative Names are not allowed in this role")
        try:
            addresses = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as err:
            raise VaultHTTPError(400, f"the value {err} is not a valid IP address") from None
        ttl = _seconds(body.get("ttl"), _seconds(role.get("ttl"), DEFAULT_PKI_TTL))
        max_ttl = _seconds(role.get("max_ttl"), 0)
        if max_ttl:
            ttl = min(ttl, max_ttl)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
        sans += [x509.IPAddress(a) for a in addresses]
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(mount.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(seconds=30))
            .not_valid_after(now + dt.timedelta(seconds=ttl))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(mount.ca_key, hashes.SHA256())
        )
        key_pem = (
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            .decode()
            .strip()
        )
        serial_hex = f"{serial:x}".zfill(2)
        serial_hex = ":".join(serial_hex[i : i + 2] for i in range(0, len(serial_hex), 2))
        return _reply(
            {
                "certificate": cert.public_bytes(serialization.Encoding.PEM).decode().strip(),
                "issuing_ca": mount.ca_pem,
                "ca_chain": [mount.ca_pem],
                "private_key": key_pem,
                "private_key_type": "ec",
                "serial_number": serial_hex,
                "expiration": int((now + dt.timedelta(seconds=ttl)).timestamp()),
            }
        )


# --- process ----------------------------------------------------------------------------------


def build_app(state: VaultState) -> web.Application:
    """The aiohttp application serving `state`."""
    server = VaultServer(state)
    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", server.handle)
    return app


async def _serve(args: argparse.Namespace) -> None:
    state = VaultState(root_token=args.token, unseal_key=args.unseal_key or args.token)
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    print(f"vault test server listening on http://{args.host}:{port}", flush=True)
    if args.ready_file is not None:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"addr": f"http://{args.host}:{port}", "port": port}))
        tmp.replace(args.ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> int:
    """Parse flags and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.vault")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200, help="0 picks a free port")
    parser.add_argument("--token", required=True, help="the root token")
    parser.add_argument("--unseal-key", default="", help="default: the root token")
    parser.add_argument("--ready-file", type=Path, help="JSON with the address, once serving")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0
