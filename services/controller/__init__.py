"""The Controller: the region's API server and the single writer of its object store.

It owns every user-facing object of a region (flavors, settings, zones, policies, cloudlets,
clusters, apps and their instances): it validates API requests, keeps
the objects in etcd with guarded transactions, serves them from caches fed by an etcd watch,
and registers itself under an etcd lease so peers and tools see which controllers are alive.
Several controllers may share one etcd; etcd transactions keep them consistent.
"""
