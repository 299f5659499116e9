"""A TrustPolicyException end to end: Controller, CCRM and CRM processes, the fake platform.

An operator's zone, pool, trust policy and fake cloudlet, a developer's trusted App with an
instance on a dedicated cluster there. Approving the exception must open it on that
cluster in the fake infrastructure, rejecting and deleting it must close it again: inside
the CCRM process for a CCRM-run cloudlet (the Controller calls ApplyTrustPolicyException),
inside the CRM process for a cloudlet with its CRM on the edge site (the TPEInstanceState
reaches it over notify). The fake platform logs each open and close; the test reads the
log of the daemon that runs the platform (issue 4).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    trustpolicy_pb2,
    trustpolicy_pb2_grpc,
    trustpolicyexception_pb2,
    trustpolicyexception_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
    zonepool_pb2,
    zonepool_pb2_grpc,
)

from edge_cloud.objects import keys
from tests.e2e.crm import test_crm_lifecycle as crm_lifecycle
from tests.e2e.support import ControllerApi, ok, platform_fixture, wait_for

crm_dir = crm_lifecycle.crm_dir  # the fixture: CRMs started in a test stop at its end

TPES = trustpolicyexception_pb2
FLAVOR = "x1.small"
TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(120)


api = platform_fixture(ControllerApi, "tpe", flavor=FLAVOR)


def fake_log(log: Path, verb: str) -> list[tuple[str, str]]:
    """(TPE key, cluster key) pairs the fake platform logged as `verb` in a daemon's log."""
    found: list[tuple[str, str]] = []
    prefix = "trust policy exception "
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        text = str(record.get("msg") or record.get("message") or "")
        if text.startswith(prefix) and f" {verb} on cluster " in text:
            tpe, _, cluster = text[len(prefix) :].partition(f" {verb} on cluster ")
            found.append((tpe, cluster))
    return found


def scenario(
    api: ControllerApi,
    *,
    crm_on_edge: bool,
    onboard: Callable[[cloudlet_pb2.Cloudlet], Path],
) -> None:
    """Build the world, approve, reject, approve again, delete; check the fake's log.

    Args:
        api: The Controller.
        crm_on_edge: Whether the cloudlet is run by a CRM on the edge site.
        onboard: Creates the cloudlet; returns the log of the daemon running its platform.
    """
    oper, dev = f"op{uuid.uuid4().hex[:6]}", f"dev{uuid.uuid4().hex[:6]}"
    channel = api.channel
    zone = zone_pb2.Zone(key=cloudletkey_pb2.ZoneKey(organization=oper, name="berlin"))
    zone_pb2_grpc.ZoneApiStub(channel).CreateZone(zone, timeout=10)
    pool = zonepool_pb2.ZonePool(
        key=zonepool_pb2.ZonePoolKey(organization=oper, name="pool"), zones=[zone.key]
    )
    zonepool_pb2_grpc.ZonePoolApiStub(channel).CreateZonePool(pool, timeout=10)
    policy = trustpolicy_pb2.TrustPolicy(
        outbound_security_rules=[
            trustpolicy_pb2.SecurityRule(
                protocol="TCP", port_range_min=443, remote_cidr="0.0.0.0/0"
            )
        ]
    )
    policy.key.organization, policy.key.name = oper, "egress"
    ok(trustpolicy_pb2_grpc.TrustPolicyApiStub(channel).CreateTrustPolicy(policy, timeout=10))

    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization=oper, name="c1"),
        platform_type="fake",
        location=loc_pb2.Loc(latitude=52.5, longitude=13.4),
        num_dynamic_ips=10,
        zone="berlin",
        trust_policy="egress",
        crm_on_edge=crm_on_edge,
    )
    # a CRM that finishes a step within the moment the Controller takes to subscribe to its
    # reports leaves the caller waiting (see tests/e2e/crm/test_crm_lifecycle.py)
    cloudlet.env_var["FAKE_STEP_DELAY"] = "0.05" if crm_on_edge else "0.01"
    log = onboard(cloudlet)

    app = app_pb2.App(
        key=app_pb2.AppKey(organization=dev, name="svc", version="1.0"),
        deployment="docker",
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        image_path="docker.io/library/nginx:latest",
        access_ports="tcp:80",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
        trusted=True,
    )
    api.apps.CreateApp(app, timeout=10)
    cluster = clusterinst_pb2.ClusterInst(
        deployment="docker",
        flavor=flavor_pb2.FlavorKey(name=FLAVOR),
        ip_access=common_pb2.IP_ACCESS_DEDICATED,
        cloudlet_key=cloudlet.key,
    )
    cluster.key.organization, cluster.key.name = dev, "cl1"
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    inst = appinst_pb2.AppInst(app_key=app.key, cluster_key=cluster.key, cloudlet_key=cloudlet.key)
    inst.key.organization, inst.key.name = dev, "ai1"
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))

    tpes = trustpolicyexception_pb2_grpc.TrustPolicyExceptionApiStub(channel)
    tpe = TPES.TrustPolicyException(
        key=TPES.TrustPolicyExceptionKey(app_key=app.key, zone_pool_key=pool.key, name="tpe1"),
        outbound_security_rules=[
            trustpolicy_pb2.SecurityRule(
                protocol="udp", port_range_min=53, remote_cidr="8.8.8.8/32"
            )
        ],
    )
    tpes.CreateTrustPolicyException(tpe, timeout=10)
    entry = (keys.key_string(tpe.key), keys.key_string(cluster.key))

    def approve(state: int) -> None:
        update = TPES.TrustPolicyException(key=tpe.key, state=state, fields=["3"])
        tpes.UpdateTrustPolicyException(update, timeout=10)

    approve(TPES.TRUST_POLICY_EXCEPTION_STATE_ACTIVE)
    wait_for(lambda: fake_log(log, "opened") == [entry] or None, 20, "the TPE opened")

    approve(TPES.TRUST_POLICY_EXCEPTION_STATE_REJECTED)
    wait_for(lambda: fake_log(log, "closed") == [entry] or None, 20, "the TPE closed")

    approve(TPES.TRUST_POLICY_EXCEPTION_STATE_ACTIVE)
    wait_for(lambda: len(fake_log(log, "opened")) == 2 or None, 20, "the TPE opened again")
    tpes.DeleteTrustPolicyException(TPES.TrustPolicyException(key=tpe.key), timeout=10)
    wait_for(lambda: len(fake_log(log, "closed")) == 2 or None, 20, "the deleted TPE closed")
    assert set(fake_log(log, "opened") + fake_log(log, "closed")) == {entry}

    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    ok(api.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))


def test_through_the_ccrm(api: ControllerApi) -> None:
    def onboard(cloudlet: cloudlet_pb2.Cloudlet) -> Path:
        ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
        return api.platform.ccrm.log

    scenario(api, crm_on_edge=False, onboard=onboard)


def test_through_a_crm_on_the_edge_site(api: ControllerApi, crm_dir: Path) -> None:
    def onboard(cloudlet: cloudlet_pb2.Cloudlet) -> Path:
        crm, _ = crm_lifecycle.onboard(api, cloudlet, crm_dir)
        return crm.daemon.log

    scenario(api, crm_on_edge=True, onboard=onboard)
