"""Shared pytest wiring: real-server fixtures, and markers that follow the directory layout.

Markers come from where a test lives (architecture §11), never from the test itself, so
`-m "not integration"` selects exactly the tests that need no server.
"""

from __future__ import annotations

import pytest

from tests.support import servers

# First path parts → marker. `platforms/<type>/tests/` is matched separately below.
_MARKERS_BY_DIR: dict[tuple[str, ...], str] = {
    ("tests", "integration"): "integration",
    ("tests", "e2e"): "e2e",
}


def pytest_configure(config: pytest.Config) -> None:
    # A registered module is a plugin: its fixtures are visible to every test, its hooks run.
    if not config.pluginmanager.has_plugin("edge-servers"):
        config.pluginmanager.register(servers, "edge-servers")
    config.pluginmanager.import_plugin("tests.support.vault.fixture")  # `vault_server`
    config.pluginmanager.import_plugin("tests.support.k8sapi.fixture")  # `k8s_api_server`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            parts = item.path.relative_to(config.rootpath).parts
        except ValueError:
            continue
        marker = _MARKERS_BY_DIR.get(parts[:2])
        if marker is None and len(parts) > 3 and parts[0] == "platforms" and parts[2] == "tests":
            marker = "platform"
        if marker is not None:
            item.add_marker(marker)
