"""`edge apply -f FILE` and `edge delete -f FILE`: many objects at once, from YAML.

The file is a mapping of `AllData` lists (objects.md §2.38)::

    operator_codes:            # or operatorcodes:
      - {code: "20801", organization: op}
    flavors:
      - key: {name: x1.small}
        ram: 1024
        vcpus: 1
        disk: 10

Objects are proto JSON dicts (original field names or lowerCamel), enums by any spelling,
durations as text ("15m"). `apply` creates in AllData's declared order; an object that
already exists is updated with the fields the file gives (or left alone when they already
hold those values). `delete` goes in reverse order and skips what is already gone.
Streamed operations (cloudlets, cluster and app instances) show their progress.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import yaml
from edgeproto import alldata_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from rich.console import Console

from edge_cloud.cli import _output
from edge_cloud.cli._descriptors import Verb, apis, normalize_dict
from edge_cloud.cli.ctl import (
    Client,
    add_connection_options,
    error_exit,
    is_progress,
    usage_exit,
)
from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from edge_cloud.objects import codec, keys
from edge_cloud.objects import fields as field_masks
from edge_cloud.objects.registry import descriptor_of

__all__ = ["CREATE_ORDER", "Entry", "load", "register"]

CREATE_ORDER: Final = (
    "flavors",
    "settings",
    "operator_codes",
    "res_tag_tables",
    "trust_policies",
    "gpu_drivers",
    "platform_features",
    "zones",
    "cloudlets",
    "cloudlet_infos",
    "zone_pools",
    "networks",
    "auto_prov_policies",
    "auto_prov_policy_zones",
    "auto_scale_policies",
    "idle_reservable_cluster_insts",
    "cluster_insts",
    "apps",
    "app_instances",
    "app_inst_refs",
    "cluster_refs",
    "vm_pools",
    "alert_policies",
    "flow_rate_limit_settings",
    "max_reqs_rate_limit_settings",
    "trust_policy_exceptions",
)
"""AllData's declared order (objects.md §2.38): creation order; deletion runs in reverse."""

_CREATE_PREFIXES: Final = ("Create", "Add", "Inject")
_DELETE_PREFIXES: Final = ("Delete", "Remove", "Evict")


@dataclass(frozen=True)
class Entry:
    """One object of the file.

    Attributes:
        section: The AllData field it was listed under (`flavors`).
        message: The object.
    """

    section: str
    message: Message


def _norm(text: str) -> str:
    return text.replace("_", "").replace("-", "").lower()


def _section_fields() -> dict[str, FieldDescriptor]:
    desc = alldata_pb2.AllData.DESCRIPTOR
    out: dict[str, FieldDescriptor] = {}
    for fd in desc.fields:
        out[_norm(fd.name)] = fd
        out[_norm(fd.json_name)] = fd
    return out


