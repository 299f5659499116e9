"""What the DME sends the Controller on its own clock (dme.md §2.12).

- `dme-api` Metrics (changed keys, running totals): every
  `dme_api_metrics_collection_interval` (30 s);
- edge-events Metrics (`latency-metric`, `device-metric`, `custom-metric`): at wall-clock
  multiples of `edge_events_metrics_collection_interval` (1 h);
- `AutoProvCounts` (changed counts): at wall-clock multiples of `auto_deploy_interval_sec`
  (300 s);
- AppInstClient expiry: every `appinst_client_cleanup_interval` (24 h).

Periods are read from the Settings at each tick, so a change applies at once. Records go out
through the notify client's message queue, which holds them while the Controller is away.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from edgeproto import metric_pb2, settings_pb2

from services.dme._autoprov import AutoProvStats
from services.dme._clients import AppInstClients
from services.dme._stats import ApiStats, EdgeEventStats

__all__ = ["DEFAULT_PERIODS", "Reporter"]

log = logging.getLogger(__name__)

DEFAULT_PERIODS: Final = {
    "dme_api": 30.0,
    "edge_events": 3600.0,
    "autoprov": 300.0,
    "client_cleanup": 24 * 3600.0,
}
"""Periods in seconds when the Settings leave them unset (the original's defaults)."""


_ALIGNED: Final = frozenset({"edge_events", "autoprov"})
"""Reports sent at wall-clock multiples of their period, as the original's."""


def _next_multiple(now: float, period: float) -> float:
    """The next wall-clock multiple of `period` after `now` (Go's Truncate + period)."""
    return (math.floor(now / period) + 1) * period


class Reporter:
    """Sends the DME's statistics upstream when they are due.

    Args:
        settings: The current Settings (read at every tick).
        send_metric: Sends one Metric (notify `send_message`).
        api_stats: The `dme-api` counters.
        edge_stats: The edge-events statistics.
        autoprov: The auto-provisioning counters.
        clients: The AppInstClient buffers.
        dme_id: This DME's id (`dmeId` tag).
        clock: Wall-clock time in Unix seconds.
    """

    def __init__(
        self,
        settings: Callable[[], settings_pb2.Settings],
        send_metric: Callable[[metric_pb2.Metric], None],
        *,
        api_stats: ApiStats,
        edge_stats: EdgeEventStats,
        autoprov: AutoProvStats,
        clients: AppInstClients,
        dme_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._send = send_metric
        self.api_stats = api_stats
        self.edge_stats = edge_stats
        self.autoprov = autoprov
        self.clients = clients
        self.dme_id = dme_id
        self._clock = clock
        self._due: dict[str, float] = {}

    def periods(self) -> dict[str, float]:
        """The current periods in seconds, from the Settings or `DEFAULT_PERIODS`."""
        s = self._settings()
        periods = dict(DEFAULT_PERIODS)
        if s.dme_api_metrics_collection_interval > 0:
            periods["dme_api"] = s.dme_api_metrics_collection_interval / 1e9
        if s.edge_events_metrics_collection_interval > 0:
            periods["edge_events"] = s.edge_events_metrics_collection_interval / 1e9
        if s.auto_deploy_interval_sec > 0:
            periods["autoprov"] = float(s.auto_deploy_interval_sec)
        if s.appinst_client_cleanup_interval > 0:
            periods["client_cleanup"] = s.appinst_client_cleanup_interval / 1e9
        return periods

    def report_api(self) -> int:
        """Send the `dme-api` records due now; returns how many."""
        metrics = self.api_stats.metrics(self._clock(), self.dme_id)
        for metric in metrics:
            self._send(metric)
        return len(metrics)

    def report_edge_events(self) -> int:
        """Send the edge-events records collected so far; returns how many."""
        metrics = self.edge_stats.metrics(self._clock())
        for metric in metrics:
            self._send(metric)
        return len(metrics)

    def tick(self) -> None:
        """Do what is due now (the loop calls it; tests may too)."""
        now = self._clock()
        periods = self.periods()
        s = self._settings()
        if s.max_tracked_dme_clients > 0:
            self.clients.max_clients = s.max_tracked_dme_clients
        self.clients.max_age = periods["client_cleanup"]
        for name, period in periods.items():
            due = self._due.get(name)
            fresh = due is None or due - now > period  # first tick, or the period got shorter
            if not fresh and due is not None and now < due:
                continue
            self._due[name] = _next_multiple(now, period) if name in _ALIGNED else now + period
            if fresh:
                continue
            if name == "dme_api":
                self.report_api()
            elif name == "edge_events":
                self.report_edge_events()
            elif name == "autoprov":
                self.autoprov.report()
            else:
                dropped = self.clients.expire()
                if dropped:
                    log.debug("dropped %d expired AppInstClient records", dropped)

    async def run(self, tick: float = 0.5) -> None:
        """Tick every `tick` seconds until cancelled."""
        while True:
            await asyncio.sleep(tick)
            try:
                self.tick()
            except Exception:  # a bad record must not stop the reports
                log.exception("sending statistics upstream failed")
