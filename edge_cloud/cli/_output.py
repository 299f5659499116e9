"""How `edge ctl` and `edge apply` show what the Controller answers, and how they fail.

Objects render as a Rich table of their main columns (key fields, state and a few fields
that matter per type; all scalar fields when we know no better), or as JSON or YAML with the
proto field names (durations as Go text, 64-bit numbers as numbers, so the output can be fed
back to `edge apply`). Streamed `Result` progress shows as a spinner with the latest message
on a terminal and as plain lines otherwise. Errors are one line on stderr and an exit code
scripts can rely on (`EXIT_CODES`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, Protocol

import grpc
import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from edge_cloud.cli._descriptors import enum_short_names
from edge_cloud.objects import codec
from edge_cloud.objects.durations import format_duration, is_duration_field
from edge_cloud.objects.registry import descriptor_of

__all__ = [
    "EXIT_CODES",
    "EXIT_CODES_HELP",
    "FORMATS",
    "Progress",
    "columns",
    "exit_code",
    "format_objects",
    "progress",
    "render",
    "to_plain",
]

FORMATS: Final = ("table", "json", "yaml")

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_CODES: Final[dict[grpc.StatusCode, int]] = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.ALREADY_EXISTS: 4,
    grpc.StatusCode.FAILED_PRECONDITION: 5,
    grpc.StatusCode.INVALID_ARGUMENT: 6,
    grpc.StatusCode.UNAVAILABLE: 7,
    grpc.StatusCode.DEADLINE_EXCEEDED: 8,
    grpc.StatusCode.UNIMPLEMENTED: 9,
    grpc.StatusCode.PERMISSION_DENIED: 10,
    grpc.StatusCode.UNAUTHENTICATED: 10,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 11,
    grpc.StatusCode.ABORTED: 12,
}
"""Exit code per gRPC status; any other failure exits 1, a bad command line 2."""

EXIT_CODES_HELP: Final = """\
exit codes:
  0   ok
  1   server or other error (INTERNAL, UNKNOWN, CANCELLED, ...)
  2   usage error: bad command line, unknown field or bad value (nothing was sent)
  3   NOT_FOUND             4   ALREADY_EXISTS        5   FAILED_PRECONDITION
  6   INVALID_ARGUMENT (the server refused the values)
  7   UNAVAILABLE (Controller not reachable)          8   DEADLINE_EXCEEDED (--timeout)
  9   UNIMPLEMENTED         10  PERMISSION_DENIED / UNAUTHENTICATED
  11  RESOURCE_EXHAUSTED    12  ABORTED
  130 interrupted
errors print one line on stderr: `edge: <STATUS_CODE>: <message>`"""


def exit_code(code: grpc.StatusCode) -> int:
    """The process exit code for a failed call's status (`EXIT_CODES`, else 1)."""
    return EXIT_CODES.get(code, EXIT_ERROR)


# --- plain data ----------------------------------------------------------------------------

_INT64: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def to_plain(msg: Message) -> dict[str, Any]:
    """A message as plain data for JSON and YAML, readable and fit for `edge apply`.

    Proto field names, enums by name, durations as Go text ("15m0s"), 64-bit integers as
    numbers (proto JSON writes them as strings), the `fields` mask dropped.

    Args:
        msg: Any message.

    Returns:
        The dict.
    """
    # durations are formatted here rather than by `codec.to_dict(durations_as_text=True)`,
    # which formats a field twice when its JSON name equals its proto name (`interval`)
    data = codec.to_dict(msg)
    desc = descriptor_of(msg)
    if desc.fields and desc.fields[0].name == "fields":
        data.pop("fields", None)
    _humanize(desc, data)
    return data


def _humanize(desc: Descriptor, data: Any) -> None:
    """Durations as Go text and 64-bit integers as numbers, in place."""
    if not isinstance(data, dict):
        return
    for fd in desc.fields:
        if fd.name not in data:
            continue
        value = data[fd.name]
        mt = fd.message_type
        if mt is not None and mt.GetOptions().map_entry:
            vfd = mt.fields_by_name["value"]
            if vfd.message_type is not None and isinstance(value, dict):
                for v in value.values():
                    _humanize(vfd.message_type, v)
            elif isinstance(value, dict):
                data[fd.name] = {k: _scalar_out(vfd, v) for k, v in value.items()}
        elif mt is not None:
            for item in value if isinstance(value, list) else [value]:
                _humanize(mt, item)
        elif isinstance(value, list):
            data[fd.name] = [_scalar_out(fd, v) for v in value]
        else:
            data[fd.name] = _scalar_out(fd, value)


