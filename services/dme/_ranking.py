"""FindCloudlet and GetAppInstList: which instances a device is sent to (dme.md §2.2, §2.6).

The rules are the original's (`pkg/uaem-common/match-engine.go`):

- Candidates are the App's *usable* instances (see `_world`), grouped by operator. With no
  carrier requested every operator's instances are searched; with a carrier (after
  operator-code translation) only that operator's, the public clouds' (`azure`, `gcp`,
  `aws`), and instances on cloudlets listing the carrier (or a public cloud) among their
  alliance organisations. An instance reachable both ways is a candidate twice, as in the
  original.
- Distance is the haversine great-circle distance (Earth radius 6371 km) from the device to
  the instance's cloudlet location, plus 100 km for a public cloud unless no carrier or
  that very cloud was requested.
- Ranking keeps the best N (1 for FindCloudlet, `limit` or 3 for GetAppInstList) by
  distance, then by the AppInst key string. With randomisation on, candidates less than
  1 km apart are ordered by a coin flip per comparison, as the original's insertion does,
  so co-located cloudlets share the load.

Two searches stand behind one interface, `CandidateSearch`: `LinearScan` (the original's
approach, every instance every time) and `SpatialIndex` (a k-d tree per operator on
unit-sphere coordinates). Both return the same *window*: every candidate whose distance is
below the N-th best distance + 1 km (or among the N best), sorted. Ranking then takes the
first N, or shuffles the window and replays the original's randomised insertion on it, so
both searches give identical answers for the same random source, ties and all.

The window is also where the rebuild narrows the original's randomness: the original fed
candidates in Go map order, so a chain of instances each less than 1 km beyond the last
could drift the answer arbitrarily far from the nearest one. Here only instances within
1 km of the N-th best take part in the coin flips (documented deviation; the common case,
co-located cloudlets, is unchanged).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple, Protocol, TypeAlias

from distributed_match_engine import app_client_pb2, loc_pb2

from edge_cloud.errors import InvalidArgument
from services.dme._names import PUBLIC_CLOUDS, is_platform_app
from services.dme._world import AppKey, Instance, World

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "EARTH_RADIUS_KM",
    "PUBLIC_CLOUD_PAD_KM",
    "VERY_CLOSE_KM",
    "Candidate",
    "CandidateSearch",
    "LinearScan",
    "MatchEngine",
    "SpatialIndex",
    "app_inst_list_reply",
    "distance_km",
    "find_cloudlet_reply",
    "pad_km",
    "require_list_location",
    "select",
    "validate_location",
]

EARTH_RADIUS_KM: Final = 6371.0
"""The original's `radiusofearth`."""

VERY_CLOSE_KM: Final = 1.0
"""Candidates closer than this to each other are equivalent (`VeryCloseDistanceKm`)."""

PUBLIC_CLOUD_PAD_KM: Final = 100.0
"""Added to public-cloud distances when a different carrier was asked for."""

DEFAULT_LIST_LIMIT: Final = 3
"""GetAppInstList's result count when the request's `limit` is 0."""

_DEG: Final = math.pi / 180
_CHORD_SLACK: Final = 1e-9
"""Unit-sphere chord slack (6 µm on Earth) absorbing rounding between the 3-D chord the
index prunes with and the haversine distance both searches rank by."""


# --- distance --------------------------------------------------------------------------------


def _haversine(
    lat1: float, lon1: float, cos1: float, lat2: float, lon2: float, cos2: float
) -> float:
    """The original's `DistanceBetween` with the two cosines precomputed.

    Operation order matches the Go code, so the floats (and with them exact ties) are the
    ones the original computes, up to the last bit of the platform's `sin`.
    """
    try:
        half_dlat = math.sin((lat2 - lat1) * math.pi / 180 / 2)
        half_dlon = math.sin((lon2 - lon1) * math.pi / 180 / 2)
        a = half_dlat * half_dlat + half_dlon * half_dlon * cos1 * cos2
        return 2 * math.atan2(math.sqrt(a), math.sqrt(1 - a)) * EARTH_RADIUS_KM
    except ValueError:  # sqrt of a rounding-negative or sin(inf): Go yields NaN
        return math.nan


