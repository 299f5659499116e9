"""Fixtures of the awseks tests: the real-server plugin, and a moto with AWS's IAM policies."""

from __future__ import annotations

import pytest

from edge_cloud.localservers import ServerProcess
from platforms.awseks.tests.support import shared_iam_moto
from tests.support import servers


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("edge-servers"):
        config.pluginmanager.register(servers, "edge-servers")
    config.pluginmanager.import_plugin("tests.support.k8sapi.fixture")  # `k8s_api_server...`


@pytest.fixture(scope="session")
def eks_moto(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """moto in server mode with AWS's managed IAM policies, for the whole run."""
    return shared_iam_moto(tmp_path_factory.mktemp("eks_moto"))
