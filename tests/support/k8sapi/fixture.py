"""Pytest fixtures for the Kubernetes API test server.

Registered from `tests/conftest.py`, so any test may ask for:

- `k8s_api_server`: a started HTTPS server of the test's own (fresh objects, own CA), with
  `.url`, `.token`, `.ca_pem` and `.kubeconfig(...)`;
- `k8s_api_server_factory`: an async callable taking `KubeApiServer` keyword arguments
  (plain HTTP, a token checker, nodes, controller behaviour) for tests that need another
  set-up; every server it starts is stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.support.k8sapi.server import KubeApiServer

ServerFactory = Callable[..., Awaitable[KubeApiServer]]


@pytest.fixture
async def k8s_api_server_factory() -> AsyncIterator[ServerFactory]:
    started: list[KubeApiServer] = []

    async def make(**kwargs: Any) -> KubeApiServer:
        server = KubeApiServer(**kwargs)
        await server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in reversed(started):
            await server.stop()


@pytest.fixture
async def k8s_api_server(k8s_api_server_factory: ServerFactory) -> KubeApiServer:
    return await k8s_api_server_factory()
