"""AppInst work for `ApplyAppInst`: the shared handler (`edge_cloud.crmutil`).

The CCRM and the CRM run the same `AppInstChanged` logic (crm_platforms.md §3.2); it lives
in the core so both daemons can use it. The CCRM hands it its `PlatformHost`.
"""

from __future__ import annotations

from edge_cloud.crmutil import AppInstWork

__all__ = ["AppInstWork"]