def _cos_deg(deg: float) -> float:
    try:
        return math.cos(deg * math.pi / 180)
    except ValueError:
        return math.nan


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance by the haversine formula, as the original computes it.

    Args:
        lat1: Latitude of the first point (the device), degrees.
        lon1: Its longitude.
        lat2: Latitude of the second point (the cloudlet).
        lon2: Its longitude.

    Returns:
        Kilometres on a 6371 km sphere; NaN where Go's arithmetic gives NaN (infinite
        input, or exactly antipodal points rounding past the formula's domain).
    """
    return _haversine(lat1, lon1, _cos_deg(lat1), lat2, lon2, _cos_deg(lat2))


def pad_km(req_carrier: str, operator: str) -> float:
    """The public-cloud padding of the original's `padDistance`.

    Args:
        req_carrier: The requested carrier after translation ("" for any).
        operator: The organisation the candidate was found under.

    Returns:
        100 for a public cloud when another carrier was requested, else 0.
    """
    if operator in PUBLIC_CLOUDS and req_carrier and req_carrier != operator:
        return PUBLIC_CLOUD_PAD_KM
    return 0.0


def _searched(req_carrier: str, operator: str) -> bool:
    """The original's `searchCarrier`."""
    return not req_carrier or operator in PUBLIC_CLOUDS or operator == req_carrier


# --- candidates and windows ------------------------------------------------------------------


class Candidate(NamedTuple):
    """An instance found for a device, with its padded distance.

    Attributes:
        distance: Kilometres, public-cloud padding included (GetAppInstList reports it).
        instance: The instance.
        carrier: The organisation it was found under: its operator, or the alliance
            organisation that brought it in (API statistics report this one).
    """

    distance: float
    instance: Instance
    carrier: str


def _order(c: Candidate) -> tuple[float, str, str]:
    # NaN distances (only from NaN/inf input) sort last, as no comparison ever puts a NaN
    # candidate before another in the original's insertion.
    d = c.distance
    return (d if d == d else math.inf, c.instance.key_string, c.carrier)


def _window(ordered: list[Candidate], limit: int) -> list[Candidate]:
    """The best `limit` candidates plus all within 1 km of the last of them."""
    if len(ordered) <= limit:
        return ordered
    cut = ordered[limit - 1].distance + VERY_CLOSE_KM
    end = limit
    while end < len(ordered) and ordered[end].distance < cut:
        end += 1
    return ordered[:end]


class CandidateSearch(Protocol):
    """Finds the ranking window for one request; the two implementations must agree."""

    def candidates(
        self, app: AppKey, lat: float, lon: float, carrier: str, limit: int
    ) -> list[Candidate]:
        """The window of usable candidates for a device.

        Args:
            app: The App whose instances are searched.
            lat: Device latitude, degrees.
            lon: Device longitude, degrees.
            carrier: Requested carrier, already translated from an operator code.
            limit: N, at least 1.

        Returns:
            All candidates among the N best or less than N-th best + 1 km away, sorted by
            (distance, key string, carrier).
        """
        ...


class LinearScan:
    """The original's search: look at every instance of the App on every request.

    Args:
        world: Where the instances live.
    """

    def __init__(self, world: World) -> None:
        self._world = world

    def candidates(
        self, app: AppKey, lat: float, lon: float, carrier: str, limit: int
    ) -> list[Candidate]:
        """See `CandidateSearch.candidates`."""
        return _scan(self._world.instances_of(app), lat, lon, carrier, limit)


