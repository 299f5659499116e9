"""The start-up recovery scan finds transient-state objects without decoding READY ones."""

from __future__ import annotations

from edgeproto import appinst_pb2, common_pb2

from edge_cloud.objects import codec, keys, registry
from edge_cloud.store import EtcdStore, Put
from services.controller._inst_common import _STATE_TOKENS, FAILED_STATE
from services.controller._sync import Sync

APP_INST = registry.by_class(appinst_pb2.AppInst)


def inst(name: str, state: int) -> appinst_pb2.AppInst:
    return appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization="dev"),
        state=state,  # type: ignore[arg-type]
    )


async def test_scan_decodes_only_candidates(etcd_store: EtcdStore) -> None:
    ready = [inst(f"ready{i}", common_pb2.READY) for i in range(20)]
    stuck = [inst(f"stuck-{common_pb2.TrackedState.Name(s)}", s) for s in FAILED_STATE]
    puts = [Put(keys.object_store_key(o), codec.encode(o)) for o in ready + stuck]
    # written by another encoder: the state as a number still makes it a candidate
    numeric = b'{"key":{"name":"numeric","organization":"dev"},"state":2}'
    puts.append(Put("1/AppInst/" + keys.key_string(inst("numeric", 0)), numeric))
    await etcd_store.txn((), puts)
    sync = Sync(etcd_store)
    await sync.start()
    found = {
        obj.key.name
        for _, obj in sync.caches.items_containing(APP_INST, _STATE_TOKENS)
        if obj.state in FAILED_STATE
    }
    assert found == {o.key.name for o in stuck} | {"numeric"}
    for o in ready:
        entry = sync.caches._peek(APP_INST, keys.key_string(o.key))
        assert entry is not None
        assert not entry.is_decoded
    # decoded objects are always checked, whatever their state
    sync.caches.get(APP_INST, keys.key_string(ready[0].key))
    seen = [k for k, _ in sync.caches.items_containing(APP_INST, _STATE_TOKENS)]
    assert keys.key_string(ready[0].key) in seen
