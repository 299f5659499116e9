"""`python -m services.crm`: run the CRM daemon for one cloudlet."""

from __future__ import annotations

import sys

from edge_cloud.server import run_daemon
from services.crm.config import CrmConfig
from services.crm.daemon import CrmDaemon


def main(argv: list[str] | None = None) -> int:
    """Run the CRM until a signal (or its cloudlet's deletion); returns the exit status."""
    return run_daemon(CrmDaemon, CrmConfig, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
