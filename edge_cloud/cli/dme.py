"""`edge dme`: call the DME's MatchEngineApi as a device would, for testing.

Every command first registers the client (RegisterClient) to get a session cookie, then
makes its call. Replies print as a compact table or, with `-o json|yaml`, with the proto
field names; errors print one line `edge: <STATUS_CODE>: <message>` on stderr and exit with
the codes of `_output.EXIT_CODES`. `edge-events` opens StreamEdgeEvent with the cookies of
RegisterClient and FindCloudlet, prints server events as they arrive (bounded by `--count`
and `--seconds`), then sends EVENT_TERMINATE_CONNECTION and closes.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading
from typing import Any, Final

import grpc
import yaml
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    locverify_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
)
from google.protobuf.message import Message
from rich.console import Console

from edge_cloud.cli import _output
from edge_cloud.objects.registry import descriptor_of

DEFAULT_ADDR: Final = "127.0.0.1:50051"
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_SECONDS: Final = 30.0
CLOSE_GRACE: Final = 2.0
"""Seconds the stream may take to end after EVENT_TERMINATE_CONNECTION before we cancel."""


def _common(parser: argparse.ArgumentParser, *, location: bool) -> None:
    parser.add_argument(
        "--addr",
        default=os.environ.get("EDGE_DME_ADDR", DEFAULT_ADDR),
        help=f"DME API host:port (env EDGE_DME_ADDR; default {DEFAULT_ADDR})",
    )
    parser.add_argument("--org", required=True, help="app organization")
    parser.add_argument("--app", required=True, help="app name")
    parser.add_argument("--appvers", required=True, help="app version")
    parser.add_argument("--unique-id", default="", help="device unique id")
    parser.add_argument("--unique-id-type", default="", help="device unique id type")
    parser.add_argument("--auth-token", default="", help="app auth token")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"deadline of each call in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=_output.FORMATS,
        default="table",
        help="output format (default table)",
    )
    if location:
        parser.add_argument("--lat", type=float, required=True, help="device latitude")
        parser.add_argument("--long", type=float, required=True, help="device longitude")


def register(commands: Any) -> None:
    """Add `dme` with its device sub-commands."""
    parser = commands.add_parser(
        "dme",
        help="call the DME as a device: register, findcloudlet, verifylocation, ...",
        description="Call the DME's MatchEngineApi as a device would, for testing.",
        epilog=_output.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    kw: dict[str, Any] = {
        "epilog": _output.EXIT_CODES_HELP,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }

    p = verbs.add_parser("register", help="RegisterClient", **kw)
    _common(p, location=False)
    p.set_defaults(handler=_handler(_register_cmd))

    p = verbs.add_parser("findcloudlet", help="FindCloudlet", **kw)
    _common(p, location=True)
    p.add_argument("--carrier", default="", help="carrier name")
    p.set_defaults(handler=_handler(_findcloudlet))

    p = verbs.add_parser("verifylocation", help="VerifyLocation", **kw)
    _common(p, location=True)
    p.add_argument("--carrier", default="", help="carrier name")
    p.set_defaults(handler=_handler(_verifylocation))

    p = verbs.add_parser("appinstlist", help="GetAppInstList", **kw)
    _common(p, location=True)
    p.add_argument("--carrier", default="", help="carrier name")
    p.add_argument("--limit", type=int, default=0, help="most cloudlets to list")
    p.set_defaults(handler=_handler(_appinstlist))

    p = verbs.add_parser("edge-events", help="FindCloudlet, then StreamEdgeEvent", **kw)
    _common(p, location=True)
    p.add_argument("--carrier", default="", help="carrier name")
    p.add_argument("--count", type=int, default=0, help="stop after N server events")
    p.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"stop after S seconds (default {DEFAULT_SECONDS:g})",
    )
    p.set_defaults(handler=_handler(_edge_events))


# --- plumbing ------------------------------------------------------------------------------

Stub = match_engine_api_pb2_grpc.MatchEngineApiStub


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _handler(fn: Any) -> Any:
    def handle(args: argparse.Namespace) -> int:
        try:
            with grpc.insecure_channel(args.addr) as channel:
                code: int = fn(args, Stub(channel), Console(highlight=False))
                return code
        except grpc.RpcError as err:
            status: grpc.StatusCode = err.code()
            details = err.details() or status.name
            _stderr().print(f"edge: {status.name}: {details}", markup=False)
            return _output.exit_code(status)
        except KeyboardInterrupt:
            return 130

    return handle


def _loc(args: argparse.Namespace) -> loc_pb2.Loc:
    return loc_pb2.Loc(latitude=args.lat, longitude=args.long)


def _session(args: argparse.Namespace, stub: Stub) -> session_pb2.RegisterClientReply:
    reply: session_pb2.RegisterClientReply = stub.RegisterClient(
        session_pb2.RegisterClientRequest(
            org_name=args.org,
            app_name=args.app,
            app_vers=args.appvers,
            auth_token=args.auth_token,
            unique_id=args.unique_id,
            unique_id_type=args.unique_id_type,
        ),
        timeout=args.timeout,
    )
    return reply


def _show(console: Console, reply: Message, fmt: str) -> None:
    _output.render(console, [reply], fmt, descriptor_of(reply), single=True)


# --- commands ------------------------------------------------------------------------------


def _register_cmd(args: argparse.Namespace, stub: Stub, console: Console) -> int:
    _show(console, _session(args, stub), args.output)
    return _output.EXIT_OK


def _find(args: argparse.Namespace, stub: Stub, cookie: str) -> app_client_pb2.FindCloudletReply:
    reply: app_client_pb2.FindCloudletReply = stub.FindCloudlet(
        app_client_pb2.FindCloudletRequest(
            session_cookie=cookie, carrier_name=args.carrier, gps_location=_loc(args)
        ),
        timeout=args.timeout,
    )
    return reply


def _findcloudlet(args: argparse.Namespace, stub: Stub, console: Console) -> int:
    _show(console, _find(args, stub, _session(args, stub).session_cookie), args.output)
    return _output.EXIT_OK


def _verifylocation(args: argparse.Namespace, stub: Stub, console: Console) -> int:
    cookie = _session(args, stub).session_cookie
    reply = stub.VerifyLocation(
        locverify_pb2.VerifyLocationRequest(
            session_cookie=cookie, carrier_name=args.carrier, gps_location=_loc(args)
        ),
        timeout=args.timeout,
    )
    _show(console, reply, args.output)
    return _output.EXIT_OK


def _appinstlist(args: argparse.Namespace, stub: Stub, console: Console) -> int:
    cookie = _session(args, stub).session_cookie
    reply = stub.GetAppInstList(
        app_client_pb2.AppInstListRequest(
            session_cookie=cookie,
            carrier_name=args.carrier,
            gps_location=_loc(args),
            limit=args.limit,
        ),
        timeout=args.timeout,
    )
    _show(console, reply, args.output)
    return _output.EXIT_OK


def _print_event(console: Console, event: app_client_pb2.ServerEdgeEvent, fmt: str) -> None:
    """One event as it arrives: a JSON line, a YAML document, or one compact table row."""
    plain = _output.to_plain(event)
    if fmt == "json":
        text = json.dumps(plain, ensure_ascii=False) + "\n"
    elif fmt == "yaml":
        text = "---\n" + str(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
    else:
        kind = plain.pop("event_type", "EVENT_UNKNOWN")
        rest = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in plain.items())
        text = f"{kind} {rest}".rstrip() + "\n"
    console.file.write(text)
    console.file.flush()


def _edge_events(args: argparse.Namespace, stub: Stub, console: Console) -> int:
    session = _session(args, stub).session_cookie
    found = _find(args, stub, session)
    Client = app_client_pb2.ClientEdgeEvent
    outbox: queue.Queue[app_client_pb2.ClientEdgeEvent | None] = queue.Queue()
    outbox.put(
        Client(
            session_cookie=session,
            edge_events_cookie=found.edge_events_cookie,
            event_type=Client.EVENT_INIT_CONNECTION,
            gps_location=_loc(args),
        )
    )
    call = stub.StreamEdgeEvent(iter(outbox.get, None))
    lock = threading.Lock()
    closing = threading.Event()
    cancelled = threading.Event()

    def cancel() -> None:
        cancelled.set()
        call.cancel()

    def close() -> None:
        """Send TERMINATE, half-close, and cancel if the server does not end the stream."""
        with lock:
            if closing.is_set():
                return
            closing.set()
        outbox.put(
            Client(
                session_cookie=session,
                edge_events_cookie=found.edge_events_cookie,
                event_type=Client.EVENT_TERMINATE_CONNECTION,
            )
        )
        outbox.put(None)
        grace = threading.Timer(CLOSE_GRACE, cancel)
        grace.daemon = True
        grace.start()

    timer = threading.Timer(max(args.seconds, 0.0), close)
    timer.daemon = True
    timer.start()
    seen = 0
    try:
        for event in call:
            if closing.is_set():
                continue  # draining after TERMINATE
            _print_event(console, event, args.output)
            seen += 1
            if args.count and seen >= args.count:
                close()
    except grpc.RpcError as err:
        if not (cancelled.is_set() and err.code() == grpc.StatusCode.CANCELLED):
            raise
    except KeyboardInterrupt:
        close()
        raise
    finally:
        timer.cancel()
        if not closing.is_set():
            close()  # the server ended the stream first: still say goodbye
        call.cancel()
    return _output.EXIT_OK
