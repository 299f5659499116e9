"""`python -m tests.support.vault --port P --token T [--ready-file F]`: serve until SIGTERM."""

from __future__ import annotations

import os
import sys

# Must precede the first aiohttp import: hvac's LIST requests need the pure-Python parser.
os.environ["AIOHTTP_NO_EXTENSIONS"] = "1"

from tests.support.vault import _server  # after the switch above

if __name__ == "__main__":
    sys.exit(_server.main(sys.argv[1:]))
