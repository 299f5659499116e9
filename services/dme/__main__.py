"""`python -m services.dme` (or `edge serve dme`): run the DME daemon."""

from __future__ import annotations

import sys

from edge_cloud.server import run_daemon
from services.dme.config import DmeConfig
from services.dme.daemon import DmeDaemon


def main(argv: list[str] | None = None) -> int:
    """Run the DME until a signal; returns the exit status."""
    return run_daemon(DmeDaemon, DmeConfig, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
