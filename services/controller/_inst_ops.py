"""ClusterInst and AppInst operations: the names other modules import, in one place.

The operations were split by type (issue 4): `_clusterinst_ops` (ClusterInst), `_appinst_ops`
(AppInst) and `_inst_common` (what both share: worker reports, readiness gate, worker
runner, recovery). This module keeps the old import path working for their users
(`_notify`, `_cloudlet_ops`, the App API, the daemon).
"""

from __future__ import annotations

from services.controller._appinst_ops import AppInstOps
from services.controller._clusterinst_ops import ClusterInstOps
from services.controller._inst_common import (
    APP_INST,
    CLUSTER_INST,
    InstRecovery,
    features_of,
    merge_info,
    receive_app_inst_info,
    receive_cluster_inst_info,
)

__all__ = [
    "APP_INST",
    "CLUSTER_INST",
    "AppInstOps",
    "ClusterInstOps",
    "InstRecovery",
    "features_of",
    "merge_info",
    "receive_app_inst_info",
    "receive_cluster_inst_info",
]