def _scan(
    instances: Iterable[Instance], lat: float, lon: float, carrier: str, limit: int
) -> list[Candidate]:
    cos_lat = _cos_deg(lat)
    hav = _haversine
    found: list[tuple[float, Instance, str]] = []
    for inst in instances:
        if not inst.usable:
            continue
        distance = hav(lat, lon, cos_lat, inst.lat, inst.lon, inst.cos_lat)
        operator = inst.operator
        if _searched(carrier, operator):
            found.append((distance + pad_km(carrier, operator), inst, operator))
        if carrier:
            for alliance in inst.alliances:
                if _searched(carrier, alliance):
                    found.append((distance + pad_km(carrier, alliance), inst, alliance))
    if len(found) > limit:
        # Only candidates within 1 km of the N-th best can be in the window; drop the rest
        # before sorting (all of them stay when NaN distances leave fewer than N finite).
        nth = heapq.nsmallest(limit, [d if d == d else math.inf for d, _, _ in found])[-1]
        if nth != math.inf:
            cut = nth + VERY_CLOSE_KM
            found = [f for f in found if f[0] < cut]
    ordered = sorted((Candidate(*f) for f in found), key=_order)
    return _window(ordered, limit)


# --- the spatial index -------------------------------------------------------------------------


def _indexable(lat: float, lon: float) -> bool:
    # Outside these ranges the 3-D embedding still matches the haversine formula exactly in
    # theory, but huge angles lose the precision the pruning slack assumes.
    return -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0


def _unit_vector(lat: float, lon: float) -> tuple[float, float, float]:
    phi = lat * _DEG
    lam = lon * _DEG
    c = math.cos(phi)
    return (c * math.cos(lam), c * math.sin(lam), math.sin(phi))


class _Point:
    """One placement of an instance in one tree."""

    __slots__ = ("alive", "carrier", "inst", "xyz")

    def __init__(self, inst: Instance, carrier: str, xyz: tuple[float, float, float]) -> None:
        self.inst = inst
        self.carrier = carrier
        self.alive = True
        self.xyz = xyz


_Leaf: TypeAlias = list[tuple[float, float, float, _Point]]
_Inner: TypeAlias = tuple[int, float, "_Inner | _Leaf", "_Inner | _Leaf"]
_Node: TypeAlias = _Inner | _Leaf


def _build(items: list[tuple[float, float, float, _Point]], leaf_size: int) -> _Node:
    """A k-d tree: split on the widest axis at the median until leaves are small."""
    if len(items) <= leaf_size:
        return items
    columns = [[item[:3][axis] for item in items] for axis in range(3)]
    spans = [max(column) - min(column) for column in columns]
    axis = spans.index(max(spans))
    order = sorted(range(len(items)), key=columns[axis].__getitem__)
    items = [items[i] for i in order]
    mid = len(items) // 2
    split = columns[axis][order[mid]]
    # Points equal to `split` may sit on both sides; the search's plane bound stays valid
    # because every low point is <= split and every high point is >= split.
    return (axis, split, _build(items[:mid], leaf_size), _build(items[mid:], leaf_size))


