"""The DME (Distributed Matching Engine): the device-facing discovery service.

Mobile SDKs call it to register an app (getting a session cookie), find the best usable
AppInst near them, list nearby instances, verify their location and hold a persistent
edge-events stream. It owns no durable state: everything it knows about apps, instances,
cloudlets and rate-limit settings arrives from the Controller over notify and lives in
memory (`_world`), searched by `_ranking`, guarded by `_cookies` and `_ratelimit`.

Wiring: `daemon` (notify client feeding the world, listeners), `api.match_engine` (the
gRPC servicers under both service layouts), `_rest` (the REST gateway and its JSON
convention), `_calls` (the calls and the §2.0 pipeline both front ends share),
`_edgeevents` (StreamEdgeEvent), `_operators` (location/QoS operator interfaces with the
built-in `standalone` simulator), `_authtoken` (RegisterClient's RS256 tokens, KSUIDs).

Reports to the Controller (dme.md §2.12): `_stats` (`dme-api` and edge-events Metrics),
`_clients` (AppInstClient and Device records), `_autoprov` (auto-provisioning demand) and
`_reporter` (their clock); all go up through the notify client.
"""
