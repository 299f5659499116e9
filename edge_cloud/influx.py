"""Metrics storage: the `MetricsWriter` protocol and its InfluxDB 1.x implementation.

Services write and query time series through `MetricsWriter` only, so the backend can change
(an InfluxDB 2.x writer is planned as an extra) without touching them, and unit tests can pass
an in-memory fake. `InfluxV1Writer` speaks the 1.x HTTP API (line protocol `/write`, InfluxQL
`/query`), which is what the original platform uses and the only server installable here.

The `influxdb` client is synchronous (requests), so every call runs in `asyncio.to_thread`
with an HTTP timeout: a slow InfluxDB must never stall the event loop.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

import requests
from influxdb import InfluxDBClient
from influxdb.exceptions import InfluxDBClientError, InfluxDBServerError

from edge_cloud.errors import DeadlineExceeded, EdgeError, InvalidArgument, Unavailable
from edge_cloud.objects.durations import format_duration

__all__ = [
    "DEFAULT_TIMEOUT",
    "InfluxV1Writer",
    "MetricsWriter",
    "Point",
    "go_duration",
    "influxql_duration",
]

DEFAULT_TIMEOUT = 10.0

FieldValue = float | int | str | bool


@dataclass(frozen=True, slots=True)
class Point:
    """One sample.

    Attributes:
        measurement: Series name, e.g. `appinst-cpu`.
        fields: Values; at least one.
        tags: Indexed string labels (app, cloudlet, ...).
        time: When it was measured: an aware datetime, or nanoseconds since the epoch;
            None lets the server stamp it.
    """

    measurement: str
    fields: Mapping[str, FieldValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    time: datetime.datetime | int | None = None


class MetricsWriter(Protocol):
    """Where services put metrics and read them back."""

    async def write(self, points: Sequence[Point]) -> None:
        """Store `points` (one request; all or nothing)."""
        ...

    async def query(
        self, influxql: str, *, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run a query; one dict per row, series tags merged in."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


class InfluxV1Writer:
    """`MetricsWriter` on InfluxDB 1.x, one database per writer. Create it with `connect`."""

    def __init__(self, client: Any, database: str, address: str) -> None:
        """Wrap a configured client; use `InfluxV1Writer.connect` instead."""
        self._client = client
        self.database = database
        self._address = address

    @classmethod
    async def connect(
        cls,
        address: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the HTTP timeout of every call
        create_database: bool = True,
    ) -> Self:
        """Check that InfluxDB answers and make sure the database exists.

        Args:
            address: `http://host:port` (the `--influx-addr` form) or `host:port`.
            database: Database to write to and query.
            username: Basic-auth user; None sends no credentials.
            password: Basic-auth password.
            timeout: HTTP timeout of this and every later call.
            create_database: Create the database if missing (idempotent in 1.x).

        Returns:
            A ready writer.

        Raises:
            InvalidArgument: The address is malformed.
            Unavailable: InfluxDB did not answer.
        """
        text = address.strip()
        parts = urlsplit(text if "://" in text else f"http://{text}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"InfluxDB address {address!r} is not http://host:port")
        client = InfluxDBClient(
            host=parts.hostname,
            port=parts.port or 8086,
            username=username,
            password=password,
            database=database,
            ssl=parts.scheme == "https",
            verify_ssl=parts.scheme == "https",
            timeout=timeout,
            retries=1,  # 0 would mean "retry forever"
        )
        writer = cls(client, database, f"{parts.scheme}://{parts.netloc}")
        try:
            await writer._call("reach", client.ping)
            if create_database:
                await writer._call(
                    f"create database {database!r} on", client.create_database, database
                )
        except BaseException:
            await writer.close()
            raise
        return writer

    async def write(self, points: Sequence[Point]) -> None:
        """Write points in one request.

        Args:
            points: The samples; an empty sequence is a no-op.

        Raises:
            InvalidArgument: InfluxDB rejected the points (e.g. a field changed type).
            Unavailable: InfluxDB is down.
            DeadlineExceeded: It did not answer in time.
        """
        if not points:
            return
        body = [_point_json(p) for p in points]
        await self._call(
            "write to",
            self._client.write_points,
            body,
            time_precision="n",
            database=self.database,
        )

    async def query(
        self, influxql: str, *, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Run InfluxQL against this writer's database.

        Args:
            influxql: The query; put untrusted values in `params`, never in the text.
            params: Bind parameters (`$name` in the query).

        Returns:
            One dict per row (`time` plus columns), the series' tags merged in, so a
            `GROUP BY` result stays unambiguous.
        """
        result = await self._call(
            "query",
            self._client.query,
            influxql,
            bind_params=dict(params) if params else None,
            database=self.database,
            epoch="ns",
        )
        rows: list[dict[str, Any]] = []
        for (_, tags), points in result.items():
            for point in points:
                rows.append({**(tags or {}), **point})
        return rows

    async def set_retention_policy(self, name: str, duration_ns: int, *, default: bool) -> None:
        """Create the retention policy `name` on this database, or alter it if it exists.

        The original's `CreateRetentionPolicy`: replication 1, shard groups of one day or of
        the whole duration if that is shorter, so expired data goes in day-sized drops.

        Args:
            name: Policy name, e.g. `metrics_default`.
            duration_ns: How long points are kept, in nanoseconds (a Settings duration).
            default: Make it the database's default policy (where writes without one go).

        Raises:
            InvalidArgument: The duration is not positive, or InfluxDB refused it (InfluxDB
                keeps data at least an hour).
            Unavailable: InfluxDB is down.
        """
        if duration_ns <= 0:
            raise InvalidArgument(
                f"retention of {name!r} on {self.database!r} must be positive, not {duration_ns}ns"
            )
        shard = min(duration_ns, _DAY_NS)
        tail = (
            f"ON {_quote_ident(self.database)} DURATION {influxql_duration(duration_ns)} "
            f"REPLICATION 1 SHARD DURATION {influxql_duration(shard)}"
            + (" DEFAULT" if default else "")
        )
        try:
            await self._call(
                "create a retention policy on",
                self._client.query,
                f"CREATE RETENTION POLICY {_quote_ident(name)} {tail}",
                method="POST",
            )
        except InvalidArgument as err:
            if "already exists" not in err.message:
                raise
            await self._call(
                "alter a retention policy on",
                self._client.query,
                f"ALTER RETENTION POLICY {_quote_ident(name)} {tail}",
                method="POST",
            )

    async def retention_policies(self) -> list[dict[str, Any]]:
        """This database's retention policies, as InfluxDB reports them.

        Returns:
            One dict per policy: `name`, `duration`, `shardGroupDuration` (like `672h0m0s`),
            `replicaN` and `default`.
        """
        result = await self._call(
            "list retention policies on",
            self._client.get_list_retention_policies,
            self.database,
        )
        return list(result)

    async def continuous_queries(self) -> list[dict[str, str]]:
        """The continuous queries defined on this database (`SHOW CONTINUOUS QUERIES`).

        Returns:
            One dict per query: `name` and `query` (the statement as InfluxDB normalised it).
        """
        result = await self._call(
            "list continuous queries on", self._client.query, "SHOW CONTINUOUS QUERIES"
        )
        return [
            {"name": str(row["name"]), "query": str(row["query"])}
            for row in result.get_points(measurement=self.database)
        ]

    async def create_continuous_query(self, name: str, body: str) -> None:
        """Define the continuous query `name` on this database, replacing a different one.

        InfluxDB accepts an identical re-definition and refuses a different one under the
        same name; a query is named after what it reads and how often (the original's
        `<measurement>-<interval>`), so a different body means its target changed, and the
        old one is dropped for it.

        Args:
            name: The query's name.
            body: `SELECT ... INTO ... FROM ... GROUP BY time(...)`, the part between
                `BEGIN` and `END`.

        Raises:
            InvalidArgument: InfluxDB refused the query.
            Unavailable: InfluxDB is down.
        """
        statement = (
            f"CREATE CONTINUOUS QUERY {_quote_ident(name)} ON {_quote_ident(self.database)} "
            f"BEGIN {body} END"
        )
        verb = "create a continuous query on"
        try:
            await self._call(verb, self._client.query, statement, method="POST")
        except InvalidArgument as err:
            if "already exists" not in err.message:
                raise
            await self.drop_continuous_query(name)
            await self._call(verb, self._client.query, statement, method="POST")

    async def drop_continuous_query(self, name: str) -> None:
        """Drop the continuous query `name` of this database; an absent one is no error.

        Raises:
            InvalidArgument: InfluxDB refused the statement.
            Unavailable: InfluxDB is down.
        """
        try:
            await self._call(
                "drop a continuous query on",
                self._client.query,
                f"DROP CONTINUOUS QUERY {_quote_ident(name)} ON {_quote_ident(self.database)}",
                method="POST",
            )
        except InvalidArgument as err:
            if "not found" not in err.message:
                raise

    async def drop_retention_policy(self, name: str) -> None:
        """Drop the retention policy `name` of this database, and the points it holds.

        Raises:
            InvalidArgument: InfluxDB refused the statement.
            Unavailable: InfluxDB is down.
        """
        await self._call(
            "drop a retention policy on",
            self._client.query,
            f"DROP RETENTION POLICY {_quote_ident(name)} ON {_quote_ident(self.database)}",
            method="POST",
        )

    async def drop_database(self) -> None:
        """Drop this writer's database (tests clean up with it)."""
        await self._call("drop database on", self._client.drop_database, self.database)

    async def close(self) -> None:
        """Close the HTTP session; idempotent."""
        self._client.close()

    async def _call(self, verb: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a thread and translate its failures."""
        where = f"InfluxDB at {self._address}"
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except requests.exceptions.Timeout as err:
            raise DeadlineExceeded(f"{where} did not answer in time ({verb})") from err
        except requests.exceptions.ConnectionError as err:
            raise Unavailable(f"{where} is unreachable; could not {verb} it") from err
        except InfluxDBServerError as err:
            raise Unavailable(f"{where} failed to {verb}: {_one_line(err)}") from err
        except InfluxDBClientError as err:
            raise InvalidArgument(f"{where} refused to {verb}: {_one_line(err)}") from err
        except requests.exceptions.RequestException as err:
            raise EdgeError(f"{where}: could not {verb}: {_one_line(err)}") from err


_DAY_NS = 24 * 3600 * 10**9
_UNITS = (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("u", 10**3))


def influxql_duration(ns: int) -> str:
    """An InfluxQL duration literal for `ns` nanoseconds in the largest exact unit (`24h`)."""
    for unit, size in _UNITS:
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def go_duration(ns: int) -> str:
    """`ns` nanoseconds as Go's `time.Duration.String` writes it (`24h0m0s`, `1m30s`, `5ms`).

    The original names continuous queries and retention policies with it, so ours must match
    to find, replace and drop the ones an original controller created.
    """
    return format_duration(ns)


def _quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (backslashes and quotes escaped)."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _point_json(point: Point) -> dict[str, Any]:
    body: dict[str, Any] = {
        "measurement": point.measurement,
        "tags": dict(point.tags),
        "fields": dict(point.fields),
    }
    if isinstance(point.time, datetime.datetime):
        if point.time.tzinfo is None:
            raise InvalidArgument(f"point {point.measurement!r} has a naive datetime; use UTC")
        delta = point.time - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        body["time"] = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    elif point.time is not None:
        body["time"] = point.time
    return body


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
