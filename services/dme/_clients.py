"""Recent clients per App (`AppInstClient`) and registered devices (`Device`), for upstream.

AppInstClient (dme.md §2.12): after every FindCloudlet or PlatformFindCloudlet that found
an instance, unless the caller's unique id type is the monitoring probe's, a record of
who was sent where (AppInst, App, unique id and type, the request location stamped with
the server's time) is kept per App: at most `MaxTrackedDmeClients`, oldest dropped first,
a newer record of the same unique id replacing the older. The Controller asks for them
with `AppInstClientKey` objects (its `ShowAppInstClient` watches); a new record matching
one is sent at once, and a new request gets the buffered matches. Records older than
`AppinstClientCleanupInterval` are dropped; deleting an AppInst purges its records.

Device (dme.md §2.1 step 6): a successful RegisterClient whose unique id type contains the
platform organisation (`platos`), from an App that is not a platform app, is recorded once
per (type, id) with its first-seen time and sent to the Controller, which keeps every
device for `ShowDevice`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from distributed_match_engine import loc_pb2
from edgeproto import appinstclient_pb2, device_pb2

from services.dme._names import PLATFORM_ORG, is_platform_app

__all__ = ["MONITOR_UNIQUE_ID_TYPE", "AppInstClients", "Devices", "matches"]

MONITOR_UNIQUE_ID_TYPE: Final = "MobiledgeXMonitorProbe"
"""The original's `--monitorUuidType`: FindCloudlets of the monitoring probe are not clients."""

_AppKey = tuple[str, str, str]


def matches(
    key: appinstclient_pb2.AppInstClientKey, want: appinstclient_pb2.AppInstClientKey
) -> bool:
    """Whether a client's key matches a request, whose empty fields match anything.

    Args:
        key: A client's key.
        want: The Controller's request (the original's `Matches(..., MatchFilter())`).

    Returns:
        True when every non-empty field of `want` equals the same field of `key`.
    """
    pairs = (
        (want.app_key.organization, key.app_key.organization),
        (want.app_key.name, key.app_key.name),
        (want.app_key.version, key.app_key.version),
        (want.app_inst_key.name, key.app_inst_key.name),
        (want.app_inst_key.organization, key.app_inst_key.organization),
        (want.unique_id, key.unique_id),
        (want.unique_id_type, key.unique_id_type),
    )
    return all(not wanted or wanted == have for wanted, have in pairs)


def _app_of(key: appinstclient_pb2.AppInstClientKey) -> _AppKey:
    return (key.app_key.organization, key.app_key.name, key.app_key.version)


@dataclass(slots=True)
class _Client:
    """One buffered client, kept cheap: the record is built only when it is sent."""

    app: _AppKey
    app_inst: tuple[str, str]
    unique_id: str
    unique_id_type: str
    location: loc_pb2.Loc  # the request's own message, not copied (never modified)
    seen: float

    def key(self) -> appinstclient_pb2.AppInstClientKey:
        """The client's `AppInstClientKey`, to match the Controller's requests against."""
        key = appinstclient_pb2.AppInstClientKey()
        key.app_key.organization, key.app_key.name, key.app_key.version = self.app
        key.app_inst_key.name, key.app_inst_key.organization = self.app_inst
        key.unique_id, key.unique_id_type = self.unique_id, self.unique_id_type
        return key

    def record(self) -> appinstclient_pb2.AppInstClient:
        """The `AppInstClient` sent upstream, stamped with the server's time."""
        client = appinstclient_pb2.AppInstClient()
        client.client_key.CopyFrom(self.key())
        loc = client.location
        src = self.location
        loc.latitude, loc.longitude = src.latitude, src.longitude
        loc.horizontal_accuracy, loc.vertical_accuracy = (
            src.horizontal_accuracy,
            src.vertical_accuracy,
        )
        loc.altitude, loc.course, loc.speed = src.altitude, src.course, src.speed
        # the server's time: a device's own timestamp can be anything (the original's rule)
        loc.timestamp.seconds = int(self.seen)
        loc.timestamp.nanos = int((self.seen - int(self.seen)) * 1e9)
        return client


