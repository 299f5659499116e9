"""The DME (Distributed Matching Engine): the device-facing discovery service.

Mobile SDKs call it to register an app (getting a session cookie), find the best usable
AppInst near them, list nearby instances, verify their location and hold a persistent
edge-events stream. It owns no durable state: everything it knows about apps, instances,
cloudlets and rate-limit settings arrives from the Controller over notify and lives in
memory (`_world`), searched by `_ranking`, guarded by `_cookies` and `_ratelimit`.
"""
