"""FindCloudlet candidate search: the spatial index against the original's linear scan.

One App with 10,000 AppInsts spread over a continent (seeded: mostly clustered around
metro areas, some rural), one cloudlet each, five operators including two public clouds.
Random device positions over the same area are searched with both implementations in the
same run; the answers are compared before anything is timed. Per-query latency is the
in-process search (`MatchEngine.find_cloudlet` / `app_inst_list`, randomisation off), no
gRPC, no cookies.

Usage: python bench/dme_ranking.py [--instances 10000] [--queries 2000] [--scan-queries 200]

The issue's goal: index p50 <= 50 us and >= 10x faster than the scan.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, cloudletkey_pb2, common_pb2

from services.dme._ranking import LinearScan, MatchEngine, SpatialIndex
from services.dme._world import AppKey, World

# Roughly the contiguous United States.
LAT_MIN, LAT_MAX = 25.0, 49.0
LON_MIN, LON_MAX = -124.0, -67.0
OPERATORS = ("dmuus", "opalpha", "opbeta", "azure", "gcp")
APP = AppKey("devorg", "bench-app", "1.0")


def build_world(instances: int, rng: random.Random) -> World:
    world = World()
    world.update_app(
        app_pb2.App(key=app_pb2.AppKey(organization=APP[0], name=APP[1], version=APP[2]))
    )
    metros = [(rng.uniform(LAT_MIN, LAT_MAX), rng.uniform(LON_MIN, LON_MAX)) for _ in range(60)]
    for i in range(instances):
        if rng.random() < 0.7:
            mlat, mlon = rng.choice(metros)
            lat = min(LAT_MAX, max(LAT_MIN, rng.gauss(mlat, 0.5)))
            lon = min(LON_MAX, max(LON_MIN, rng.gauss(mlon, 0.6)))
        else:
            lat, lon = rng.uniform(LAT_MIN, LAT_MAX), rng.uniform(LON_MIN, LON_MAX)
        loc = loc_pb2.Loc(latitude=lat, longitude=lon)
        ckey = cloudletkey_pb2.CloudletKey(organization=OPERATORS[i % 5], name=f"cloudlet{i}")
        world.update_cloudlet(cloudlet_pb2.Cloudlet(key=ckey, location=loc))
        world.update_cloudlet_info(
            cloudlet_pb2.CloudletInfo(key=ckey, state=appcommon_pb2.CLOUDLET_STATE_READY)
        )
        world.update_app_inst(
            appinst_pb2.AppInst(
                key=appinst_pb2.AppInstKey(name=f"inst{i}", organization=APP[0]),
                app_key=app_pb2.AppKey(organization=APP[0], name=APP[1], version=APP[2]),
                cloudlet_key=ckey,
                cloudlet_loc=loc,
                uri=f"inst{i}.cloudlet{i}.example.net",
                state=common_pb2.TrackedState.READY,
                health_check=appcommon_pb2.HEALTH_CHECK_OK,
            )
        )
    return world


def timed(call: Callable[[float, float], object], points: list[tuple[float, float]]) -> list[float]:
    gc.collect()
    out = []
    clock = time.perf_counter_ns
    for lat, lon in points:
        start = clock()
        call(lat, lon)
        out.append((clock() - start) / 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--scan-queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20240601)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    world = build_world(args.instances, rng)
    index = MatchEngine(world, SpatialIndex(world))
    scan = MatchEngine(world, LinearScan(world))
    points = [
        (rng.uniform(LAT_MIN, LAT_MAX), rng.uniform(LON_MIN, LON_MAX)) for _ in range(args.queries)
    ]
    scan_points = points[: args.scan_queries]

    cases: list[tuple[str, Callable[[MatchEngine], Callable[[float, float], object]]]] = [
        ("find_cloudlet carrier=''", lambda e: lambda la, lo: e.find_cloudlet(APP, "", la, lo)),
        (
            "find_cloudlet carrier=dmuus",
            lambda e: lambda la, lo: e.find_cloudlet(APP, "dmuus", la, lo),
        ),
        (
            "app_inst_list limit=3",
            lambda e: lambda la, lo: e.app_inst_list(APP, "", la, lo, 3),
        ),
    ]
    # Same answers first (also builds the index's trees, outside the timed loop).
    for _, make in cases:
        for lat, lon in scan_points[:100]:
            a, b = make(index)(lat, lon), make(scan)(lat, lon)
            if a != b:
                print(f"MISMATCH at {lat},{lon}: {a} != {b}", file=sys.stderr)
                return 1

    print(
        f"env: python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, cpus={os.cpu_count()}, cpu={cpu_model()}"
    )
    print(
        f"world: {args.instances} AppInsts of one App, {len(OPERATORS)} operators; "
        f"queries: index {len(points)}, scan {len(scan_points)} (the first of the same points)"
    )
    for name, make in cases:
        idx_us = timed(make(index), points)
        scan_us = timed(make(scan), scan_points)
        idx_p50, scan_p50 = statistics.median(idx_us), statistics.median(scan_us)
        print(
            f"{name}: index p50={idx_p50:.1f}us p99={pct(idx_us, 0.99):.1f}us | "
            f"scan p50={scan_p50:.1f}us p99={pct(scan_us, 0.99):.1f}us | "
            f"scan/index p50 ratio={scan_p50 / idx_p50:.0f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
