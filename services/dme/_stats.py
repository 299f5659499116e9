"""Statistics the DME reports upstream as `edgeproto.Metric` records (dme.md §2.12).

Two families, each turned into Metric records the Controller writes to InfluxDB
(aux_services.md §1.13):

- `dme-api` (`ApiStats`): per method, calling App and, for a FindCloudlet that found an
  instance, that instance, its zone and the organisation it was found under: requests,
  errors and a latency histogram (buckets 0, 5, 10, 25, 50, 100 ms, fields named by the Go
  duration of their lower edge, `0s` ... `100ms`, as the original's `LatencyMetric`). The
  counters are cumulative, as in the original; every `DmeApiMetricsCollectionInterval` the
  keys that changed since the last report are sent with their running totals.
- edge-events (`EdgeEventStats`): `latency-metric` (latency samples per AppInst, location
  tile and device), `device-metric` (sessions per AppInst, location tile and device) and
  `custom-metric` (custom events per name), reset after each report, sent every
  `EdgeEventsMetricsCollectionInterval`.

Counting is on the request path, so `record` does a dict lookup and a few additions; the
Metric protos are built only when a report is due.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from distributed_match_engine import loc_pb2
from edgeproto import metric_pb2

__all__ = [
    "CUSTOM_METRIC",
    "DEVICE_METRIC",
    "DME_API_METRIC",
    "LATENCY_BUCKETS_MS",
    "LATENCY_FIELDS",
    "LATENCY_METRIC",
    "ApiStat",
    "ApiStats",
    "DeviceInfo",
    "EdgeEventStats",
    "EdgeStatKey",
    "RollingStats",
    "StatKey",
    "location_tile",
]

DME_API_METRIC: Final = "dme-api"
LATENCY_METRIC: Final = "latency-metric"
DEVICE_METRIC: Final = "device-metric"
CUSTOM_METRIC: Final = "custom-metric"

LATENCY_BUCKETS_MS: Final = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0)
"""Lower bounds of the latency buckets: a call lands in the last bucket not above it."""

LATENCY_FIELDS: Final = ("0s", "5ms", "10ms", "25ms", "50ms", "100ms")
"""The buckets' field names: Go's `time.Duration.String()` of each lower bound."""

KM_PER_DEG_LONG: Final = 111.32
KM_PER_DEG_LAT: Final = 110.57


def _bucket(ms: float) -> int:
    return max(bisect.bisect_right(LATENCY_BUCKETS_MS, ms) - 1, 0)


def _tag(metric: metric_pb2.Metric, name: str, value: str) -> None:
    metric.tags.add(name=name, val=value)


def _stamp(metric: metric_pb2.Metric, now: float) -> None:
    metric.timestamp.seconds = int(now)
    metric.timestamp.nanos = int((now - int(now)) * 1e9)


# --- dme-api ---------------------------------------------------------------------------------


class StatKey(NamedTuple):
    """What one counter set is kept for.

    Attributes:
        method: The method name.
        app: (organisation, name, version) of the calling App; empty when unknown.
        found_app_inst: (name, organisation) of the instance FindCloudlet returned.
        found_zone: (organisation, name) of that instance's zone.
        found_operator: The organisation it was found under (its cloudlet's operator, or
            the alliance organisation that brought it in).
    """

    method: str
    app: tuple[str, str, str] = ("", "", "")
    found_app_inst: tuple[str, str] = ("", "")
    found_zone: tuple[str, str] = ("", "")
    found_operator: str = ""


@dataclass(slots=True)
class ApiStat:
    """Running counters of one key.

    Attributes:
        reqs: Calls.
        errs: Calls that failed.
        latency: Calls per latency bucket (`LATENCY_BUCKETS_MS`).
        changed: Counted since the last report.
    """

    reqs: int = 0
    errs: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    changed: bool = False


class ApiStats:
    """`dme-api` counters by `StatKey`, cumulative like the original's."""

    def __init__(self) -> None:
        self._stats: dict[StatKey, ApiStat] = {}

    def record(self, key: StatKey, seconds: float, *, failed: bool) -> None:
        """Count one call.

        Args:
            key: What it is counted under.
            seconds: How long it took.
            failed: Whether it ended with an error.
        """
        stat = self._stats.get(key)
        if stat is None:
            stat = self._stats[key] = ApiStat()
        stat.reqs += 1
        if failed:
            stat.errs += 1
        stat.latency[_bucket(seconds * 1000)] += 1
        stat.changed = True

    def peek(self) -> dict[StatKey, ApiStat]:
        """The counters so far (live objects; do not modify)."""
        return self._stats

    def metrics(self, now: float, dme_id: str) -> list[metric_pb2.Metric]:
        """`dme-api` records for the keys counted since the last call, and mark them sent.

        Args:
            now: The records' timestamp (Unix seconds).
            dme_id: This DME's id (`dmeId` tag: `--scale-id`, else the hostname).

        Returns:
            One Metric per changed key, with running totals.
        """
        out: list[metric_pb2.Metric] = []
        for key, stat in self._stats.items():
            if not stat.changed:
                continue
            stat.changed = False
            metric = metric_pb2.Metric(name=DME_API_METRIC)
            _stamp(metric, now)
            _tag(metric, "apporg", key.app[0])
            _tag(metric, "app", key.app[1])
            _tag(metric, "appver", key.app[2])
            _tag(metric, "dmeId", dme_id)
            _tag(metric, "method", key.method)
            metric.vals.add(name="reqs", ival=stat.reqs)
            metric.vals.add(name="errs", ival=stat.errs)
            metric.vals.add(name="foundappinstname", sval=key.found_app_inst[0])
            metric.vals.add(name="foundappinstorg", sval=key.found_app_inst[1])
            metric.vals.add(name="foundzone", sval=key.found_zone[1])
            metric.vals.add(name="foundzoneorg", sval=key.found_zone[0])
            metric.vals.add(name="foundOperator", sval=key.found_operator)
            for name, count in zip(LATENCY_FIELDS, stat.latency, strict=True):
                metric.vals.add(name=name, ival=count)
            out.append(metric)
        return out


