"""`python -m services.controller`: run the Controller daemon."""

from __future__ import annotations

import sys

from edge_cloud.server import run_daemon
from services.controller.config import ControllerConfig
from services.controller.daemon import ControllerDaemon


def main(argv: list[str] | None = None) -> int:
    """Run the Controller until a signal; returns the exit status."""
    return run_daemon(ControllerDaemon, ControllerConfig, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