class AppInstClients:
    """The per-App client buffers and the Controller's standing requests.

    Recording is on the FindCloudlet path, so it is O(1) and builds no proto: a buffer is an
    insertion-ordered dict by unique id (a newer record moves to the end, the oldest is
    first out), and `AppInstClient` records are built only when sent.

    Args:
        send: Sends one record upstream (the notify client's `send_message`).
        max_clients: `MaxTrackedDmeClients` (per App).
        max_age: `AppinstClientCleanupInterval`, in seconds.
        clock: Wall-clock time in Unix seconds (tests pass their own).
    """

    def __init__(
        self,
        send: Callable[[appinstclient_pb2.AppInstClient], None],
        *,
        max_clients: int = 100,
        max_age: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._send = send
        self.max_clients = max_clients
        self.max_age = max_age
        self._clock = clock
        self._by_app: dict[_AppKey, dict[tuple[str, str], _Client]] = {}
        self._wanted: dict[str, appinstclient_pb2.AppInstClientKey] = {}

    def __len__(self) -> int:
        return sum(len(d) for d in self._by_app.values())

    def clients(self, app: _AppKey) -> list[appinstclient_pb2.AppInstClient]:
        """The buffered records of an App, oldest first."""
        return [c.record() for c in self._by_app.get(app, {}).values()]

    def record(
        self,
        *,
        app: _AppKey,
        app_inst: tuple[str, str],
        unique_id: str,
        unique_id_type: str,
        location: loc_pb2.Loc,
    ) -> None:
        """Keep one client that was sent to an instance, and send it if requested.

        Args:
            app: (organisation, name, version) of the App.
            app_inst: (name, organisation) of the instance it was sent to.
            unique_id: The session cookie's unique id.
            unique_id_type: Its type; the monitoring probe's type is not recorded.
            location: Where the client asked from; kept by reference, so the caller must
                not modify it (a request's message is not).
        """
        if unique_id_type == MONITOR_UNIQUE_ID_TYPE:
            return
        client = _Client(app, app_inst, unique_id, unique_id_type, location, self._clock())
        buffer = self._by_app.get(app)
        if buffer is None:
            buffer = self._by_app[app] = {}
        ident = (unique_id, unique_id_type)
        if buffer.pop(ident, None) is None:
            limit = max(self.max_clients, 1)
            while len(buffer) >= limit:
                del buffer[next(iter(buffer))]
        buffer[ident] = client
        if self._wanted:
            key = client.key()
            if any(matches(key, want) for want in self._wanted.values()):
                self._send(client.record())

    def want(self, key_string: str, want: appinstclient_pb2.AppInstClientKey) -> None:
        """A request from the Controller arrived: send the buffered matches.

        A request covered by a broader one already standing sends nothing (those records
        went out when they arrived), as in the original.

        Args:
            key_string: The request's notify key (to withdraw it later).
            want: The request.
        """
        covered = any(matches(want, other) and other != want for other in self._wanted.values())
        self._wanted[key_string] = want
        if covered:
            return
        app = _app_of(want)
        buffers = [self._by_app.get(app, {})] if all(app) else list(self._by_app.values())
        for buffer in buffers:
            for client in buffer.values():
                if matches(client.key(), want):
                    self._send(client.record())

    def unwant(self, key_string: str) -> None:
        """The Controller withdrew a request."""
        self._wanted.pop(key_string, None)

    def purge(self, app: _AppKey, app_inst: tuple[str, str]) -> None:
        """Forget the clients of a deleted instance."""
        buffer = self._by_app.get(app)
        if buffer is None:
            return
        for ident in [i for i, c in buffer.items() if c.app_inst == app_inst]:
            del buffer[ident]

    def expire(self) -> int:
        """Drop records older than `max_age`.

        Returns:
            How many were dropped.
        """
        oldest = self._clock() - self.max_age
        dropped = 0
        for buffer in self._by_app.values():
            for ident in [i for i, c in buffer.items() if c.seen < oldest]:
                del buffer[ident]
                dropped += 1
        return dropped

    def __iter__(self) -> Iterator[appinstclient_pb2.AppInstClient]:
        for buffer in self._by_app.values():
            for client in buffer.values():
                yield client.record()


class Devices:
    """Platform devices seen by RegisterClient, each sent upstream once.

    Args:
        send: Sends a Device upstream (the notify client's `send`, which re-sends after
            a reconnect).
        clock: Wall-clock time in Unix seconds.
    """

    def __init__(
        self, send: Callable[[device_pb2.Device], None], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._send = send
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def registered(self, org: str, app: str, unique_id_type: str, unique_id: str) -> bool:
        """Record a successful RegisterClient if it is a platform device's.

        Args:
            org: The App's organisation.
            app: The App's name.
            unique_id_type: The request's unique id type.
            unique_id: The request's unique id.

        Returns:
            Whether a new Device was sent.
        """
        if PLATFORM_ORG.lower() not in unique_id_type.lower() or is_platform_app(org, app):
            return False
        key = (unique_id_type, unique_id)
        if key in self._seen:
            return False
        self._seen.add(key)
        device = device_pb2.Device()
        device.key.unique_id_type, device.key.unique_id = key
        now = self._clock()
        device.first_seen.seconds = int(now)
        device.first_seen.nanos = int((now - int(now)) * 1e9)
        self._send(device)
        return True
