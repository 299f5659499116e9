"""App secret env vars and registry credentials: kept in the secrets backend, `***` in etcd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from edgeproto import app_pb2, flavor_pb2

from edge_cloud.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from edge_cloud.objects import keys, registry
from edge_cloud.platform import SecretsAccessApi
from edge_cloud.secrets import REDACTED, LocalSecretsBackend, generate_key, parse_key
from edge_cloud.store import EtcdStore
from services.controller._engine import Engine
from services.controller._runtime import Runtime
from services.controller._startup import ensure_settings
from services.controller._sync import Sync
from services.controller.api.app import AppApi
from services.controller.api.flavor import FlavorApi
from services.controller.config import ControllerConfig

CTX: Any = None  # the servicers never touch the context
APP = registry.by_class(app_pb2.App)
KEY = app_pb2.AppKey(organization="dev", name="web", version="1.0")
ENV_PATH = "local/apps/dev/web/1.0/secretenvvars"
AUTH_PATH = "local/app/dev/web/1.0/regauth"


@pytest.fixture
async def runtime(etcd_store: EtcdStore) -> AsyncIterator[Runtime]:
    sync = Sync(etcd_store)
    engine = Engine(etcd_store, sync)
    await ensure_settings(engine, wait=False)
    await sync.start()
    task = asyncio.create_task(sync.run())
    rt = Runtime(ControllerConfig())
    rt.attach(engine)
    rt.attach_secrets(LocalSecretsBackend(etcd_store, parse_key(generate_key())))
    await FlavorApi(rt).CreateFlavor(
        flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=2, disk=10),
        CTX,
    )
    try:
        yield rt
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def new_app(**kw: Any) -> app_pb2.App:
    base: dict[str, Any] = {
        "key": KEY,
        "image_type": app_pb2.IMAGE_TYPE_DOCKER,
        "image_path": "registry.example.com:5000/dev/web:1.0",
        "access_ports": "tcp:80",
        "default_flavor": flavor_pb2.FlavorKey(name="x1.small"),
    }
    base.update(kw)
    return app_pb2.App(**base)


def update(**kw: Any) -> app_pb2.App:
    fields = kw.pop("fields")
    request = app_pb2.App(key=KEY, **kw)
    request.fields.extend(fields)
    return request


async def test_secrets_are_stored_redacted_merged_and_removed(
    runtime: Runtime, etcd_store: EtcdStore
) -> None:
    api = AppApi(runtime)
    backend = runtime.secrets("test")
    app = new_app(secret_env_vars={"DB_PASSWORD": "pw-1"}, username="me", credentials="tok-9")
    await api.CreateApp(app, CTX)
    stored = runtime.engine.caches.get(APP, keys.key_string(app))
    assert stored is not None
    assert dict(stored.secret_env_vars) == {"DB_PASSWORD": REDACTED}
    assert (stored.username, stored.credentials) == ("me", REDACTED)
    found, _ = await etcd_store.range("")
    assert not [kv.key for kv in found if b"pw-1" in kv.value or b"tok-9" in kv.value]
    auth = await backend.get(AUTH_PATH)
    assert auth is not None
    assert auth.data["password"] == "tok-9"
    assert (auth.data["hostname"], auth.data["port"]) == ("registry.example.com", "5000")
    access = SecretsAccessApi(backend, region="local", organization="op", name="c1")
    app_key = keys.key_string(app)
    assert await access.get_app_secret_vars(app_key) == {"DB_PASSWORD": "pw-1"}

    with pytest.raises(AlreadyExists):  # and the stored secrets stay as they were
        await api.CreateApp(new_app(secret_env_vars={"DB_PASSWORD": "other"}), CTX)
    assert await access.get_app_secret_vars(app_key) == {"DB_PASSWORD": "pw-1"}

    await api.UpdateApp(update(secret_env_vars={"API": "a"}, fields=["48"]), CTX)
    assert await access.get_app_secret_vars(app_key) == {"DB_PASSWORD": "pw-1", "API": "a"}
    await api.UpdateApp(
        update(secret_env_vars={"DB_PASSWORD": ""}, update_list_action="remove", fields=["48"]),
        CTX,
    )
    assert await access.get_app_secret_vars(app_key) == {"API": "a"}
    stored = runtime.engine.caches.get(APP, app_key)
    assert stored is not None
    assert dict(stored.secret_env_vars) == {"API": REDACTED}
    await api.UpdateApp(
        update(secret_env_vars={"NEW": "n"}, update_list_action="replace", fields=["48"]), CTX
    )
    assert await access.get_app_secret_vars(app_key) == {"NEW": "n"}

    with pytest.raises(InvalidArgument, match="credentials missing"):
        await api.UpdateApp(update(username="other", fields=["57"]), CTX)
    await api.UpdateApp(update(fields=["57", "58"]), CTX)  # both cleared: creds removed
    assert await backend.get(AUTH_PATH) is None

    await api.DeleteApp(app_pb2.App(key=KEY), CTX)
    assert await backend.get(ENV_PATH) is None
    assert await access.get_app_secret_vars(app_key) == {}


async def test_a_refused_create_leaves_no_secret_behind(runtime: Runtime) -> None:
    api = AppApi(runtime)
    bad = new_app(secret_env_vars={"S": "x"}, default_flavor=flavor_pb2.FlavorKey(name="missing"))
    with pytest.raises(NotFound, match="Flavor key"):
        await api.CreateApp(bad, CTX)
    assert await runtime.secrets("test").get(ENV_PATH) is None


async def test_without_a_backend_secrets_are_refused(etcd_store: EtcdStore) -> None:
    sync = Sync(etcd_store)
    engine = Engine(etcd_store, sync)
    await ensure_settings(engine, wait=False)
    await sync.start()
    rt = Runtime(ControllerConfig())
    rt.attach(engine)
    with pytest.raises(FailedPrecondition, match="--secrets-key-file"):
        await AppApi(rt).CreateApp(new_app(secret_env_vars={"S": "x"}), CTX)
