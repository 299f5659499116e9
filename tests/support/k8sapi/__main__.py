"""Run the Kubernetes API test server as a process: `python -m tests.support.k8sapi`.

For daemons started as subprocesses by e2e tests (a CCRM deploying apps). It prints one
line, `k8sapi listening on <url>`, once it serves, writes the kubeconfig if asked, and runs
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from tests.support.k8sapi._auth import TokenChecker, eks_token_checker
from tests.support.k8sapi._cluster import ClusterBehaviour, NodeSpec
from tests.support.k8sapi.server import KubeApiServer


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.support.k8sapi")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default="test-token", help="the static bearer token")
    parser.add_argument("--plain-http", action="store_true", help="serve HTTP instead of HTTPS")
    parser.add_argument("--eks-tokens", action="store_true", help="also accept EKS tokens")
    parser.add_argument(
        "--sts-host",
        action="append",
        default=[],
        help="host:port of an STS emulator EKS tokens may be presigned for (repeatable)",
    )
    parser.add_argument(
        "--eks-cluster",
        action="append",
        default=[],
        help="cluster name EKS tokens must sign (repeatable; with K8SAPI_EKS_ACCOUNTS)",
    )
    parser.add_argument("--nodes", type=int, default=2, help="number of fake nodes")
    parser.add_argument("--lb-pool", default="203.0.113.10,203.0.113.11,203.0.113.12,203.0.113.13")
    parser.add_argument("--ready-delay", type=float, default=0.0)
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubeconfig here once serving")
    return parser.parse_args(argv)


def _eks_checker(args: argparse.Namespace) -> TokenChecker:
    """EKS token checks; signatures verified when `K8SAPI_EKS_ACCOUNTS` names the accounts.

    The accounts (`KEYID=SECRET,...`) come from the environment, not the command line, so
    secrets do not show in process listings.
    """
    raw = os.environ.get("K8SAPI_EKS_ACCOUNTS", "")
    accounts = dict(item.split("=", 1) for item in raw.split(",") if "=" in item) or None
    if accounts is not None and not args.eks_cluster:
        raise SystemExit("K8SAPI_EKS_ACCOUNTS set: name the cluster(s) with --eks-cluster")
    return eks_token_checker(args.sts_host, accounts=accounts, clusters=args.eks_cluster)


async def _main(args: argparse.Namespace) -> None:
    server = KubeApiServer(
        token=args.token,
        token_checker=_eks_checker(args) if args.eks_tokens else None,
        tls=not args.plain_http,
        host=args.host,
        port=args.port,
        nodes=[NodeSpec(f"node-{n + 1}") for n in range(args.nodes)],
        behaviour=ClusterBehaviour(
            ready_delay=args.ready_delay,
            lb_pool=[ip for ip in args.lb_pool.split(",") if ip],
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if args.kubeconfig_out is not None:
            args.kubeconfig_out.write_bytes(server.kubeconfig())
        print(f"k8sapi listening on {server.url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(_parse(sys.argv[1:])))
