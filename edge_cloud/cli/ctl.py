"""`edge ctl <object> <verb> [field=value ...]`: every Controller RPC from the command line.

Objects and verbs come from the `edgeproto` service descriptors (`_descriptors`), so every
RPC and every field is reachable without per-object code::

    edge ctl flavor create name=x1.small ram=1024 vcpus=1 disk=10
    edge ctl cloudlet update name=paris org=op location.latitude=48.85 -o yaml
    edge appinst show cloudlet=paris           # `edge <object> ...` is short for `edge ctl ...`

Calls go over gRPC to `--addr` (env `EDGE_CTL_ADDR`, default 127.0.0.1:55001) with a
deadline of `--timeout` seconds. `Client` is shared with `edge apply` and `edge delete`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf.message import Message
from rich.console import Console

from edge_cloud import api
from edge_cloud.cli import _output
from edge_cloud.cli._descriptors import ObjectApi, Verb, apis, field_help, parse_assignments
from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects.registry import descriptor_of

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_TIMEOUT",
    "OPERATION_TIMEOUT",
    "Client",
    "add_connection_options",
    "error_exit",
    "is_object",
    "register",
    "usage_exit",
]

DEFAULT_ADDR: Final = "127.0.0.1:55001"
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds a call may take unless `--timeout` says otherwise, except:"""
OPERATION_TIMEOUT: Final = 3600.0
"""Seconds for streamed create/update/delete operations, which build real infrastructure."""

_EXAMPLES: Final = """\
examples:
  edge ctl flavor create name=x1.small ram=1024 vcpus=1 disk=10
  edge ctl flavor show -o json
  edge ctl cloudlet create name=paris org=op platform_type=fake \\
      location.latitude=48.86 location.longitude=2.35 num_dynamic_ips=10
  edge ctl settings update create_app_inst_timeout=15m
  edge ctl app create name=web org=dev version=1.0 image_type=docker \\
      deployment=kubernetes image_path=nginx access_ports=tcp:80
  edge appinst show cloudlet=paris

arguments: FIELD=VALUE with dotted paths into nested messages (location.latitude=48.8),
MAP.KEY=VALUE for maps, repeated fields by repeating or a comma list, LIST.N.FIELD=VALUE
for lists of messages, JSON for a whole message (location='{"latitude": 1}'), enums by
name in any case (docker, IMAGE_TYPE_DOCKER), durations as 15m, bools as true/false.
Update verbs send `fields` computed from the arguments given.
"""


def add_connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Add `--addr`, `--timeout` and `-o` (with defaults, or suppressed for sub-parsers).

    Args:
        parser: The parser to extend.
        defaults: Whether the options carry their defaults here; sub-parsers suppress them
            so that options given before the object are not reset.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--addr",
        default=default(os.environ.get("EDGE_CTL_ADDR", DEFAULT_ADDR)),
        help=f"Controller API host:port (env EDGE_CTL_ADDR; default {DEFAULT_ADDR})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        help=(
            f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g}; "
            f"{OPERATION_TIMEOUT:g} for streamed create/update/delete)"
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=_output.FORMATS,
        default=default("table"),
        help="output format (default table)",
    )


def _verb_help(verb: Verb) -> str:
    method = verb.method
    reply = f"stream {method.output_type.name}" if verb.streaming else method.output_type.name
    return f"{method.name}({method.input_type.name}) -> {reply}"