def load(text: str, source: str = "<input>") -> list[Entry]:
    """Read an objects file into entries in creation order.

    Args:
        text: YAML (or JSON) text.
        source: Its name, for messages.

    Returns:
        Entries in AllData's declared order, file order within a section.

    Raises:
        InvalidArgument: For YAML errors, unknown sections and objects that do not fit
            their message; the message says which section and entry.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidArgument(f"{source}: not valid YAML: {err}") from err
    if data is None:
        return []
    if not isinstance(data, dict):
        raise InvalidArgument(f"{source}: expected a mapping of AllData lists (flavors: ...)")
    sections = _section_fields()
    by_section: dict[str, list[Entry]] = {}
    for name, items in data.items():
        fd = sections.get(_norm(str(name)))
        if fd is None:
            known = ", ".join(CREATE_ORDER)
            raise InvalidArgument(f"{source}: unknown section {name!r}; known: {known}")
        mt = fd.message_type
        if mt is None:  # pragma: no cover - every AllData field is a message
            continue
        if items is None:
            continue
        listed = items if isinstance(items, list) else [items]
        if not fd.is_repeated and len(listed) != 1:
            raise InvalidArgument(f"{source}: {fd.name} takes one object")
        cls = _message_class(mt)
        for i, item in enumerate(listed):
            where = f"{source}: {fd.name}[{i}]"
            if not isinstance(item, dict):
                raise InvalidArgument(f"{where}: expected a mapping")
            try:
                msg = codec.from_dict(cls, normalize_dict(mt, item))
            except InvalidArgument as err:
                raise InvalidArgument(f"{where}: {err}") from err
            by_section.setdefault(fd.name, []).append(Entry(fd.name, msg))
    return [e for section in CREATE_ORDER for e in by_section.get(section, [])]


def _message_class(desc: Descriptor) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(desc)
    return cls


def _find_verb(message: Descriptor, prefixes: tuple[str, ...]) -> Verb | None:
    """The RPC taking `message` whose name starts with one of `prefixes` (in that order)."""
    candidates = [
        verb
        for obj in apis().values()
        for verb in obj.verbs.values()
        if verb.request.DESCRIPTOR.full_name == message.full_name
    ]
    for prefix in prefixes:
        exact = [v for v in candidates if v.method.name == f"{prefix}{message.name}"]
        if exact:
            return exact[0]
        loose = [v for v in candidates if v.method.name.startswith(prefix)]
        if loose:
            return loose[0]
    return None


def _key_text(msg: Message) -> str | None:
    try:
        return keys.key_string(msg)
    except (EdgeError, KeyError, TypeError, ValueError):
        return None


def _label(entry: Entry) -> str:
    try:
        key = keys.key_string(entry.message)
    except (EdgeError, KeyError, TypeError, ValueError):
        key = ""
    word = descriptor_of(entry.message).name
    return f"{word} {key}".rstrip()


def _path_name(desc: Descriptor, path: str) -> str:
    try:
        return field_masks.field_path_name(desc, path)
    except KeyError:
        return path


def _key_only(msg: Message) -> Message:
    """A Show filter matching just this object: its key (or the whole message if keyless)."""
    desc = descriptor_of(msg)
    key_number = field_masks.key_field_number(desc)
    if key_number is None:
        return msg
    filt = type(msg)()
    name = desc.fields_by_number[key_number].name
    sub = getattr(msg, name)
    if isinstance(sub, Message):
        getattr(filt, name).CopyFrom(sub)
    else:
        setattr(filt, name, sub)
    return filt


class _Runner:
    def __init__(self, client: Client, out: Console, err: Console) -> None:
        self.client = client
        self.out = out
        self.err = err

    async def _call(self, verb: Verb, request: Message, what: str) -> list[Message]:
        if not is_progress(verb):
            return await self.client.call(verb, request)
        live = self.err.is_terminal
        console = self.err if live else self.out
        with _output.progress(console, what, live=live, indent="  ") as show:

            def each(reply: Message) -> None:
                show(str(getattr(reply, "message", "")))

            return await self.client.call(verb, request, each)

    def say(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    async def apply(self, entry: Entry) -> None:
        desc = descriptor_of(entry.message)
        label = _label(entry)
        if entry.section == "settings":
            show = _find_verb(descriptor_of(entry.message), ("Show",))
            found = [] if show is None else await self.client.call(show, type(entry.message)())
            await self._update(entry, label, found[0] if found else None)
            return
        create = _find_verb(desc, _CREATE_PREFIXES)
        if create is None:
            self.say(f"{label}: skipped (no API creates {desc.name})")
            return
        current = await self._current(entry)
        if current is not None:
            await self._update(entry, label, current)
            return
        try:
            await self._call(create, entry.message, f"{create.method.name} {label}")
        except AlreadyExists:  # created meanwhile, or not visible to Show
            await self._update(entry, label, await self._current(entry))
            return
        self.say(f"{label}: created")

    async def _current(self, entry: Entry) -> Message | None:
        """The stored object with the entry's key, None when there is none (or no Show)."""
        desc = descriptor_of(entry.message)
        show = _find_verb(desc, ("Show",))
        if show is None or field_masks.key_field_number(desc) is None:
            return None
        want = _key_text(entry.message)
        try:
            found = await self.client.call(show, _key_only(entry.message))
        except Unimplemented:
            return None
        return next((f for f in found if want is None or _key_text(f) == want), None)

    async def _update(self, entry: Entry, label: str, current: Message | None) -> None:
        desc = descriptor_of(entry.message)
        wanted = field_masks.set_fields(entry.message)
        if current is not None:
            merged = type(current)()
            merged.CopyFrom(current)
            wanted = field_masks.apply_fields(merged, entry.message, wanted)
        key_number = field_masks.key_field_number(desc)
        if key_number is not None:
            wanted = [p for p in wanted if p.split(".")[0] != str(key_number)]
        update = _find_verb(desc, ("Update",))
        if not wanted or update is None or not desc.fields or desc.fields[0].name != "fields":
            self.say(f"{label}: unchanged")
            return
        request = type(entry.message)()
        request.CopyFrom(entry.message)
        mask = cast("Any", request).fields
        del mask[:]
        mask.extend(wanted)
        await self._call(update, request, f"{update.method.name} {label}")
        names = ", ".join(_path_name(desc, p) for p in wanted)
        self.say(f"{label}: updated ({names})")

    async def delete(self, entry: Entry) -> None:
        desc = descriptor_of(entry.message)
        label = _label(entry)
        if entry.section == "settings":
            self.say(f"{label}: left as is (settings are never deleted)")
            return
        delete = _find_verb(desc, _DELETE_PREFIXES)
        if delete is None:
            self.say(f"{label}: skipped (no API deletes {desc.name})")
            return
        try:
            await self._call(delete, entry.message, f"{delete.method.name} {label}")
        except NotFound:
            self.say(f"{label}: not found")
            return
        self.say(f"{label}: deleted")