def _scalar_out(fd: FieldDescriptor, value: Any) -> Any:
    if is_duration_field(fd) and isinstance(value, int | str):
        return format_duration(int(value))
    if fd.type in _INT64 and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def format_objects(messages: Sequence[Message], fmt: str, *, single: bool) -> str:
    """JSON or YAML text of replies.

    Args:
        messages: The replies.
        fmt: `json` or `yaml`.
        single: The RPC is unary: print the one object rather than a list.

    Returns:
        The text, newline-terminated.
    """
    plain: Any = [to_plain(m) for m in messages]
    if single and len(messages) == 1:
        plain = plain[0]
    if fmt == "json":
        return json.dumps(plain, indent=2, ensure_ascii=False) + "\n"
    return str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))


# --- tables --------------------------------------------------------------------------------

_MAIN: Final[dict[str, tuple[str, ...]]] = {
    "Flavor": ("ram", "vcpus", "disk", "opt_res_map"),
    "OperatorCode": ("code", "organization"),
    "Cloudlet": (
        "platform_type",
        "location.latitude",
        "location.longitude",
        "zone",
        "num_dynamic_ips",
        "state",
    ),
    "CloudletInfo": ("state", "os_max_ram", "os_max_vcores", "os_max_vol_gb", "errors"),
    "Zone": ("description", "location.latitude", "location.longitude"),
    "ZonePool": ("zones",),
    "App": ("image_type", "deployment", "image_path", "access_ports", "default_flavor.name"),
    "ClusterInst": ("cloudlet_key.name", "flavor.name", "num_nodes", "state", "errors"),
    "AppInst": (
        "app_key.name",
        "app_key.version",
        "cloudlet_key.name",
        "cluster_key.name",
        "state",
        "uri",
        "errors",
    ),
    "PlatformFeatures": ("platform_type", "node_type", "is_fake", "supports_trust_policy"),
    "Result": ("message", "code"),
    "Controller": ("key.addr", "build_head", "hostname"),
}
_MAX_FALLBACK: Final = 10
_WIDE: Final = 1000


def _scalar_paths(desc: Descriptor, prefix: str = "", depth: int = 2) -> Iterator[str]:
    for i, fd in enumerate(desc.fields):
        if i == 0 and fd.name == "fields":
            continue
        mt = fd.message_type
        if mt is None:
            yield prefix + fd.name
        elif not fd.is_repeated and depth > 1:
            yield from _scalar_paths(mt, f"{prefix}{fd.name}.", depth - 1)


def _key_paths(desc: Descriptor) -> list[str]:
    for name in ("key", "client_key"):
        fd = desc.fields_by_name.get(name)
        if fd is not None and fd.message_type is not None:
            return list(_scalar_paths(fd.message_type, f"{name}.", 3))
    return []


def columns(desc: Descriptor) -> list[str]:
    """The dotted field paths a table shows for a message type.

    Key fields first, then the type's main fields (or `state`), else its scalar fields.

    Args:
        desc: The message descriptor.

    Returns:
        Dotted name paths.
    """
    out = _key_paths(desc)
    main = _MAIN.get(desc.name)
    if main is None:
        extra = [p for p in _scalar_paths(desc, depth=1) if p not in out]
        main = tuple(extra[:_MAX_FALLBACK]) if extra else ()
        if not main and not out:
            main = tuple(_scalar_paths(desc, depth=3))[:_MAX_FALLBACK]
    return out + [p for p in main if p not in out]


def _value(msg: Message, path: str) -> str:
    target: Any = msg
    fd: FieldDescriptor | None = None
    for part in path.split("."):
        desc = descriptor_of(target)
        fd = desc.fields_by_name.get(part)
        if fd is None:
            return ""
        target = getattr(target, part)
    if fd is None:
        return ""
    return _text(fd, target)


def _text(fd: FieldDescriptor, value: Any) -> str:
    mt = fd.message_type
    if mt is not None and mt.GetOptions().map_entry:
        return ",".join(f"{k}={_short(v)}" for k, v in sorted(dict(value).items()))
    if fd.is_repeated:
        return ",".join(_one(fd, v) for v in value)
    return _one(fd, value)


def _short(value: Any) -> str:
    if isinstance(value, Message):
        return json.dumps(to_plain(value), separators=(",", ":"))
    return str(value)


def _one(fd: FieldDescriptor, value: Any) -> str:
    if isinstance(value, Message):
        plain = to_plain(value)
        return json.dumps(plain, separators=(",", ":")) if plain else ""
    if fd.enum_type is not None:
        names = enum_short_names(fd.enum_type)
        numbers = [v.number for v in fd.enum_type.values]
        return names[numbers.index(value)] if value in numbers else str(value)
    if is_duration_field(fd):
        return format_duration(int(value))
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, float):
        return f"{value:g}" if value else ""
    return str(value) if value else ""


