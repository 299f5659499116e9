"""Fixtures of the awsec2 tests: the real-server plugin (moto comes from it)."""

from __future__ import annotations

import pytest

from tests.support import servers


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("edge-servers"):
        config.pluginmanager.register(servers, "edge-servers")
