"""Fixtures of the awseks tests: the real-server plugin, and a moto with AWS's IAM policies."""

from __future__ import annotations

import pytest

from edge_cloud.localservers import ServerProcess
from platforms.awseks.tests.support import shared_iam_moto
from tests.support import servers
from tests.support.k8sapi import fixture as k8s_fixture


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("edge-servers"):
        config.pluginmanager.register(servers, "edge-servers")
    # `k8s_api_server...`; registered as an object: support.py has imported it already
    if not config.pluginmanager.has_plugin(k8s_fixture.__name__):
        config.pluginmanager.register(k8s_fixture, k8s_fixture.__name__)


@pytest.fixture(scope="session")
def eks_moto(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """moto in server mode with AWS's managed IAM policies, for the whole run."""
    return shared_iam_moto(tmp_path_factory.mktemp("eks_moto"))
