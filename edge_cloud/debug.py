"""Debug commands over the notify tree: `DebugRequest` down, `DebugReply` up (aux_services.md §5.3).

Every daemon has a `DebugNode` with its commands. A request names the nodes it is for with
a `SvcNodeKey` filter (unset fields match anything; nodes that do not know their region
match any region) and a command:

- `enable-debug-levels`, `disable-debug-levels`, `show-debug-levels`: the `-d` logger
  families (`edge_cloud.logs`), changed live, e.g. `api,notify`;
- `dump-stack-trace`: every thread's and task's stack (args `<KB>,<toLog>`, default
  `100,false`; the original answered its help text to a request without args);
- whatever the daemon adds (`add`): the Controller's `show-controllers`, ...;
- anything else: `Unknown cmd <cmd>, cmds are <sorted list>`, as the original.

Each hop (`handle`) runs the command itself when its own node matches, then forwards the
request only to the children whose reported nodes match (`SvcNodes` knows through which
connection each node came) and collects one reply per matching node; when the timeout
(default 10 s) passes first, each node that did not answer gets `request timed out`. A
notify client (`attach_client`) runs requests from its parent and sends the replies up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from edgeproto import debug_pb2, svcnode_pb2

from edge_cloud import logs
from edge_cloud.errors import InvalidArgument
from edge_cloud.notify import NotifyClient, NotifyServer
from edge_cloud.objects import keys
from edge_cloud.svcnode import SvcNodes, node_matches

__all__ = [
    "DEFAULT_TIMEOUT",
    "DISABLE_DEBUG_LEVELS",
    "DUMP_STACK_TRACE",
    "ENABLE_DEBUG_LEVELS",
    "SHOW_DEBUG_LEVELS",
    "TIMED_OUT",
    "DebugFn",
    "DebugNode",
    "attach",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 10.0
"""Seconds a request waits for its nodes' replies when it names no timeout."""
ENABLE_DEBUG_LEVELS: Final = "enable-debug-levels"
DISABLE_DEBUG_LEVELS: Final = "disable-debug-levels"
SHOW_DEBUG_LEVELS: Final = "show-debug-levels"
DUMP_STACK_TRACE: Final = "dump-stack-trace"
TIMED_OUT: Final = "request timed out"
_STACK_HELP: Final = (
    "Args should indicate buffer size in KB and whether to write to log file, i.e. "
    "100,false. Defaults are 100,false."
)
_NANOS: Final = 1_000_000_000

DebugRequest = debug_pb2.DebugRequest
DebugReply = debug_pb2.DebugReply
#: A command: the request in, the output text out (may be a coroutine).
DebugFn = Callable[[debug_pb2.DebugRequest], str | Awaitable[str]]
ReplyFn = Callable[[debug_pb2.DebugReply], Awaitable[None]]