def _register_object(objects: Any, obj: ObjectApi) -> None:
    own = next(
        (v for v in obj.verbs.values() if v.request.DESCRIPTOR.name == obj.object_name), None
    )
    epilog = None
    if own is not None:
        epilog = f"fields of {obj.object_name} (see VERB --help for other requests):\n" + (
            "\n".join(f"  {line}" for line in field_help(own.request))
        )
    parser = objects.add_parser(
        obj.name,
        help=f"{obj.service.name}: {', '.join(obj.verbs)}",
        description=f"{obj.service.full_name}: edge ctl {obj.name} VERB [FIELD=VALUE ...]",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser, defaults=False)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in obj.verbs.items():
        epilog = "fields (FIELD=VALUE; aliases show their target):\n" + "\n".join(
            f"  {line}" for line in field_help(verb.request)
        )
        sub = verbs.add_parser(
            name,
            help=_verb_help(verb),
            description=_verb_help(verb),
            epilog=epilog + "\n\n" + _output.EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_connection_options(sub, defaults=False)
        sub.add_argument("assignments", nargs="*", metavar="FIELD=VALUE", help="request fields")


def register(commands: Any) -> None:
    """Add `ctl` with one sub-command per object and verb."""
    parser = commands.add_parser(
        "ctl",
        help="call the Controller API: edge ctl <object> <verb> [field=value ...]",
        description="Call any Controller API RPC; objects and verbs come from the protos.",
        epilog=_EXAMPLES + "\n" + _output.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_options(parser, defaults=True)
    objects = parser.add_subparsers(dest="object", required=True, metavar="OBJECT")
    for obj in apis().values():
        _register_object(objects, obj)
    parser.set_defaults(handler=cmd_ctl)


def is_object(word: str) -> bool:
    """Whether `word` names an API object, for the `edge <object> <verb>` short form."""
    return word in apis()


# --- errors --------------------------------------------------------------------------------


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def error_exit(err: EdgeError, console: Console | None = None) -> int:
    """Print `edge: <STATUS_CODE>: <message>` on stderr and return the exit code.

    Args:
        err: A failed call (its `__cause__` is the `AioRpcError` when it came from one).
        console: Where to print; stderr by default.

    Returns:
        The exit code of `_output.EXIT_CODES`.
    """
    cause = err.__cause__
    if isinstance(cause, grpc.aio.AioRpcError):
        code, message = cause.code(), cause.details() or ""
    else:
        code, message = err.code, str(err)
    (console or _stderr()).print(f"edge: {code.name}: {message}", markup=False)
    return _output.exit_code(code)


def usage_exit(err: InvalidArgument, console: Console | None = None) -> int:
    """Print a command-line error in the one-line form and return 2 (nothing was sent)."""
    (console or _stderr()).print(f"edge: INVALID_ARGUMENT: {err}", markup=False)
    return _output.EXIT_USAGE


# --- calls ---------------------------------------------------------------------------------


class Client:
    """Calls RPCs described by `Verb`s on one channel, mapping failures to `EdgeError`s."""

    def __init__(self, addr: str, timeout: float | None = None) -> None:
        self.addr = addr
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None

    def deadline(self, verb: Verb) -> float:
        """Seconds the call of `verb` may take: `--timeout`, else a default by kind."""
        if self.timeout is not None:
            return self.timeout
        return OPERATION_TIMEOUT if is_progress(verb) else DEFAULT_TIMEOUT

    async def __aenter__(self) -> Client:
        self._channel = api.channel(self.addr, timeout=self.timeout or DEFAULT_TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def call(
        self,
        verb: Verb,
        request: Message,
        on_reply: Callable[[Message], None] | None = None,
    ) -> list[Message]:
        """Make one call; a stream is read to its end.

        Args:
            verb: What to call.
            request: The request message.
            on_reply: Called with each streamed reply as it arrives.

        Returns:
            The replies: one for unary calls.

        Raises:
            EdgeError: The call failed (the `AioRpcError` is its `__cause__`).
        """
        if self._channel is None:
            raise RuntimeError("Client used outside `async with`")
        serialize: Callable[[Message], bytes] = type(request).SerializeToString
        deserialize: Callable[[bytes], Message] = verb.response.FromString
        replies: list[Message] = []
        async with api.call_errors():
            if verb.streaming:
                stream_call = self._channel.unary_stream(
                    verb.path, request_serializer=serialize, response_deserializer=deserialize
                )
                async for reply in stream_call(request, timeout=self.deadline(verb)):
                    replies.append(reply)
                    if on_reply is not None:
                        on_reply(reply)
            else:
                unary_call = self._channel.unary_unary(
                    verb.path, request_serializer=serialize, response_deserializer=deserialize
                )
                replies.append(await unary_call(request, timeout=self.deadline(verb)))
        return replies


def is_progress(verb: Verb) -> bool:
    """Streamed `Result`s are progress of an operation, not objects to list."""
    return verb.streaming and descriptor_of(verb.response).full_name == "edgeproto.Result"


async def run_verb(
    verb: Verb,
    request: Message,
    *,
    addr: str,
    deadline: float | None,
    fmt: str,
    out: Console,
    err: Console,
) -> int:
    """Call one verb and print its replies; returns the exit code."""
    title = f"{verb.method.name} {verb.method.input_type.name}"
    try:
        async with Client(addr, deadline) as client:
            if is_progress(verb) and fmt == "table":
                live = err.is_terminal
                with _output.progress(err if live else out, title, live=live) as show:

                    def each(reply: Message) -> None:
                        show(str(getattr(reply, "message", "")))

                    await client.call(verb, request, each)
                return _output.EXIT_OK
            replies = await client.call(verb, request)
    except EdgeError as failure:
        return error_exit(failure, err)
    _output.render(out, replies, fmt, descriptor_of(verb.response), single=not verb.streaming)
    return _output.EXIT_OK


def cmd_ctl(args: argparse.Namespace) -> int:
    """Handle `edge ctl <object> <verb> [field=value ...]`."""
    verb = apis()[args.object].verbs[args.verb]
    err = _stderr()
    try:
        request = parse_assignments(
            verb.request, args.assignments, update_mask=verb.is_update
        ).message
    except InvalidArgument as bad:
        return usage_exit(bad, err)
    out = Console(highlight=False, soft_wrap=True)
    try:
        return asyncio.run(
            run_verb(
                verb,
                request,
                addr=args.addr,
                deadline=args.timeout,
                fmt=args.output,
                out=out,
                err=err,
            )
        )
    except KeyboardInterrupt:
        return 130
