"""Fixtures of the k8s deployer tests: the Kubernetes API test server."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("tests.support.k8sapi.fixture")  # `k8s_api_server...`
