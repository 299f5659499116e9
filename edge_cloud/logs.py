"""Structured logging on stdlib `logging`: JSON lines for machines, text for people.

Code logs with `logging.getLogger(__name__)` and lazy `%s` arguments; only `run_daemon`
calls `setup`. Every line carries `ts`, `level`, `logger`, `msg` and `service`, plus whatever
is bound with `context` (`request_id`, `method`, `key`, `trace_id`, ...) and any `extra=`
fields, so one request can be followed across log lines without passing a logger around::

    with logs.context(key=str(flavor_key)):
        log.info("creating flavor")

Lines go to stdout: stderr is kept for the one-line reason a daemon refuses to start.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Final, Literal, TextIO

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "bound",
    "context",
    "debug_families",
    "set_debug_families",
    "setup",
]

_context: contextvars.ContextVar[Mapping[str, object] | None] = contextvars.ContextVar(
    "edge_cloud.logs.context", default=None
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# `-d` names a family; a family turns on DEBUG for loggers having one of these name parts.
_FAMILY_PARTS: Final[Mapping[str, frozenset[str]]] = {
    "etcd": frozenset({"etcd", "store"}),
    "platform": frozenset({"platform", "platforms"}),
}


@contextlib.contextmanager
def context(**fields: object) -> Iterator[None]:
    """Add fields to every log line written inside the block, in this task only.

    Nested blocks add to (and may override) the outer fields; leaving a block restores
    them. Context variables follow asyncio tasks, so concurrent requests do not mix.

    Args:
        **fields: Names and values to add, e.g. `key=...`, `request_id=...`.

    Yields:
        Nothing; the fields apply until the block ends.
    """
    token = _context.set({**bound(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bound() -> Mapping[str, object]:
    """The fields bound by the enclosing `context` blocks; empty outside any."""
    return _context.get() or {}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; unknown values become strings."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record with its context, extras and exception as one JSON line."""
        entry: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
        }
        entry.update(bound())
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """A readable line for a terminal: time, level, logger, message, then `key=value` pairs."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as text; an exception follows on the next lines."""
        fields = {**bound(), **_extras(record)}
        pairs = "".join(f" {k}={v}" for k, v in fields.items())
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {record.name}: "
            f"{record.getMessage()}{pairs}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _DebugFamilies(logging.Filter):
    """Let DEBUG records through only for loggers of the families named with `-d`."""

    def __init__(self, level: int, families: Iterable[str]) -> None:
        super().__init__()
        self.level = level
        self.all = "all" in families
        self.parts: frozenset[str] = frozenset().union(
            *(_FAMILY_PARTS.get(f, frozenset({f})) for f in families)
        )

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep records at the configured level, and lower ones of a chosen family."""
        if record.levelno >= self.level or self.all:
            return True
        return not self.parts.isdisjoint(record.name.split("."))


def setup(
    service: str,
    level: str = "info",
    fmt: Literal["auto", "json", "text"] = "auto",
    debug_families: Iterable[str] = (),
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every logger's records to one stream in the chosen format; replaces old handlers.

    Called once by `run_daemon`, before anything logs; libraries never call it.

    Args:
        service: Daemon name, written into every line.
        level: Lowest level logged ("debug", "info", "warning", "error").
        fmt: "json", "text", or "auto": text when the stream is a terminal, JSON otherwise.
        debug_families: Logger families whose DEBUG lines are wanted (`-d api,notify`);
            "all" means every logger. A family matches loggers with that name part
            ("api" matches `edge_cloud.api` and `services.dme.api.match`); "etcd" also
            matches `store`, "platform" also `platforms`.
        stream: Where lines go; stdout by default.

    Returns:
        The installed handler.
    """
    out = sys.stdout if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter(service))
    base = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    _installed[:] = [(handler, base)]
    set_debug_families(debug_families)
    root.addHandler(handler)
    logging.captureWarnings(True)
    return handler


# The handler `setup` installed and its base level; families changed later apply to it.
_installed: list[tuple[logging.Handler, int]] = []
_families: list[str] = []


def debug_families() -> tuple[str, ...]:
    """The families whose DEBUG lines are logged now (`-d`, or changed since), sorted."""
    return tuple(_families)


def set_debug_families(families: Iterable[str]) -> tuple[str, ...]:
    """Log the DEBUG lines of exactly these families from now on (the debug commands).

    Before `setup` (in-process tests) only the names are kept, for `debug_families`.

    Args:
        families: Family names as `-d` takes them; empty names are ignored.

    Returns:
        The families now on, sorted.
    """
    _families[:] = sorted({f for f in families if f})
    if not _installed:
        return debug_families()
    handler, base = _installed[0]
    for old in [f for f in handler.filters if isinstance(f, _DebugFamilies)]:
        handler.removeFilter(old)
    root = logging.getLogger()
    if _families and base > logging.DEBUG:
        # Records below `base` must reach the handler for the family filter to pick them.
        root.setLevel(logging.DEBUG)
        handler.addFilter(_DebugFamilies(base, _families))
    else:
        root.setLevel(base)
    return debug_families()
