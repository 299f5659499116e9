"""Daemon configuration: one frozen dataclass per daemon, filled from flags and environment.

A field declared with `option` becomes a flag (`notify_addrs` → `--notify-addrs`), an
environment variable (`EDGE_NOTIFY_ADDRS`) and, with `go=`, the original Go spelling
(`-notifyAddrs`) so operators' scripts keep working. `load` is pure — it takes argv and an
environment mapping and returns the dataclass — so tests never touch `os.environ`.

Precedence is flag > environment > default. Values are parsed from the field's annotation:
`str`, `int`, `float`, `bool` (`true/false/1/0/yes/no/on/off`), `Path`, `Literal[...]`
(choices), `tuple[X, ...]` (comma-separated) and `X | None` (an empty value means None).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from edge_cloud.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = [
    "CommonConfig",
    "ConfigError",
    "HelpRequested",
    "TlsFiles",
    "describe",
    "help_text",
    "host_port",
    "load",
    "option",
    "split_host_port",
]

T = TypeVar("T")
AnyConfig = TypeVar("AnyConfig")

ENV_PREFIX: Final = "EDGE_"
_META_KEY: Final = "edge_cloud.config"
_REDACTED: Final = "<redacted>"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class _Option:
    """What `option` records in the field metadata."""

    help: str
    go: str | None
    env: str | None
    short: str | None
    secret: bool
    parse: Callable[[str], Any] | None


def option(
    default: T,
    help: str,
    *,
    go: str | None = None,
    env: str | None = None,
    short: str | None = None,
    secret: bool = False,
    parse: Callable[[str], Any] | None = None,
) -> T:
    """Declare a configuration field with its flag, variable and help text.

    Args:
        default: The value with no flag and no variable: the local loopback topology, so
            every daemon runs with no flags at all. Must be immutable (use tuples).
        help: One line for `--help`; the variable name and default are appended.
        go: The original Go flag name (`"notifyAddrs"`), accepted as `-notifyAddrs`.
        env: The variable name when it is not `EDGE_<FIELD>`, for standard names such as
            `VAULT_ADDR` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
        short: A one-letter alias such as `"-d"`.
        secret: Never show the value in `describe` (and so in logs) or its default in help.
        parse: Converts one string (one element for tuples) instead of the annotation's
            type, for values that need validating, e.g. `host_port`.

    Returns:
        A dataclass field; typed as the default so the class body type-checks.
    """
    meta = _Option(help=help, go=go, env=env, short=short, secret=secret, parse=parse)
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


def split_host_port(addr: str) -> tuple[str, int]:
    """Split a listen or dial address into host and port, validating both.

    Accepts `host:port`, `[v6addr]:port` and `:port` (all interfaces). Port 0 is allowed:
    the system picks one and the daemon reports it in its ready file.

    Args:
        addr: The address as written by the operator.

    Returns:
        The host (brackets removed, may be empty) and the port number.

    Raises:
        ValueError: With a short reason, when the address cannot be used.
    """
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ValueError("expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError with its own reason
    elif ":" in host:
        raise ValueError("write IPv6 addresses in brackets: [::1]:port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 0 to 65535")
    return host, int(port_text)


def host_port(value: str) -> str:
    """Validate a `host:port` option value; for `option(..., parse=host_port)`.

    Args:
        value: The address as written by the operator.

    Returns:
        The value unchanged, once it is known to be usable.
    """
    split_host_port(value)
    return value


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for TLS; with `ca` the peer must present a certificate signed by it (mTLS).

    Attributes:
        cert: This side's certificate chain.
        key: Its private key.
        ca: The CA that signs peers' certificates, or None for server-only TLS.
    """

    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommonConfig:
    """Settings every daemon shares; a daemon's config subclasses it and adds its own.

    A subclass redeclares `api_addr` (and `metrics_addr` if it wants a fixed port) with its
    own loopback default; everything else comes from here.
    """

    api_addr: str = option("127.0.0.1:0", "gRPC listen address", parse=host_port)
    metrics_addr: str | None = option(
        "127.0.0.1:0",
        "HTTP listen address for /metrics, /healthz, /readyz; empty disables",
        parse=host_port,
    )
    log_level: Literal["debug", "info", "warning", "error"] = option("info", "log level")
    log_format: Literal["auto", "json", "text"] = option(
        "auto", "log line format; auto is text on a terminal, JSON otherwise"
    )
    debug: tuple[str, ...] = option(
        (), "logger families at DEBUG, e.g. api,notify,etcd,platform (or all)", short="-d"
    )
    tls_cert: Path | None = option(None, "TLS certificate (PEM); TLS is off without it")
    tls_key: Path | None = option(None, "TLS private key (PEM)")
    tls_ca: Path | None = option(None, "CA for client certificates (PEM); turns on mTLS")
    otel_endpoint: str | None = option(
        None, "OTLP endpoint for traces (needs the otel extra)", env="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    shutdown_grace: float = option(10.0, "seconds in-flight RPCs get to finish on SIGTERM")
    ready_file: Path | None = option(None, "write the bound ports here as JSON once serving")
    event_loop: Literal["uvloop", "asyncio"] = option("uvloop", "asyncio event loop")

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files, or None for plaintext.

        Raises:
            ConfigError: When the three TLS options do not go together.
        """
        if self.tls_cert is None and self.tls_key is None:
            if self.tls_ca is not None:
                raise ConfigError("--tls-ca needs --tls-cert and --tls-key")
            return None
        if self.tls_cert is None or self.tls_key is None:
            raise ConfigError("--tls-cert and --tls-key go together")
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca)


class HelpRequested(Exception):
    """`--help` was given; `text` is what to print, since `load` prints nothing itself.

    Attributes:
        text: The full help, ending with a newline.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting, so `load` stays pure."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(message)

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        raise HelpRequested(self.format_help())


@dataclass(frozen=True, slots=True)
class _Field:
    """One option as `load` sees it: names, converter and help, derived once per field."""

    name: str
    flag: str
    aliases: tuple[str, ...]
    env: str
    convert: Callable[[str], Any]
    is_bool: bool
    metavar: str
    help: str
    secret: bool


def _element_converter(
    tp: Any, parse: Callable[[str], Any] | None
) -> tuple[Callable[[str], Any], str]:
    """Converter and metavar for a non-optional, non-tuple annotation."""
    if parse is not None:
        return parse, "HOST:PORT" if parse is host_port else parse.__name__.upper()
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)

        def choose(raw: str) -> Any:
            if raw not in choices:
                raise ValueError(f"choose from {', '.join(map(str, choices))}")
            return raw

        return choose, "{" + ",".join(map(str, choices)) + "}"
    if tp is bool:
        return _parse_bool, "BOOL"
    if tp is int:
        return _number(int, "a whole number"), "INT"
    if tp is float:
        return _number(float, "a number"), "NUMBER"
    if tp is str:
        return str, "TEXT"
    if tp is Path:
        return Path, "PATH"
    raise TypeError(f"config options cannot have type {tp!r}")