def header(path: str) -> str:
    """A short column title for a dotted path.

    `key.name` -> `name`, `cloudlet_key.name` -> `cloudlet`, `cloudlet_key.organization`
    -> `cloudlet-org`, `location.latitude` -> `latitude`.
    """
    parts = path.split(".")
    if len(parts) == 1:
        return path
    owner, leaf = parts[-2], parts[-1]
    if owner.endswith("_key") or (owner in ("flavor", "default_flavor") and leaf == "name"):
        word = owner.removesuffix("_key")
        if leaf == "name":
            return word
        short = {"organization": "org", "version": "vers", "federated_organization": "fedorg"}
        return f"{word}-{short.get(leaf, leaf)}"
    return leaf


def table(messages: Sequence[Message], desc: Descriptor) -> Table:
    """A Rich table of objects, one row each, with `columns(desc)`; empty columns dropped."""
    cols = columns(desc)
    rows = [[_value(msg, c) for c in cols] for msg in messages]
    keep = [i for i in range(len(cols)) if not rows or any(row[i] for row in rows)]
    out = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    titles = [header(cols[i]) for i in keep]
    for i, title in zip(keep, titles, strict=True):
        out.add_column(title if titles.count(title) == 1 else cols[i], overflow="fold")
    for row in rows:
        out.add_row(*(row[i] for i in keep))
    return out


def vertical(msg: Message) -> Table:
    """A Rich two-column table of one object's set fields, `path  value`."""
    out = Table(show_header=False, box=None, pad_edge=False)
    out.add_column("field", style="bold")
    out.add_column("value")
    for path, value in _flatten(to_plain(msg)):
        out.add_row(path, value)
    return out


def _flatten(data: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(data, dict) and data:
        for k, v in data.items():
            yield from _flatten(v, f"{prefix}{k}.")
    elif isinstance(data, list) and data and all(not isinstance(v, dict | list) for v in data):
        yield prefix.rstrip("."), ",".join(str(v) for v in data)
    elif isinstance(data, list) and data:
        for i, v in enumerate(data):
            yield from _flatten(v, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), json.dumps(data) if isinstance(data, dict | list) else str(data)


def render(
    console: Console,
    messages: Sequence[Message],
    fmt: str,
    desc: Descriptor,
    *,
    single: bool,
) -> None:
    """Print replies in the chosen format.

    Args:
        console: Where to print (stdout).
        messages: The replies.
        fmt: `table`, `json` or `yaml`.
        desc: The reply message type (for an empty table's header).
        single: The RPC is unary.
    """
    if fmt != "table":
        console.file.write(format_objects(messages, fmt, single=single))
        console.file.flush()
        return
    if desc.full_name == "edgeproto.Result":
        for msg in messages:
            text = getattr(msg, "message", "")
            if text:
                console.print(text, markup=False, highlight=False)
        return
    # a pipe or file gets whole rows; a terminal gets tables folded to its width
    if not console.is_terminal:
        console = Console(file=console.file, width=_WIDE, highlight=False, color_system=None)
    if single and len(messages) == 1:
        console.print(vertical(messages[0]))
        return
    console.print(table(messages, desc))


# --- progress ------------------------------------------------------------------------------


class Progress(Protocol):
    """Receives progress lines of a streamed operation."""

    def __call__(self, message: str) -> None:
        """Show one progress message."""


@contextmanager
def progress(
    console: Console, title: str, *, live: bool | None = None, indent: str = ""
) -> Iterator[Progress]:
    """Show a streamed operation's progress: spinner + latest message, or plain lines.

    Args:
        console: Where to draw (stderr for a spinner, or stdout for plain lines).
        title: What runs, shown until the first message arrives.
        live: Force the spinner on or off; default: on when the console is a terminal.
        indent: Put before each plain line (`edge apply` indents progress under objects).

    Yields:
        A function to call with each progress message.
    """
    if live is None:
        live = console.is_terminal
    if not live:

        def plain(message: str) -> None:
            console.print(indent + message, markup=False, highlight=False, soft_wrap=True)

        yield plain
        return
    with console.status(title) as status:

        def spin(message: str) -> None:
            console.print(f"  {message}", markup=False, highlight=False)
            status.update(f"{title}: {message}")

        yield spin


def print_lines(console: Console, lines: Iterable[str]) -> None:
    """Print plain text lines without Rich markup."""
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