async def _run(
    entries: list[Entry],
    deleting: bool,
    addr: str,
    deadline: float | None,
    out: Console,
    err: Console,
) -> int:
    try:
        async with Client(addr, deadline) as client:
            runner = _Runner(client, out, err)
            step: Callable[[Entry], Any] = runner.delete if deleting else runner.apply
            for entry in reversed(entries) if deleting else entries:
                await step(entry)
    except EdgeError as failure:
        return error_exit(failure, err)
    return _output.EXIT_OK


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidArgument(f"cannot read {path}: {err.strerror}") from err


def _entries(paths: list[str]) -> Iterator[Entry]:
    loaded = [e for path in paths for e in load(_read(path), path)]
    order = {name: i for i, name in enumerate(CREATE_ORDER)}
    # sort is stable: file order within a section, files in order
    yield from sorted(loaded, key=lambda e: order[e.section])


def _handler(deleting: bool) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            entries = list(_entries(args.file))
        except InvalidArgument as bad:
            return usage_exit(bad, err)
        out = Console(highlight=False, soft_wrap=True)
        try:
            return asyncio.run(_run(entries, deleting, args.addr, args.timeout, out, err))
        except KeyboardInterrupt:
            return 130

    return handle


def register(commands: Any) -> None:
    """Add `apply -f FILE` and `delete -f FILE`."""
    for name, deleting, text in (
        ("apply", False, "create or update the objects of a YAML file, in dependency order"),
        ("delete", True, "delete the objects of a YAML file, in reverse dependency order"),
    ):
        parser = commands.add_parser(
            name,
            help=text,
            description=text + ".\n\n" + _FORMAT_HELP,
            epilog=_output.EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "-f",
            "--file",
            action="append",
            required=True,
            help="YAML file of AllData lists (repeatable; - for stdin)",
        )
        add_connection_options(parser, defaults=True)
        parser.set_defaults(handler=_handler(deleting))


_FORMAT_HELP: Final = (
    "The file maps AllData field names (flavors, operator_codes or operatorcodes, zones,\n"
    "cloudlets, apps, cluster_insts, app_instances, ...) to lists of objects written as\n"
    "proto JSON (durations as text). Sections run in AllData's declared order:\n  "
    + " -> ".join(CREATE_ORDER[:12])
    + "\n  -> "
    + " -> ".join(CREATE_ORDER[12:])
    + "\n`apply` updates objects that already exist; `delete` ignores ones already gone."
)


def sections() -> Mapping[str, str]:
    """Accepted section spellings -> AllData field name (for help and tests)."""
    return {k: fd.name for k, fd in _section_fields().items()}
