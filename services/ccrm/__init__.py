"""CCRM, the central cloudlet resource manager: platform work for the Controller.

It owns no data. The Controller calls its three gRPC services (`CloudletPlatformAPI`,
`ClusterPlatformAPI`, `AppInstPlatformAPI`, crm_platforms.md §5.2) and reads the streamed
Info objects back; the CCRM builds one platform object per cloudlet through the platform
registry, keeps it while the Cloudlet is unchanged, and reads the Controller objects it
needs (Cloudlets, Flavors, ClusterInsts, Apps, Settings) from notify caches. At start it
registers the `PlatformFeatures` of every platform it hosts, stamped with its node type,
by sending them to the Controller over notify.
"""
