"""Operator interfaces for location and QoS, with the built-in (`standalone`) defaults.

The original loads an operator plugin by the `carrier` flag; its `standalone` operator is a
simulator. Here an operator is an object behind `LocationOperator` / `QosOperator`;
`standalone` is the only one built in (dme.md §2.7-2.9):

- VerifyLocation: the device's "real" position is fixed at (32.013988, -96.598243) and the
  claimed distance is bucketed into a matching degree; GetLocation returns that position.
- QoS sessions: without `qossesaddr` creation fails with the original's INVALID_ARGUMENT;
  with it, the standalone operator has nothing to call, which the original crashes on
  (§2.8 Quirk): here it is UNIMPLEMENTED. Deleting without `qossesaddr` gives an empty reply.
- GetQosPositionKpi: one reply with random KPIs per requested position.
"""

from __future__ import annotations

import random
from typing import Final, Protocol

from distributed_match_engine import (
    appcommon_pb2,
    loc_pb2,
    locverify_pb2,
    qos_pb2,
    qos_position_pb2,
)

from edge_cloud.errors import InvalidArgument, Unimplemented
from services.dme._ranking import distance_km

__all__ = [
    "SIMULATED_LOCATION",
    "LocationOperator",
    "QosOperator",
    "StandaloneOperator",
    "degree_result",
]

SIMULATED_LOCATION: Final = (32.013988, -96.598243)
"""Where the standalone operator says every device really is."""

_VLR = locverify_pb2.VerifyLocationReply
_DEGREES: Final[dict[int, tuple[int, float]]] = {
    0: (_VLR.LOC_UNKNOWN, -1.0),
    1: (_VLR.LOC_VERIFIED, 2.0),
    2: (_VLR.LOC_VERIFIED, 10.0),
    3: (_VLR.LOC_VERIFIED, 100.0),
    4: (_VLR.LOC_MISMATCH_SAME_COUNTRY, -1.0),
    5: (_VLR.LOC_MISMATCH_OTHER_COUNTRY, -1.0),
    6: (_VLR.LOC_ROAMING_COUNTRY_MATCH, -1.0),
    7: (_VLR.LOC_ROAMING_COUNTRY_MISMATCH, -1.0),
}
_BUCKETS: Final = ((2.0, 1), (10.0, 2), (100.0, 3))


def degree_result(degree: int) -> tuple[int, float]:
    """Map an operator's matching degree to (GPSLocationStatus, accuracy km), §2.7 table.

    Args:
        degree: The matching degree; unknown ones count as 0.

    Returns:
        The status number and accuracy.
    """
    return _DEGREES.get(degree, _DEGREES[0])


def distance_degree(distance: float) -> int:
    """The smallest bucket strictly greater than the distance; 4 (mismatch) beyond 100 km."""
    for limit, degree in _BUCKETS:
        if distance < limit:
            return degree
    return 4


class LocationOperator(Protocol):
    """How an operator verifies and reports device locations."""

    async def verify_location(
        self, loc: loc_pb2.Loc, token: str, peer_ip: str
    ) -> tuple[int, float]:
        """Verify a claimed location; returns (GPSLocationStatus, accuracy km)."""

    async def get_location(self, peer_ip: str) -> loc_pb2.Loc:
        """The network's idea of where the device is."""


class QosOperator(Protocol):
    """How an operator creates and deletes QoS priority sessions and reports KPIs."""

    async def create_session(
        self, request: qos_pb2.QosPrioritySessionCreateRequest
    ) -> qos_pb2.QosPrioritySessionReply:
        """Create a priority session."""

    async def delete_session(
        self, request: qos_pb2.QosPrioritySessionDeleteRequest
    ) -> qos_pb2.QosPrioritySessionDeleteReply:
        """Delete a priority session."""

    async def position_kpi(
        self, request: qos_position_pb2.QosPositionRequest
    ) -> list[qos_position_pb2.QosPositionKpiReply]:
        """KPI predictions for positions, as the replies of the stream."""