# --- edge-events -----------------------------------------------------------------------------


def location_tile(loc: loc_pb2.Loc, side_km: int) -> str:
    """The original's location tile of a position: `"<lonU>,<latU>_<lonO>,<latO>_<side>"`.

    The world is cut into squares of `side_km` from (0, 0) outwards in each quadrant
    (111.32 km per degree of longitude, 110.57 per degree of latitude, as the original);
    the tile names its corner nearest to (0, 0) and the opposite one, signed per quadrant,
    with Go's `%f` (six decimals).

    Args:
        loc: A position (invalid ones give "").
        side_km: `LocationTileSideLengthKm` (2 by default); 0 or less gives "".

    Returns:
        The tile string, or "" when the position or the side is invalid.
    """
    lat, lon = loc.latitude, loc.longitude
    if side_km <= 0 or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return ""
    lat_sign = -1.0 if lat < 0 else 1.0
    lon_sign = -1.0 if lon < 0 else 1.0
    lat_index = int(abs(lat) * KM_PER_DEG_LAT / side_km)
    lon_index = int(abs(lon) * KM_PER_DEG_LONG / side_km)
    lat_under = lat_sign * lat_index * side_km / KM_PER_DEG_LAT
    lat_over = lat_sign * (lat_index + 1) * side_km / KM_PER_DEG_LAT
    lon_under = lon_sign * lon_index * side_km / KM_PER_DEG_LONG
    lon_over = lon_sign * (lon_index + 1) * side_km / KM_PER_DEG_LONG
    return f"{lon_under:f},{lat_under:f}_{lon_over:f},{lat_over:f}_{side_km}"


@dataclass(slots=True)
class RollingStats:
    """Min, max, mean and unbiased variance over samples added one at a time (Welford).

    Negative samples are ignored, as the original's `RollingStatistics` does.
    """

    num_samples: int = 0
    avg: float = 0.0
    min: float = 0.0
    max: float = 0.0
    _sum_sq: float = 0.0

    def add(self, sample: float) -> None:
        """Add one sample."""
        if sample < 0:
            return
        if self.num_samples == 0 or sample < self.min:
            self.min = sample
        if self.num_samples == 0 or sample > self.max:
            self.max = sample
        self.num_samples += 1
        previous = self.avg
        self.avg += (sample - previous) / self.num_samples
        self._sum_sq += (sample - previous) * (sample - self.avg)

    @property
    def variance(self) -> float:
        """Unbiased variance (n - 1), 0 below two samples."""
        return self._sum_sq / (self.num_samples - 1) if self.num_samples > 1 else 0.0

    @property
    def std_dev(self) -> float:
        """Square root of `variance`."""
        return math.sqrt(self.variance)


class DeviceInfo(NamedTuple):
    """What a client said about its device: the device tags of edge-events metrics."""

    carrier: str = ""
    data_network_type: str = ""
    os: str = ""
    model: str = ""
    signal_strength: int = 0


class EdgeStatKey(NamedTuple):
    """The AppInst a client is attached to, where it is and what device it uses.

    Attributes:
        app_inst: (name, organisation) of the AppInst.
        app: (organisation, name, version) of its App.
        cloudlet: (organisation, name, federated organisation) of its cloudlet.
        tile: The client's location tile (`location_tile`).
        device: The device tags.
    """

    app_inst: tuple[str, str]
    app: tuple[str, str, str]
    cloudlet: tuple[str, str, str]
    tile: str = ""
    device: DeviceInfo = DeviceInfo()


@dataclass(slots=True)
class _LatencyStat:
    rolling: RollingStats = field(default_factory=RollingStats)
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))


