"""Fixtures of the awseks tests: the real-server plugin, whose moto has AWS's IAM policies."""

from __future__ import annotations

import pytest

from edge_cloud.localservers import ServerProcess
from tests.support import servers


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("edge-servers"):
        config.pluginmanager.register(servers, "edge-servers")
    config.pluginmanager.import_plugin("tests.support.k8sapi.fixture")  # `k8s_api_server...`


@pytest.fixture(scope="session")
def eks_moto(moto_server: ServerProcess) -> ServerProcess:
    """The session's moto (`start_moto` loads AWS's managed IAM policies the EKS roles attach).

    One moto for both AWS plugins, the conformance suite and the e2e tests: moto's first
    EC2 call in a region loads its instance-type catalogue for seconds, paid once.
    """
    return moto_server
