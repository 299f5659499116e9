"""`decode_ahead_after`: the notify server's background decoding waits after a start, while
what a client or a lookup needs is still decoded at once (issue 4)."""

from __future__ import annotations

import asyncio

from edge_cloud.notify import NotifyServer, key_string
from tests.unit.edge_cloud.notify.harness import (
    SEND_TYPES,
    Flavor,
    RawStream,
    eventually,
    flavor,
    serving,
)
from tests.unit.edge_cloud.notify.test_loading import EncodedSource, data_of


async def test_background_decoding_starts_after_the_delay() -> None:
    source = EncodedSource([flavor(f"f{i}") for i in range(20)])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES, decode_ahead_after=0.5)
    async with notify, serving(notify) as port:
        async with asyncio.timeout(5):
            await notify.wait_ready()
        await asyncio.sleep(0.1)
        assert source.decoded == []  # nothing decoded ahead yet
        assert notify.lookup("edgeproto.Flavor", key_string(flavor("f3"))) == flavor("f3")
        assert source.decoded == [key_string(flavor("f3"))]  # a lookup decodes what it needs
        raw = RawStream(port)
        try:
            assert len(await data_of(raw, Flavor)) == 20  # a client gets everything at once
        finally:
            await raw.close()
        assert len(source.decoded) == 20
        await eventually(lambda: _check(not notify._undecoded))  # the delayed pass runs
        assert len(source.decoded) == 20  # each object decoded once


async def test_without_a_delay_decoding_ahead_starts_at_once() -> None:
    source = EncodedSource([flavor(f"f{i}") for i in range(20)])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES)
    async with notify:
        async with asyncio.timeout(5):
            await notify.wait_ready()
        await eventually(lambda: _check(len(source.decoded) == 20))
    assert sorted(source.decoded) == sorted(key_string(flavor(f"f{i}")) for i in range(20))


def _check(condition: bool) -> None:
    assert condition
