"""The Redis client factory against a real Redis: connect, PING, pub/sub."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from edge_cloud import localservers
from edge_cloud.errors import InvalidArgument, Unavailable
from edge_cloud.localservers import ServerProcess
from edge_cloud.redis import Redis, connect, redis_url


async def test_ping_and_isolated_database(redis_client: Redis) -> None:
    assert await redis_client.ping() is True
    await redis_client.set("k", b"v")
    assert await redis_client.get("k") == b"v"
    assert await redis_client.dbsize() == 1


async def test_pubsub_roundtrip(redis_client: Redis, redis_server: ServerProcess) -> None:
    channel = f"AppInstStreamKey: {uuid.uuid4().hex}"  # channels are global: unique name
    publisher = await connect(redis_server.client_url, decode_responses=True)
    try:
        async with redis_client.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            async with asyncio.timeout(5):
                confirm = await pubsub.get_message(timeout=5)
                assert confirm is not None
                assert confirm["type"] == "subscribe"
                assert await publisher.publish(channel, "hello") == 1
                message = None
                while message is None:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message["channel"] == channel.encode()
            assert message["data"] == b"hello"
            await pubsub.unsubscribe(channel)
    finally:
        await publisher.aclose()


async def test_host_port_form_and_db_selection(redis_server: ServerProcess) -> None:
    address = redis_server.client_url.removeprefix("redis://")
    assert redis_url(address, db=3) == f"redis://{address}/3"
    client = await connect(address, db=3)
    try:
        info = await client.client_info()
        assert info["db"] == 3
    finally:
        await client.aclose()


async def test_dead_port_is_unavailable_in_one_line() -> None:
    port = localservers.free_port()
    with pytest.raises(Unavailable) as caught:
        await connect(f"127.0.0.1:{port}", timeout=2)
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "unreachable" in message


async def test_bad_address_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        await connect("http://127.0.0.1:6379")