def _levels(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _enable(req: debug_pb2.DebugRequest) -> str:
    now = logs.set_debug_families([*logs.debug_families(), *_levels(req.levels)])
    return "enabled debug levels, now " + ",".join(now)


def _disable(req: debug_pb2.DebugRequest) -> str:
    off = set(_levels(req.levels))
    now = logs.set_debug_families(f for f in logs.debug_families() if f not in off)
    return "disabled debug levels, now " + ",".join(now)


def _show(req: debug_pb2.DebugRequest) -> str:
    return ",".join(logs.debug_families())


def _parse_bool(text: str) -> bool | None:
    """Go's `strconv.ParseBool` spellings."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return None


def _dump_stack(req: debug_pb2.DebugRequest) -> str:
    """Every thread's stack and every asyncio task's, cut to the buffer size asked for."""
    if req.args.lower() == "help":
        return _STACK_HELP
    size_kb, to_log = 100, False
    args = [a.strip() for a in req.args.split(",")] if req.args.strip() else []
    if args:
        if not args[0].lstrip("-").isdigit():
            return _STACK_HELP
        size_kb = int(args[0])
    if len(args) > 1:
        parsed = _parse_bool(args[1])
        if parsed is None:
            return _STACK_HELP
        to_log = parsed
    parts: list[str] = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"thread {ident}:\n" + "".join(traceback.format_stack(frame)))
    with contextlib.suppress(RuntimeError):  # no running loop: threads only
        for task in asyncio.all_tasks():
            stack = task.get_stack()
            lines = "".join(
                f"  {f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}\n" for f in stack
            )
            parts.append(f"task {task.get_name()}:\n{lines}")
    out = "\n".join(parts)[: max(size_kb, 0) * 1024]
    if to_log:
        log.info("stack trace:\n%s", out)
    return out


@dataclass(eq=False)
class _Call:
    """One forwarded request: the nodes still to answer and where replies go."""

    waiting: dict[str, svcnode_pb2.SvcNodeKey]
    reply: ReplyFn
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DebugNode:
    """The debug commands of one daemon and the forwarding of requests to its children.

    Args:
        nodes: This daemon's SvcNode registry (its own node, and those below it).
    """

    def __init__(self, nodes: SvcNodes) -> None:
        self.nodes = nodes
        self._funcs: dict[str, DebugFn] = {
            ENABLE_DEBUG_LEVELS: _enable,
            DISABLE_DEBUG_LEVELS: _disable,
            SHOW_DEBUG_LEVELS: _show,
            DUMP_STACK_TRACE: _dump_stack,
        }
        self._calls: dict[int, _Call] = {}
        self._server: NotifyServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, cmd: str, fn: DebugFn) -> None:
        """Offer a daemon-specific command (replaces one of the same name)."""
        self._funcs[cmd] = fn

    @property
    def commands(self) -> list[str]:
        """The command names, sorted."""
        return sorted(self._funcs)

    async def run(self, req: debug_pb2.DebugRequest) -> str:
        """Run a command here and return its output (a command that fails says so)."""
        log.debug("running debug command %s for request %d", req.cmd, req.id)
        fn = self._funcs.get(req.cmd)
        if fn is None:
            return f"Unknown cmd {req.cmd}, cmds are {','.join(self.commands)}"
        try:
            out = fn(req)
            return out if isinstance(out, str) else await out
        except Exception as err:
            log.exception("debug command %s failed", req.cmd)
            return f"{req.cmd} failed: {err}"

    # -- as a notify client: requests from the parent ----------------------------------------

    def attach_client(self, client: NotifyClient) -> None:
        """Run the requests `client`'s server sends and send the replies back up it."""

        async def reply(answer: debug_pb2.DebugReply) -> None:
            client.send_message(answer)

        async def received(req: debug_pb2.DebugRequest) -> None:
            task = asyncio.get_running_loop().create_task(self.handle(req, reply))
            self._tasks.add(task)  # a slow command must not hold up notify
            task.add_done_callback(self._tasks.discard)

        client.on_message(DebugRequest, received)

    # -- as a notify server: requests to the children ----------------------------------------

    def attach_server(self, server: NotifyServer) -> None:
        """Forward requests to `server`'s clients; feed it the replies with `receive_reply`."""
        self._server = server

    async def receive_reply(self, reply: debug_pb2.DebugReply) -> None:
        """A child's reply: passed on to the request waiting for it (others are dropped)."""
        call = self._calls.get(reply.id)
        if call is None:
            log.debug("debug reply %d from %s for no request", reply.id, reply.node.name)
            return
        forwarded = DebugReply()
        forwarded.CopyFrom(reply)
        region = self.nodes.me.key.region
        if region:
            forwarded.node.region = region
        call.waiting.pop(keys.key_string(forwarded.node), None)
        await call.reply(forwarded)
        if not call.waiting:
            call.done.set()

    async def handle(self, req: debug_pb2.DebugRequest, reply: ReplyFn) -> None:
        """Run `req` here if it is for this node, and forward it to the matching children.

        Every reply goes to `reply`; nodes silent past the timeout get `request timed out`.
        """
        me = self.nodes.me
        if node_matches(me.key, req.node):
            await reply(DebugReply(node=me.key, id=req.id, output=await self.run(req)))
        if self._server is None:
            return
        waiting: dict[str, svcnode_pb2.SvcNodeKey] = {}
        notify_ids: set[int] = set()
        for node in self.nodes.matching(req.node):
            if node.notify_id:
                waiting[keys.key_string(node.key)] = node.key
                notify_ids.add(node.notify_id)
        if not waiting:
            return
        call = _Call(waiting, reply)
        self._calls[req.id] = call
        try:
            if self._server.send_message(req, notify_ids):
                timeout = req.timeout / _NANOS if req.timeout > 0 else DEFAULT_TIMEOUT
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.done.wait(), timeout)
        finally:
            del self._calls[req.id]
        for key in list(call.waiting.values()):
            await reply(DebugReply(node=key, id=req.id, output=TIMED_OUT))

    async def request(self, req: debug_pb2.DebugRequest) -> AsyncIterator[debug_pb2.DebugReply]:
        """An API call: `handle` with a fresh id, replies streamed as they come (id cleared).

        Raises:
            InvalidArgument: `no cmd specified`.
        """
        if not req.cmd:
            raise InvalidArgument("no cmd specified")
        call = DebugRequest()
        call.CopyFrom(req)
        call.id = random.getrandbits(64) or 1
        if call.timeout <= 0:
            call.timeout = int(DEFAULT_TIMEOUT * _NANOS)
        replies: asyncio.Queue[debug_pb2.DebugReply | None] = asyncio.Queue()

        async def collect(answer: debug_pb2.DebugReply) -> None:
            out = DebugReply()
            out.CopyFrom(answer)
            out.id = 0
            await replies.put(out)

        async def run() -> None:
            try:
                await self.handle(call, collect)
            finally:
                await replies.put(None)

        task = asyncio.get_running_loop().create_task(run())
        try:
            while (answer := await replies.get()) is not None:
                yield answer
            await task  # its errors, if any
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def attach(client: NotifyClient, node: svcnode_pb2.SvcNode) -> DebugNode:
    """Register a daemon's node and its debug commands on its notify client.

    Call before the client starts: the node goes upward from the first connection on, and
    the parent's debug requests are run and answered.

    Args:
        client: The daemon's notify client.
        node: The daemon's own node (`edge_cloud.svcnode.my_node`).

    Returns:
        The debug node, for daemon-specific commands (`DebugNode.add`).
    """
    debug = DebugNode(SvcNodes(node))
    debug.nodes.attach_client(client)
    debug.attach_client(client)
    return debug