def _number(kind: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """Wrap int/float so the error says what was expected instead of Python's wording."""

    def convert(raw: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"expected {expected}") from None

    return convert


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false")


def _converter(tp: Any, parse: Callable[[str], Any] | None) -> tuple[Callable[[str], Any], str]:
    """Converter and metavar for any supported annotation, including tuples and optionals."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        convert, metavar = _converter(inner, parse)
        return (lambda raw: None if raw == "" else convert(raw)), metavar
    if typing.get_origin(tp) is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"config tuples must be tuple[X, ...], not {tp!r}")
        convert_one, metavar = _element_converter(args[0], parse)

        def convert_all(raw: str) -> tuple[Any, ...]:
            return tuple(convert_one(part.strip()) for part in raw.split(",") if part.strip())

        return convert_all, f"{metavar}[,{metavar}...]"
    return _element_converter(tp, parse)


def _show_default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value) or '""'


def _fields(cls: type) -> list[_Field]:
    """Describe every `option` field of a config class, in declaration order."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if not isinstance(meta, _Option):
            raise TypeError(f"{cls.__name__}.{f.name} must be declared with option()")
        convert, metavar = _converter(hints[f.name], meta.parse)
        is_bool = hints[f.name] is bool
        env = meta.env or ENV_PREFIX + f.name.upper()
        hidden = meta.secret and f.default not in (None, "", ())
        default = "hidden" if hidden else _show_default(f.default)
        aliases = tuple(a for a in (meta.short, f"-{meta.go}" if meta.go else None) if a)
        out.append(
            _Field(
                name=f.name,
                flag="--" + f.name.replace("_", "-"),
                aliases=aliases,
                env=env,
                convert=convert,
                is_bool=is_bool,
                metavar=metavar,
                # argparse %-formats help strings
                help=f"{meta.help} [env {env}; default {default}]".replace("%", "%%"),
                secret=meta.secret,
            )
        )
    return out


def _parser(cls: type, fields: Sequence[_Field], prog: str | None) -> _Parser:
    parser = _Parser(
        prog=prog or cls.__name__,  # never sys.argv[0]: load() reads only its arguments
        description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None,
        allow_abbrev=False,  # a prefix that works today breaks when an option is added
        epilog="Flags win over environment variables, which win over defaults.",
    )
    for f in fields:
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if f.is_bool else {}
        parser.add_argument(
            f.flag,
            *f.aliases,
            dest=f.name,
            default=argparse.SUPPRESS,  # absent flags stay absent so the environment applies
            metavar=f.metavar,
            help=f.help,
            **extra,
        )
    return parser


def help_text(cls: type, prog: str | None = None) -> str:
    """The `--help` text of a config class, for documentation and tests.

    Args:
        cls: The config dataclass.
        prog: The program name shown in the usage line.

    Returns:
        The text argparse would print.
    """
    return _parser(cls, _fields(cls), prog).format_help()


def load(
    cls: type[AnyConfig],
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    prog: str | None = None,
) -> AnyConfig:
    """Build a config from command-line flags, then environment variables, then defaults.

    Pure: reads only its arguments and prints nothing, so tests pass a dict for the
    environment and a daemon decides what to print.

    Args:
        cls: A dataclass whose fields are all declared with `option`.
        argv: The arguments after the program name.
        environ: The environment, usually `os.environ`.
        prog: Program name for usage and help.

    Returns:
        The frozen config.

    Raises:
        ConfigError: With one line naming the flag or variable, for anything unusable.
        HelpRequested: For `-h`/`--help`; its `text` is the help to print.
    """
    fields = _fields(cls)
    given = vars(_parser(cls, fields, prog).parse_args(list(argv)))
    values: dict[str, Any] = {}
    for f in fields:
        if f.name in given:
            raw, source = given[f.name], f.flag
        elif f.env in environ:
            raw, source = environ[f.env], f.env
        else:
            continue
        try:
            values[f.name] = f.convert(raw)
        except ValueError as err:
            shown = _REDACTED if f.secret else repr(raw)
            raise ConfigError(f"bad value {shown} for {source}: {err}") from None
    config = cls(**values)
    if isinstance(config, CommonConfig):
        _ = config.tls  # raises on an inconsistent combination
    return config


def describe(config: object) -> dict[str, object]:
    """The effective configuration as JSON-ready data with secrets redacted, for one log line.

    Args:
        config: A config dataclass instance.

    Returns:
        Field name to value; paths as strings, tuples as lists, secrets as `<redacted>`.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError("describe() needs a config dataclass instance")
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        meta = f.metadata.get(_META_KEY)
        if isinstance(meta, _Option) and meta.secret and value not in (None, "", ()):
            out[f.name] = _REDACTED
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, tuple):
            out[f.name] = [str(v) if isinstance(v, Path) else v for v in value]
        else:
            out[f.name] = value
    return out
