"""A Kubernetes API server for tests, faithful to what the official client sees.

`KubeApiServer` runs in-process (aiohttp, loopback); `k8s_api_server` is its pytest fixture;
`python -m tests.support.k8sapi --port P --token T` runs it as a subprocess for daemons
started by e2e tests. See `server.py` for what it implements.
"""

from tests.support.k8sapi._auth import eks_token_checker, eks_token_problem
from tests.support.k8sapi._cluster import ClusterBehaviour, NodeSpec
from tests.support.k8sapi.fixture import k8s_api_server, k8s_api_server_factory
from tests.support.k8sapi.server import KubeApiServer

__all__ = [
    "ClusterBehaviour",
    "KubeApiServer",
    "NodeSpec",
    "eks_token_checker",
    "eks_token_problem",
    "k8s_api_server",
    "k8s_api_server_factory",
]
