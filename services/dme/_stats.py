"""Per-call API statistics: the stats step of the request pipeline (dme.md §2.0, §2.12).

The original counts, per method and calling App (and, for a FindCloudlet that found an
instance, per instance, zone and operator), requests, errors and a latency histogram with
buckets 0, 5, 10, 25, 50, 100 ms, and sends them to the Controller as `dme-api` Metric
records every `DmeApiMetricsCollectionInterval`. This module keeps those counters;
`take` hands over and resets them for the sender. Sending Metric records upstream is not
wired yet.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Final, NamedTuple

__all__ = ["LATENCY_BUCKETS_MS", "ApiStat", "ApiStats", "StatKey"]

LATENCY_BUCKETS_MS: Final = (0.0, 5.0, 10.0, 25.0, 50.0, 100.0)
"""Lower bounds of the latency buckets: a call lands in the last bucket not above it."""


class StatKey(NamedTuple):
    """What one counter set is kept for.

    Attributes:
        method: The method name.
        app: (organisation, name, version) of the calling App; empty when unknown.
        found_app_inst: (name, organisation) of the instance FindCloudlet returned.
        found_zone: (organisation, name) of that instance's zone.
        found_operator: Its cloudlet organisation.
    """

    method: str
    app: tuple[str, str, str] = ("", "", "")
    found_app_inst: tuple[str, str] = ("", "")
    found_zone: tuple[str, str] = ("", "")
    found_operator: str = ""


@dataclass(slots=True)
class ApiStat:
    """Counters of one key.

    Attributes:
        reqs: Calls.
        errs: Calls that failed.
        latency: Calls per latency bucket (`LATENCY_BUCKETS_MS`).
    """

    reqs: int = 0
    errs: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))


class ApiStats:
    """Counters by `StatKey`, collected between two `take`s."""

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
        index = bisect.bisect_right(LATENCY_BUCKETS_MS, seconds * 1000) - 1
        stat.latency[max(index, 0)] += 1

    def peek(self) -> dict[StatKey, ApiStat]:
        """The counters so far (live objects; do not modify)."""
        return self._stats

    def take(self) -> dict[StatKey, ApiStat]:
        """Hand over the counters and start afresh.

        Returns:
            The counters collected since the last `take`.
        """
        stats, self._stats = self._stats, {}
        return stats
