"""`edge serve SERVICE [daemon flags]`: the same as `python -m services.SERVICE`.

Daemons are found through the `edge_cloud.services` entry-point group, so the core never
imports a service by name.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import Any

GROUP = "edge_cloud.services"

# Start order for `edge local up`: the Controller first (everything dials it), then the rest.
ORDER = ("controller", "ccrm", "crm", "dme", "clustersvc", "shepherd", "autoprov", "edgeturn")


def available() -> list[str]:
    """Names of the installed daemons, in start order."""
    names = {ep.name for ep in importlib.metadata.entry_points(group=GROUP)}
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))


def load(name: str) -> Callable[[list[str]], int]:
    """Import the `main` of one daemon; an unknown name lists the known ones."""
    for ep in importlib.metadata.entry_points(group=GROUP):
        if ep.name == name:
            entry: Callable[[list[str]], int] = ep.load()
            return entry
    known = ", ".join(available()) or "none installed"
    raise LookupError(f"unknown service {name!r} (available: {known})")


def register(commands: Any) -> None:
    """Add the `serve` subcommand (parsing is done by `run`, which passes flags through)."""
    parser = commands.add_parser(
        "serve",
        help="run one daemon in the foreground",
        description="Run one daemon; every argument after SERVICE goes to the daemon.",
    )
    parser.add_argument("service", help="daemon name: " + (", ".join(available()) or "none"))
    parser.add_argument("daemon_args", nargs=argparse.REMAINDER, help="flags for the daemon")


def run(argv: Sequence[str]) -> int:
    """Dispatch to the daemon's own main with the remaining flags."""
    if not argv or argv[0] in ("-h", "--help"):
        names = ", ".join(available()) or "none installed yet"
        print(f"usage: edge serve SERVICE [daemon flags]\n\nservices: {names}")
        return 0 if argv else 2
    try:
        entry = load(argv[0])
    except LookupError as err:
        print(f"edge serve: {err}", file=sys.stderr)
        return 2
    return entry(list(argv[1:]))
