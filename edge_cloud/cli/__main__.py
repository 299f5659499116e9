"""`python -m edge_cloud.cli` is the same as `edge`."""

import sys

from edge_cloud.cli import main

sys.exit(main())
