"""CRM, the cloudlet resource manager that runs on the edge site (crm_platforms.md §4).

One process per cloudlet. It connects to the Controller's notify server as a client that
asks for cloudlet-key filtering, goes through the original's handshake (CloudletInfo INIT,
the Cloudlet in CRM_INITOK, NEED_SYNC, the send-all, READY), then carries out the
ClusterInsts and AppInsts the Controller puts into a *_REQUESTED state on its cloudlet by
driving the platform, and reports ClusterInstInfo/AppInstInfo/CloudletInfo back over the
same connection. The request handling is the CCRM's (`edge_cloud.crmutil`).
"""