class EdgeEventStats:
    """Edge-events statistics between two reports.

    Args:
        dme_cloudlet: (organisation, name) of the cloudlet this DME runs for (`--cloudlet-key`);
            empty for a regional DME.
    """

    def __init__(self, dme_cloudlet: tuple[str, str] = ("", "")) -> None:
        self._dme_cloudlet = dme_cloudlet
        self._latency: dict[EdgeStatKey, _LatencyStat] = {}
        self._devices: dict[EdgeStatKey, int] = {}
        self._custom: dict[tuple[EdgeStatKey, str], tuple[int, RollingStats]] = {}

    def record_latency(self, key: EdgeStatKey, samples: Iterable[float]) -> None:
        """Add a client's latency samples (milliseconds; negative ones are ignored)."""
        values = [v for v in samples if v >= 0]
        if not values:
            return
        stat = self._latency.get(key)
        if stat is None:
            stat = self._latency[key] = _LatencyStat()
        for value in values:
            stat.rolling.add(value)
            stat.buckets[_bucket(value)] += 1

    def record_device(self, key: EdgeStatKey) -> None:
        """Count a session (a connection, a new tile or new device details) for a device."""
        self._devices[key] = self._devices.get(key, 0) + 1

    def record_custom(self, key: EdgeStatKey, name: str, samples: Iterable[float]) -> None:
        """Count a custom event `name` and add its samples."""
        count, rolling = self._custom.get((key, name), (0, RollingStats()))
        for value in samples:
            rolling.add(value)
        self._custom[key, name] = (count + 1, rolling)

    def _base(self, name: str, key: EdgeStatKey, now: float) -> metric_pb2.Metric:
        metric = metric_pb2.Metric(name=name)
        _stamp(metric, now)
        _tag(metric, "dmecloudlet", self._dme_cloudlet[1])
        _tag(metric, "dmecloudletorg", self._dme_cloudlet[0])
        _tag(metric, "appinst", key.app_inst[0])
        _tag(metric, "appinstorg", key.app_inst[1])
        _tag(metric, "app", key.app[1])
        _tag(metric, "apporg", key.app[0])
        _tag(metric, "appver", key.app[2])
        _tag(metric, "cloudlet", key.cloudlet[1])
        _tag(metric, "cloudletorg", key.cloudlet[0])
        _tag(metric, "cloudletfedorg", key.cloudlet[2])
        return metric

    def _device_tags(self, metric: metric_pb2.Metric, key: EdgeStatKey) -> None:
        _tag(metric, "locationtile", key.tile)
        _tag(metric, "devicecarrier", key.device.carrier)
        _tag(metric, "datanetworktype", key.device.data_network_type)
        _tag(metric, "deviceos", key.device.os)
        _tag(metric, "devicemodel", key.device.model)
        metric.vals.add(name="signalstrength", ival=key.device.signal_strength)

    def metrics(self, now: float) -> list[metric_pb2.Metric]:
        """Records for everything counted since the last call, and start afresh.

        Args:
            now: The records' timestamp (Unix seconds).

        Returns:
            `latency-metric`, `device-metric` and `custom-metric` records.
        """
        out: list[metric_pb2.Metric] = []
        latency, self._latency = self._latency, {}
        devices, self._devices = self._devices, {}
        custom, self._custom = self._custom, {}
        for key, stat in latency.items():
            metric = self._base(LATENCY_METRIC, key, now)
            self._device_tags(metric, key)
            r = stat.rolling
            metric.vals.add(name="avg", dval=r.avg)
            metric.vals.add(name="variance", dval=r.variance)
            metric.vals.add(name="stddev", dval=r.std_dev)
            metric.vals.add(name="min", dval=r.min)
            metric.vals.add(name="max", dval=r.max)
            for name, count in zip(LATENCY_FIELDS, stat.buckets, strict=True):
                metric.vals.add(name=name, ival=count)
            metric.vals.add(name="numsamples", ival=r.num_samples)
            metric.vals.add(name="total", dval=r.avg * r.num_samples)
            out.append(metric)
        for key, sessions in devices.items():
            metric = self._base(DEVICE_METRIC, key, now)
            self._device_tags(metric, key)
            metric.vals.add(name="numsessions", ival=sessions)
            out.append(metric)
        for (key, name), (count, r) in custom.items():
            metric = self._base(CUSTOM_METRIC, key, now)
            _tag(metric, "statname", name)
            metric.vals.add(name="count", ival=count)
            metric.vals.add(name="avg", dval=r.avg)
            metric.vals.add(name="variance", dval=r.variance)
            metric.vals.add(name="stddev", dval=r.std_dev)
            metric.vals.add(name="min", dval=r.min)
            metric.vals.add(name="max", dval=r.max)
            metric.vals.add(name="numsamples", ival=r.num_samples)
            out.append(metric)
        return out
