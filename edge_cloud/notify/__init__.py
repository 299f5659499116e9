"""Notify: object changes streamed from the Controller to every daemon, Info objects back up.

Wire-compatible with the original's `edgeproto.NotifyApi/StreamNotice` (controller.md §6,
objects.md §4.1), so original CRMs, DMEs and CCRMs can talk to our Controller and ours to
theirs::

    client                                     server
    VERSION  version=1, want_objs=[edgeproto.App, ...], filter_cloudlet_key, tags{name}
                                               VERSION  version=1, want_objs=[...], tags{name}
                                               UPDATE   any=<App>, mod_rev      (send-all)
                                               ...
                                               SENDALL_END
                                               UPDATE / DELETE, mod_rev         (changes)
    UPDATE / DELETE any=<CloudletInfo>         (upstream, any time after the handshake)

- A server whose first notice is not VERSION closes the stream with INVALID_ARGUMENT
  "Notify server expected action version". Ours accept a stream at once (response headers)
  and reply VERSION once they hold their first snapshot, however long loading takes; our
  clients wait for that reply, bounding only the wait for the headers.
- Data notices carry one object in `any` (`type.googleapis.com/edgeproto.<Msg>`): UPDATE the
  whole object, DELETE the object with only its key; `mod_rev` is the etcd revision.
- After SENDALL_END a client drops every cached object the send-all did not include.
- Only wanted types are sent, in each direction. Clients that ask for cloudlet filtering get
  cloudlet-scoped objects (and SENDALL_END) once their cloudlet is ready (`filters`).
- When a client goes, the server hands what it had sent to `on_flush`; the client keeps its
  caches, reconnects with backoff, and re-sends everything it had sent.

Beyond the original: delta resync
---------------------------------
A full send-all after every reconnect is what the original does; with many clients and many
objects a Controller restart turns into a storm. Our servers and clients also negotiate a
*delta*, with tags the original ignores, so it interoperates both ways unchanged:

1. Our server sends changes in commit order and tags its SENDALL_END with
   `snapshot-rev=<R>` (also in `mod_rev`): the send-all was the whole state at revision R.
   From then on the client tracks the highest revision it has *completely* applied (a change
   at a higher revision proves the previous one complete, since several objects can share a
   revision). An original server sends no such tag; its clients track nothing.
2. On reconnect the client puts `delta-since-rev=<S>` in its VERSION tags.
3. A server that can serve it (S at most its own revision, and it knows every delete after S:
   from its own delete log, or for a freshly started server from the source's history,
   `NotifySource.deleted_since`; `EtcdNotifySource` compares etcd's keys at revision S with
   those at its own revision, a read with no write) echoes `delta-since-rev=<S>` in its
   VERSION reply, sends DELETEs for objects deleted since S (dependents first), UPDATEs for
   objects with `mod_rev` > S (in dependency order), then SENDALL_END tagged
   `delta-since-rev=<S>` and `snapshot-rev=<R>`.
4. A client that sees its own S echoed in SENDALL_END prunes nothing (except types listed in
   `full-types`: cloudlet-scoped types of a filtered client, always sent whole); otherwise it
   took a full send-all and prunes as the original does.
5. Anything else is a full send-all: an original client (no tag), a server without the
   feature (tag ignored), history compacted away in etcd, or a client ahead of the server.

Either way the caches' callbacks fire only for real differences, so a client cannot tell
the two apart except by what it costs.

Main pieces: `NotifyServer` (a servicer for any grpc.aio server) fed by a `NotifySource`
(`EtcdNotifySource`, or `MemorySource` in tests); `NotifyClient` with `NotifyCache`s, which
counts its syncs (`sync_generation`, `wait_resynced`, `on_synced`).
"""

from edge_cloud.notify._wire import PROTOCOL_VERSION, Action, key_only, key_string, type_name
from edge_cloud.notify.client import ClientStats, NotifyCache, NotifyClient, SyncInfo
from edge_cloud.notify.etcd_source import EtcdNotifySource
from edge_cloud.notify.filters import DEFAULT_CLOUDLET_FILTERS, CloudletFilter, ObjectLookup, Stage
from edge_cloud.notify.server import SERVICE_NAME, FlushFn, NotifyServer, Peer, ReceiveFn
from edge_cloud.notify.source import (
    Change,
    Encoded,
    MemorySource,
    NotifySource,
    Snapshot,
    Stored,
)

__all__ = [
    "DEFAULT_CLOUDLET_FILTERS",
    "PROTOCOL_VERSION",
    "SERVICE_NAME",
    "Action",
    "Change",
    "ClientStats",
    "CloudletFilter",
    "Encoded",
    "EtcdNotifySource",
    "FlushFn",
    "MemorySource",
    "NotifyCache",
    "NotifyClient",
    "NotifyServer",
    "NotifySource",
    "ObjectLookup",
    "Peer",
    "ReceiveFn",
    "Snapshot",
    "Stage",
    "Stored",
    "SyncInfo",
    "key_only",
    "key_string",
    "type_name",
]
