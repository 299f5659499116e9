"""`python -m services.ccrm`: run the CCRM daemon."""

from __future__ import annotations

import sys

from edge_cloud.server import run_daemon
from services.ccrm.config import CcrmConfig
from services.ccrm.daemon import CcrmDaemon


def main(argv: list[str] | None = None) -> int:
    """Run the CCRM until a signal; returns the exit status."""
    return run_daemon(CcrmDaemon, CcrmConfig, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
