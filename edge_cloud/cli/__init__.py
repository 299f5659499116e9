"""The `edge` command: run daemons, run the whole platform locally, talk to its APIs.

A leaf of the core package: nothing else imports it, so it may pull in Rich and other
terminal-only dependencies freely.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from edge_cloud.cli import apply, ctl, dme, local, serve


def build_parser() -> argparse.ArgumentParser:
    """Assemble the subcommands; each module adds its own parser and handler."""
    parser = argparse.ArgumentParser(prog="edge", description="Edge Cloud Platform command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(commands)
    local.register(commands)
    ctl.register(commands)
    apply.register(commands)
    dme.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `edge` console script; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `edge serve NAME ...` hands every remaining argument to the daemon untouched
    if args_list[:1] == ["serve"]:
        return serve.run(args_list[1:])
    parser = build_parser()
    # `edge <object> <verb> ...` is short for `edge ctl <object> <verb> ...`
    if args_list and ctl.is_object(args_list[0]):
        args_list.insert(0, "ctl")
    args = parser.parse_args(args_list)
    handler = args.handler
    code: int = handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
