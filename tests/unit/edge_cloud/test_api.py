from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_cloud import api, errors
from edge_cloud.api import GeneratedCodeMissing, ensure_generated, proto_source_digest
from edge_cloud.config import TlsFiles
from edge_cloud.server import bind, new_server

SERVICE = "edge.test.Api"

# --- generated code check ------------------------------------------------------------------


def write_protos(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


PROTOS = {
    "edgeproto/flavor.proto": 'syntax = "proto3";\npackage edgeproto;\n',
    "distributed_match_engine/loc.proto": 'syntax = "proto3";\n',
}


def test_digest_is_stable_and_sees_every_change(tmp_path: Path) -> None:
    base = proto_source_digest(write_protos(tmp_path / "a", PROTOS))
    assert base == proto_source_digest(write_protos(tmp_path / "b", PROTOS))
    assert len(base) == 64
    edited = {**PROTOS, "edgeproto/flavor.proto": PROTOS["edgeproto/flavor.proto"] + "// x\n"}
    renamed = {"edgeproto/flavor2.proto": PROTOS["edgeproto/flavor.proto"], **PROTOS}
    del renamed["edgeproto/flavor.proto"]
    added = {**PROTOS, "edgeproto/app.proto": ""}
    not_proto = write_protos(tmp_path / "f", PROTOS)
    (not_proto / "README.md").write_text("ignored")
    digests = [
        proto_source_digest(write_protos(tmp_path / name, files))
        for name, files in (("c", edited), ("d", renamed), ("e", added))
    ]
    assert len({base, *digests}) == 4
    assert proto_source_digest(not_proto) == base


def make_gen(root: Path, digest: str | None) -> Path:
    root.mkdir()
    body = '"""Written by scripts/gen_protos.py; do not edit."""\n\n'
    if digest is not None:
        body += f"SOURCE_DIGEST = {digest!r}\nBUILD_STAMP = 'x'\n"
    (root / "_build_info.py").write_text(body)
    return root


def test_fresh_tree_passes(tmp_path: Path) -> None:
    protos = write_protos(tmp_path / "proto", PROTOS)
    gen = make_gen(tmp_path / "gen", proto_source_digest(protos))
    ensure_generated(gen, protos)


@pytest.mark.parametrize(
    ("digest", "reason"),
    [("0" * 64, "changed since"), (None, "records no SOURCE_DIGEST")],
)
def test_stale_tree_fails(tmp_path: Path, digest: str | None, reason: str) -> None:
    protos = write_protos(tmp_path / "proto", PROTOS)
    gen = make_gen(tmp_path / "gen", digest)
    with pytest.raises(GeneratedCodeMissing, match=reason) as caught:
        ensure_generated(gen, protos)
    assert str(caught.value).startswith(
        "generated protobuf code is missing or stale: run `make proto`"
    )


def test_missing_tree_fails_as_an_import_error(tmp_path: Path) -> None:
    protos = write_protos(tmp_path / "proto", PROTOS)
    with pytest.raises(ImportError, match=r"missing or stale: run `make proto`"):
        ensure_generated(tmp_path / "gen", protos)


def test_without_sources_only_presence_is_checked(tmp_path: Path) -> None:
    gen = make_gen(tmp_path / "gen", "anything")
    ensure_generated(gen, tmp_path / "no-proto-here")


# --- channels and client errors ------------------------------------------------------------


def method(channel: grpc.aio.Channel, name: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/{SERVICE}/{name}")


class Servicer:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    async def missing(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        raise errors.NotFound("Flavor key {name: x1} not found")

    async def slow(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await self.release.wait()
        return request


async def start_server(tls: TlsFiles | None = None) -> tuple[grpc.aio.Server, int]:
    servicer = Servicer()
    server = new_server("api-test")
    make = grpc.unary_unary_rpc_method_handler
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": make(servicer.echo),
        "Missing": make(servicer.missing),
        "Slow": make(servicer.slow),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = bind(server, "127.0.0.1:0", tls)
    await server.start()
    return server, port


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server, bound = await start_server()
    yield bound
    await server.stop(None)


async def test_call_errors_gives_back_our_types(port: int) -> None:
    async with api.channel(f"127.0.0.1:{port}") as channel:
        call = method(channel, "Missing")
        message = r"Flavor key \{name: x1\} not found"
        with pytest.raises(errors.NotFound, match=message) as caught, api.call_errors():
            await call(b"")
        assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)
        with pytest.raises(errors.NotFound):
            async with api.call_errors():
                await call(b"")
        with api.call_errors():  # success and other exceptions pass untouched
            assert await method(channel, "Echo")(b"hi") == b"hi"
        with pytest.raises(KeyError), api.call_errors():
            raise KeyError("not an rpc error")


async def test_unary_calls_get_a_default_deadline(port: int) -> None:
    async with api.channel(f"127.0.0.1:{port}", timeout=0.2) as channel:
        with pytest.raises(errors.DeadlineExceeded), api.call_errors():
            await method(channel, "Slow")(b"")
        # a deadline given by the caller wins over the default
        with pytest.raises(errors.DeadlineExceeded), api.call_errors():
            await method(channel, "Slow")(b"", timeout=0.05)


# --- TLS -----------------------------------------------------------------------------------


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def write_pki(root: Path) -> tuple[TlsFiles, TlsFiles]:
    """A CA, a server and a client certificate: (server TLS files, client TLS files)."""
    root.mkdir()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test ca", ca_key, None, None, ca=True)
    files = {}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(who, key, ca, ca_key, ca=False)
        (root / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{who}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        files[who] = TlsFiles(root / f"{who}.pem", root / f"{who}.key", root / "ca.pem")
    (root / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files["server"], files["client"]


async def test_mutual_tls(tmp_path: Path) -> None:
    server_tls, client_tls = write_pki(tmp_path / "pki")
    server, port = await start_server(server_tls)
    try:
        async with api.channel(f"localhost:{port}", tls=client_tls) as channel:
            assert await method(channel, "Echo")(b"secure", timeout=5) == b"secure"
        # a plaintext client cannot talk to it
        async with api.channel(f"127.0.0.1:{port}", timeout=2) as plain:
            with pytest.raises(errors.Unavailable), api.call_errors():
                await method(plain, "Echo")(b"x")
    finally:
        await server.stop(None)


async def test_unreadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    server = new_server("api-test")
    missing = TlsFiles(tmp_path / "no.pem", tmp_path / "no.key")
    with pytest.raises(errors.ConfigError, match="cannot read --tls-key"):
        bind(server, "127.0.0.1:0", missing)