class _Collector:
    """Gathers candidates and tracks the bound beyond which none can enter the window."""

    __slots__ = ("best", "cut", "found", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.found: list[Candidate] = []
        self.best: list[float] = []  # max-heap (negated) of the `limit` smallest distances
        self.cut = math.inf

    def add(self, distance: float, inst: Instance, carrier: str) -> None:
        self.found.append(Candidate(distance, inst, carrier))
        d = distance if distance == distance else math.inf
        if len(self.best) < self.limit:
            heapq.heappush(self.best, -d)
        elif d < -self.best[0]:
            heapq.heapreplace(self.best, -d)
        else:
            return
        if len(self.best) == self.limit:
            self.cut = -self.best[0] + VERY_CLOSE_KM

    def chord2_bound(self, pad: float) -> float:
        """Squared unit chord beyond which a point of a tree with this padding is out."""
        reach = (self.cut - pad) / (2 * EARTH_RADIUS_KM)
        if not reach < math.pi / 2:  # also for an infinite or NaN cut
            return math.inf
        if reach < 0:
            return -1.0
        chord = 2 * math.sin(reach) + _CHORD_SLACK
        return chord * chord


class _Tree:
    """The placements of one App's instances under one organisation (or all of them).

    Changes go to an unsorted overflow list and tombstones; the tree is rebuilt at the
    next search once they outnumber an eighth of it, so bursts of notify updates cost one
    rebuild and a steady trickle costs amortised O(log n) each.
    """

    __slots__ = ("_extra", "_leaf_size", "_min_rebuild", "_odd", "_points", "_root", "_stale")

    def __init__(self, leaf_size: int, min_rebuild: int) -> None:
        self._leaf_size = max(1, leaf_size)
        self._min_rebuild = min_rebuild
        self._points: dict[tuple[object, str, bool], _Point] = {}
        self._root: _Node = []
        self._extra: list[_Point] = []
        self._odd: dict[tuple[object, str, bool], _Point] = {}
        self._stale = 0

    def __len__(self) -> int:
        return len(self._points) + len(self._odd)

    def add(self, inst: Instance, carrier: str, *, alliance: bool = False) -> None:
        # An instance may sit in one tree twice: under its operator and under an alliance
        # organisation of the same name; the original then finds it twice, and so do we.
        ident = (inst.key, carrier, alliance)
        if not _indexable(inst.lat, inst.lon):  # NaN, or out of range: always scanned
            self._odd[ident] = _Point(inst, carrier, (0.0, 0.0, 0.0))
            return
        point = _Point(inst, carrier, _unit_vector(inst.lat, inst.lon))
        self._points[ident] = point
        self._extra.append(point)

    def remove(self, inst: Instance, carrier: str, *, alliance: bool = False) -> None:
        ident = (inst.key, carrier, alliance)
        if self._odd.pop(ident, None) is not None:
            return
        point = self._points.pop(ident, None)
        if point is not None:
            point.alive = False
            self._stale += 1

    def _maybe_rebuild(self) -> None:
        if len(self._extra) + self._stale > max(self._min_rebuild, len(self._points) >> 3):
            items = [(*p.xyz, p) for p in self._points.values()]
            self._root = _build(items, self._leaf_size)
            self._extra = []
            self._stale = 0

    def search(
        self,
        q: tuple[float, float, float],
        lat: float,
        lon: float,
        cos_lat: float,
        pad: float,
        out: _Collector,
    ) -> None:
        self._maybe_rebuild()
        qx, qy, qz = q
        bound2 = out.chord2_bound(pad)
        if bound2 < 0:
            return
        hav = _haversine
        stack: list[tuple[_Node, float]] = [(self._root, 0.0)]
        pop, push = stack.pop, stack.append
        while stack:
            node, lb2 = pop()
            if lb2 > bound2:
                continue
            while isinstance(node, tuple):
                axis, split, low, high = node
                diff = q[axis] - split
                if diff < 0:
                    if diff * diff <= bound2:
                        push((high, diff * diff))
                    node = low
                else:
                    if diff * diff <= bound2:
                        push((low, diff * diff))
                    node = high
            if bound2 == math.inf:  # nothing found yet: nearest first, to bound the rest
                node = sorted(
                    node, key=lambda i: (i[0] - qx) ** 2 + (i[1] - qy) ** 2 + (i[2] - qz) ** 2
                )
            for x, y, z, point in node:
                dx = x - qx
                dy = y - qy
                dz = z - qz
                if dx * dx + dy * dy + dz * dz <= bound2 and point.alive:
                    inst = point.inst
                    if inst.usable:
                        d = hav(lat, lon, cos_lat, inst.lat, inst.lon, inst.cos_lat) + pad
                        out.add(d, inst, point.carrier)
                        bound2 = out.chord2_bound(pad)
        for point in self._extra:
            x, y, z = point.xyz
            dx = x - qx
            dy = y - qy
            dz = z - qz
            if dx * dx + dy * dy + dz * dz <= bound2 and point.alive:
                inst = point.inst
                if inst.usable:
                    d = hav(lat, lon, cos_lat, inst.lat, inst.lon, inst.cos_lat) + pad
                    out.add(d, inst, point.carrier)
                    bound2 = out.chord2_bound(pad)
        for point in self._odd.values():
            inst = point.inst
            if inst.usable:
                d = hav(lat, lon, cos_lat, inst.lat, inst.lon, inst.cos_lat) + pad
                out.add(d, inst, point.carrier)


class _AppTrees:
    __slots__ = ("all", "by_org")

    def __init__(self, all_tree: _Tree) -> None:
        self.all = all_tree  # own-operator placements, for requests without a carrier
        self.by_org: dict[str, _Tree] = {}  # operator and alliance placements


class SpatialIndex:
    """Nearest-candidate search with a k-d tree per (App, organisation).

    Instances sit on the unit sphere as 3-D points; the straight-line (chord) distance
    between two such points orders them exactly as the great-circle distance does, with
    no trouble at the poles or the antimeridian. The index prunes with chords (plus a
    slack far above rounding error) and ranks with the same haversine as the scan, so the
    answers are the scan's. It keeps itself current as a `PlacementListener` of the world
    and reads usability at search time, so cloudlet state changes cost nothing here.

    Args:
        world: The world to index; the index registers itself as its listener.
        leaf_size: Points per k-d tree leaf (8 measured best; tests use tiny leaves to
            exercise deep trees with few points).
        min_rebuild: Pending changes a tree tolerates before its next search rebuilds it
            (above an eighth of its size); changes wait in an unsorted list until then.
    """

    def __init__(self, world: World, *, leaf_size: int = 8, min_rebuild: int = 32) -> None:
        self._world = world
        self._leaf_size = leaf_size
        self._min_rebuild = min_rebuild
        self._apps: dict[AppKey, _AppTrees] = {}
        world.add_listener(self)

    def _tree(self) -> _Tree:
        return _Tree(self._leaf_size, self._min_rebuild)

    def placed(self, inst: Instance) -> None:
        """See `PlacementListener.placed`."""
        trees = self._apps.get(inst.app_key)
        if trees is None:
            trees = self._apps[inst.app_key] = _AppTrees(self._tree())
        trees.all.add(inst, inst.operator)
        for org, alliance in ((inst.operator, False), *((a, True) for a in inst.alliances)):
            tree = trees.by_org.get(org)
            if tree is None:
                tree = trees.by_org[org] = self._tree()
            tree.add(inst, org, alliance=alliance)

    def unplaced(self, inst: Instance) -> None:
        """See `PlacementListener.unplaced`."""
        trees = self._apps.get(inst.app_key)
        if trees is None:
            return
        trees.all.remove(inst, inst.operator)
        for org, alliance in ((inst.operator, False), *((a, True) for a in inst.alliances)):
            tree = trees.by_org.get(org)
            if tree is not None:
                tree.remove(inst, org, alliance=alliance)
                if not len(tree):
                    del trees.by_org[org]
        if not len(trees.all):
            del self._apps[inst.app_key]

    def candidates(
        self, app: AppKey, lat: float, lon: float, carrier: str, limit: int
    ) -> list[Candidate]:
        """See `CandidateSearch.candidates`."""
        trees = self._apps.get(app)
        if trees is None:
            return []
        if not _indexable(lat, lon):  # GetAppInstList does not range-check; scan those
            return _scan(self._world.instances_of(app), lat, lon, carrier, limit)
        if carrier:
            names = {carrier, *PUBLIC_CLOUDS}
            searched = sorted(
                ((pad_km(carrier, org), org) for org in names if org in trees.by_org),
            )
            tree_list = [(pad, trees.by_org[org]) for pad, org in searched]
        else:
            tree_list = [(0.0, trees.all)]
        q = _unit_vector(lat, lon)
        cos_lat = _cos_deg(lat)
        out = _Collector(limit)
        for pad, tree in tree_list:
            tree.search(q, lat, lon, cos_lat, pad, out)
        out.found.sort(key=_order)
        return _window(out.found, limit)


# --- ranking -----------------------------------------------------------------------------------


def _very_close(a: Candidate, b: Candidate) -> bool:
    if a.distance > b.distance:
        return a.distance - b.distance < VERY_CLOSE_KM
    return b.distance - a.distance < VERY_CLOSE_KM


def _less(a: Candidate, b: Candidate) -> bool:
    if a.distance == b.distance:
        return a.instance.key_string < b.instance.key_string
    return a.distance < b.distance


def select(window: Sequence[Candidate], limit: int, rng: random.Random | None) -> list[Candidate]:
    """Pick the final N from a search window.

    Args:
        window: What a `CandidateSearch` returned (sorted).
        limit: N.
        rng: The random source for near ties, or None for the deterministic order the
            original uses under `E2ETEST_NORANDOM=true` (distance, then key string).

    Returns:
        Up to N candidates, best first.
    """
    if rng is None:
        return list(window[:limit])
    order = list(window)
    rng.shuffle(order)
    results: list[Candidate] = []
    for found in order:  # the original's insertResult
        for ii, ai in enumerate(results):
            if _very_close(found, ai):
                if rng.random() > 0.5:
                    continue
            elif not _less(found, ai):
                continue
            results.insert(ii, found)
            del results[limit:]
            break
        else:
            if len(results) < limit:
                results.append(found)
    return results


class MatchEngine:
    """FindCloudlet's and GetAppInstList's searches over the world.

    Args:
        world: The region's model.
        search: The candidate search (`SpatialIndex` in the daemon).
        rng: Random source for near ties; None disables randomisation
            (`E2ETEST_NORANDOM=true`).
    """

    def __init__(
        self, world: World, search: CandidateSearch, *, rng: random.Random | None = None
    ) -> None:
        self._world = world
        self._search = search
        self._rng = rng

    def find_cloudlet(self, app: AppKey, carrier: str, lat: float, lon: float) -> Candidate | None:
        """The instance FindCloudlet (and PlatformFindCloudlet) returns, if any.

        Args:
            app: The calling App (or the client token's App).
            carrier: The request's `carrier_name`, untranslated.
            lat: Device latitude (already validated by `validate_location`).
            lon: Device longitude.

        Returns:
            The best usable candidate, or None for FIND_NOTFOUND: also for a platform
            app itself and for an unknown App.
        """
        if is_platform_app(app.organization, app.name) or self._world.app(app) is None:
            return None
        found = self._rank(app, carrier, lat, lon, 1)
        return found[0] if found else None

    def app_inst_list(
        self, app: AppKey, carrier: str, lat: float, lon: float, limit: int
    ) -> list[Candidate]:
        """The instances GetAppInstList returns, best first.

        Args:
            app: The calling App.
            carrier: The request's `carrier_name`, untranslated.
            lat: Device latitude (not range-checked, as in the original).
            lon: Device longitude.
            limit: The request's `limit`; 0 means 3.

        Returns:
            Up to `limit` candidates; empty for an unknown App.
        """
        if self._world.app(app) is None:
            return []
        return self._rank(app, carrier, lat, lon, limit or DEFAULT_LIST_LIMIT)

    def _rank(
        self, app: AppKey, carrier: str, lat: float, lon: float, limit: int
    ) -> list[Candidate]:
        req_carrier = self._world.translate_carrier(carrier)
        window = self._search.candidates(app, lat, lon, req_carrier, limit)
        return select(window, limit, self._rng)


# --- requests and replies ----------------------------------------------------------------------


def validate_location(loc: loc_pb2.Loc | None) -> loc_pb2.Loc:
    """The original's `ValidateLocation` (FindCloudlet, GetAppOfficialFqdn, edge events).

    Args:
        loc: The request's location, None when the field is absent.

    Returns:
        The location, for chaining.

    Raises:
        InvalidArgument: "Missing GpsLocation", or "Invalid GpsLocation" when latitude is
            outside [-90, 90] or longitude outside [-180, 180]; (0, 0) is valid.
    """
    if loc is None:
        raise InvalidArgument("Missing GpsLocation")
    if not (-90 <= loc.latitude <= 90 and -180 <= loc.longitude <= 180):
        raise InvalidArgument("Invalid GpsLocation")
    return loc


def require_list_location(loc: loc_pb2.Loc | None) -> loc_pb2.Loc:
    """GetAppInstList's only location check: presence, with its own wording.

    Args:
        loc: The request's location, None when absent.

    Returns:
        The location (coordinates are not range-checked here).

    Raises:
        InvalidArgument: "Missing GPS location".
    """
    if loc is None:
        raise InvalidArgument("Missing GPS location")
    return loc


APPINST_TAG: Final = "appinst"
"""Reply tag naming the found AppInst (the original's `AppInstKeyTagName`)."""
APPINST_ORG_TAG: Final = "appinstorg"
"""Reply tag naming the found AppInst's organisation."""


def find_cloudlet_reply(
    found: Candidate | None, edge_events_cookie: Callable[[Instance], str]
) -> app_client_pb2.FindCloudletReply:
    """Build a FindCloudlet reply (QoS fields are the caller's to fill).

    Args:
        found: What `MatchEngine.find_cloudlet` returned.
        edge_events_cookie: Signs the edge-events cookie for the instance (with the
            request's location).

    Returns:
        FIND_FOUND with fqdn, ports, cloudlet location, cookie and the `appinst` /
        `appinstorg` tags; or FIND_NOTFOUND with an empty, present `cloudlet_location`.
    """
    if found is None:
        reply = app_client_pb2.FindCloudletReply(
            status=app_client_pb2.FindCloudletReply.FIND_NOTFOUND
        )
        reply.cloudlet_location.SetInParent()
        return reply
    inst = found.instance
    template = inst.reply_template
    if template is None:
        # everything but the cookie is the same for every client of the instance: built
        # once (until `World` updates the instance), parsed per call, which upb does in a
        # fraction of the time the field-by-field build takes
        reply = app_client_pb2.FindCloudletReply(status=app_client_pb2.FindCloudletReply.FIND_FOUND)
        reply.fqdn = inst.uri
        reply.ports.extend(inst.ports)
        reply.cloudlet_location.CopyFrom(inst.location)
        reply.tags[APPINST_TAG] = inst.key.name
        reply.tags[APPINST_ORG_TAG] = inst.key.organization
        template = inst.reply_template = reply.SerializeToString()
    reply = app_client_pb2.FindCloudletReply.FromString(template)
    reply.cloudlet_location.SetInParent()  # present even when the location is all zero
    reply.edge_events_cookie = edge_events_cookie(inst)
    return reply


def app_inst_list_reply(
    app: AppKey, found: Sequence[Candidate], edge_events_cookie: Callable[[Instance], str]
) -> app_client_pb2.AppInstListReply:
    """Build a GetAppInstList reply: instances grouped by cloudlet, best first.

    Args:
        app: The calling App (each `Appinstance` names it).
        found: What `MatchEngine.app_inst_list` returned.
        edge_events_cookie: Signs a fresh edge-events cookie per instance.

    Returns:
        AI_SUCCESS (also when empty); each cloudlet appears once, where its first instance
        ranked, with that instance's location and padded distance.
    """
    reply = app_client_pb2.AppInstListReply(status=app_client_pb2.AppInstListReply.AI_SUCCESS)
    by_cloudlet: dict[object, app_client_pb2.CloudletLocation] = {}
    for candidate in found:
        inst = candidate.instance
        cloc = by_cloudlet.get(inst.cloudlet_key)
        if cloc is None:
            cloc = reply.cloudlets.add(
                carrier_name=inst.cloudlet_key.organization,
                cloudlet_name=inst.cloudlet_key.name,
                distance=candidate.distance,
            )
            cloc.gps_location.CopyFrom(inst.location)
            by_cloudlet[inst.cloudlet_key] = cloc
        cloc.appinstances.add(
            app_name=app.name,
            app_vers=app.version,
            org_name=app.organization,
            fqdn=inst.uri,
            ports=inst.ports,
            edge_events_cookie=edge_events_cookie(inst),
        )
    return reply
