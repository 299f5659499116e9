"""awseks apps: manifests deployed through the EKS kubeconfig onto the Kubernetes API test
server, which checks the plugin's real `k8s-aws-v1` tokens; DNS for load balancers."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from edgeproto import app_pb2, appinst_pb2

from edge_cloud.errors import (
    InvalidArgument,
    NotSupportedByPlatform,
    Unauthenticated,
)
from edge_cloud.localservers import ServerProcess
from platforms.awseks.tests.support import (
    CREDS,
    Site,
    api_token_checker,
    cluster_inst,
    leftovers,
    make_site,
    moto_url,
    nothing,
)
from tests.support.k8sapi import KubeApiServer

SECRETS = {CREDS["AWS_ACCESS_KEY_ID"]: CREDS["AWS_SECRET_ACCESS_KEY"]}
MANIFEST = """\
apiVersion: v1
kind: Service
metadata:
  name: web-tcp
  labels:
    run: web
spec:
  type: LoadBalancer
  ports:
  - name: tcp80
    protocol: TCP
    port: 80
    targetPort: 80
  selector:
    run: web
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-deployment
spec:
  replicas: 2
  selector:
    matchLabels:
      run: web
  template:
    metadata:
      labels:
        run: web
    spec:
      containers:
      - name: web
        image: docker.io/library/nginx:latest
        ports:
        - containerPort: 80
          protocol: TCP
"""


@dataclass
class Eks:
    site: Site
    kube: KubeApiServer
    cluster: Any


Factory = Callable[..., Awaitable[KubeApiServer]]


@pytest.fixture
async def eks(eks_moto: ServerProcess, k8s_api_server_factory: Factory) -> AsyncIterator[Eks]:
    """A cloudlet with one cluster whose API is the test server, reached through the override."""
    name = "apps"
    kube = await k8s_api_server_factory(
        token_checker=api_token_checker(moto_url(eks_moto), f"{name}-devorg", SECRETS)
    )
    assert kube.ca_pem is not None
    site = await make_site(
        moto_url(eks_moto),
        env={
            "EKS_API_ENDPOINT_OVERRIDE": kube.url,
            "EKS_API_CA_DATA": base64.b64encode(kube.ca_pem).decode(),
        },
    )
    cluster = cluster_inst(name)
    await site.platform.create_cluster_inst(cluster, site.progress, timeout=60)
    try:
        yield Eks(site, kube, cluster)
    finally:
        await site.platform.delete_cluster_inst(cluster, site.progress)
        assert nothing(leftovers(eks_moto, site.tag)), leftovers(eks_moto, site.tag)


def app(deployment: str = "kubernetes", manifest: str = MANIFEST) -> app_pb2.App:
    out = app_pb2.App(deployment=deployment, deployment_manifest=manifest)
    out.key.organization, out.key.name, out.key.version = "dev.org", "web", "1.0"
    return out


def inst(name: str = "web1") -> appinst_pb2.AppInst:
    out = appinst_pb2.AppInst(uri=f"{name}-devorg.syd-awsop.local.appdnsroot.net")
    out.key.name, out.key.organization = name, "dev.org"
    return out


async def test_app_lifecycle_deploys_reports_and_removes_everything(eks: Eks) -> None:
    platform, progress = eks.site.platform, eks.site.progress
    instance = inst()
    await platform.create_app_inst(eks.cluster, app(), instance, None, progress)
    assert "Applying Kubernetes manifest" in progress.messages
    namespace = "web1-devorg"  # A's namespace_sanitize drops dots
    assert namespace in {n["metadata"]["name"] for n in eks.kube.objects("namespaces")}
    [deployment] = eks.kube.objects("deployments", namespace)
    assert deployment["status"]["readyReplicas"] == 2
    [service] = eks.kube.objects("services", namespace)
    address = service["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert dict(instance.internal_port_to_lb_ip) == {"tcp:80": address}
    records = await eks.site.access.get_dns_records(f"web-tcp.{instance.uri}")
    assert [(r.rtype, r.content) for r in records] == [("A", address)]

    runtime = await platform.get_app_inst_runtime(eks.cluster, app(), instance)
    pods = sorted(p["metadata"]["name"] for p in eks.kube.objects("pods", namespace))
    assert list(runtime.container_ids) == pods
    assert len(pods) == 2

    # a repeated create (after a CCRM restart) converges on the same objects
    await platform.create_app_inst(eks.cluster, app(), instance, None, progress)
    assert len(eks.kube.objects("deployments", namespace)) == 1

    await platform.delete_app_inst(eks.cluster, app(), instance, progress)
    assert namespace not in {n["metadata"]["name"] for n in eks.kube.objects("namespaces")}
    assert await eks.site.access.get_dns_records(f"web-tcp.{instance.uri}") == []
    await platform.delete_app_inst(eks.cluster, app(), instance, progress)  # idempotent


async def test_unsupported_deployments_are_refused_by_name(eks: Eks) -> None:
    platform, progress = eks.site.platform, eks.site.progress
    for deployment in ("docker", "vm"):
        with pytest.raises(NotSupportedByPlatform, match=f"Kubernetes apps only, not {deployment}"):
            await platform.create_app_inst(eks.cluster, app(deployment), inst(), None, progress)
    with pytest.raises(NotSupportedByPlatform, match=r"helm apps yet.*needs the helm client"):
        await platform.create_app_inst(eks.cluster, app("helm"), inst(), None, progress)
    with pytest.raises(InvalidArgument, match="has no Kubernetes manifest"):
        await platform.create_app_inst(eks.cluster, app(manifest=""), inst(), None, progress)
    assert eks.kube.objects("deployments") == []


async def test_a_token_the_cluster_refuses_is_a_clear_error(
    eks_moto: ServerProcess, k8s_api_server_factory: Factory
) -> None:
    # the API server belongs to another cluster: our signed token names ours
    kube = await k8s_api_server_factory(
        token_checker=api_token_checker(moto_url(eks_moto), "someone-else", SECRETS)
    )
    assert kube.ca_pem is not None
    site = await make_site(
        moto_url(eks_moto),
        env={
            "EKS_API_ENDPOINT_OVERRIDE": kube.url,
            "EKS_API_CA_DATA": base64.b64encode(kube.ca_pem).decode(),
        },
    )
    cluster = cluster_inst("denied")
    await site.platform.create_cluster_inst(cluster, site.progress, timeout=60)
    try:
        with pytest.raises(Unauthenticated, match="Kubernetes API"):
            await site.platform.create_app_inst(cluster, app(), inst(), None, site.progress)
        assert kube.objects("deployments") == []
    finally:
        await site.platform.delete_cluster_inst(cluster, site.progress)
    assert nothing(leftovers(eks_moto, site.tag))