def _kpi(rng: random.Random, base: float) -> float:
    return max(0.0, base + rng.uniform(-10, 10)) + rng.random()


class StandaloneOperator:
    """The built-in `standalone` operator: simulated location, no QoS sessions.

    Args:
        qos_session_addr: `qossesaddr`; empty means sessions are not offered.
        rng: Random source for the KPI simulator.
    """

    def __init__(self, *, qos_session_addr: str = "", rng: random.Random | None = None) -> None:
        self._qos_addr = qos_session_addr
        self._rng = rng or random.Random()  # noqa: S311 - simulated KPIs, not security

    async def verify_location(
        self, loc: loc_pb2.Loc, token: str, peer_ip: str
    ) -> tuple[int, float]:
        """Bucket the distance from the simulated real position (token and IP unused).

        Args:
            loc: The claimed location (validated).
            token: The request's `verify_loc_token` (ignored by the simulator).
            peer_ip: The caller's IP (ignored).

        Returns:
            (GPSLocationStatus, accuracy km).
        """
        lat, lon = SIMULATED_LOCATION
        return degree_result(distance_degree(distance_km(loc.latitude, loc.longitude, lat, lon)))

    async def get_location(self, peer_ip: str) -> loc_pb2.Loc:
        """The simulated real position.

        Args:
            peer_ip: The caller's IP (ignored).

        Returns:
            (32.013988, -96.598243).
        """
        lat, lon = SIMULATED_LOCATION
        return loc_pb2.Loc(latitude=lat, longitude=lon)

    async def create_session(
        self, request: qos_pb2.QosPrioritySessionCreateRequest
    ) -> qos_pb2.QosPrioritySessionReply:
        """Refuse: INVALID_ARGUMENT without `qossesaddr`, else UNIMPLEMENTED (§2.8 Quirk).

        Args:
            request: The create request.

        Raises:
            InvalidArgument: "Cannot create session because qosSesAddr not defined."
            Unimplemented: The standalone operator has no QoS session API.
        """
        if not self._qos_addr:
            raise InvalidArgument("Cannot create session because qosSesAddr not defined.")
        raise Unimplemented("QoS priority sessions are not supported by the standalone operator")

    async def delete_session(
        self, request: qos_pb2.QosPrioritySessionDeleteRequest
    ) -> qos_pb2.QosPrioritySessionDeleteReply:
        """An empty reply without `qossesaddr`; UNIMPLEMENTED otherwise.

        Args:
            request: The delete request.

        Returns:
            An empty reply.

        Raises:
            Unimplemented: With `qossesaddr` (no session API to call).
        """
        if not self._qos_addr:
            return qos_pb2.QosPrioritySessionDeleteReply()
        raise Unimplemented("QoS priority sessions are not supported by the standalone operator")

    async def position_kpi(
        self, request: qos_position_pb2.QosPositionRequest
    ) -> list[qos_position_pb2.QosPositionKpiReply]:
        """One reply with random KPIs per position (§2.9).

        Args:
            request: The positions.

        Returns:
            A single RS_SUCCESS reply.
        """
        reply = qos_position_pb2.QosPositionKpiReply(status=appcommon_pb2.ReplyStatus.RS_SUCCESS)
        rng = self._rng
        for pos in request.positions:
            reply.position_results.add(
                positionid=pos.positionid,
                gps_location=pos.gps_location,
                dluserthroughput_min=_kpi(rng, 1),
                dluserthroughput_avg=_kpi(rng, 50),
                dluserthroughput_max=_kpi(rng, 100),
                uluserthroughput_min=_kpi(rng, 1),
                uluserthroughput_avg=_kpi(rng, 25),
                uluserthroughput_max=_kpi(rng, 50),
                latency_min=_kpi(rng, 20),
                latency_avg=_kpi(rng, 40),
                latency_max=_kpi(rng, 60),
            )
        return [reply]
