"""The shared Kubernetes app deployer for Kubernetes-based platforms (EKS, GKE, AKS, bare metal).

A library, not a platform plugin: platforms hand it a kubeconfig and an App's manifest.
It talks to the API server in process through the official async client (never kubectl):

    async with KubeClient.from_kubeconfig(kubeconfig) as kube:
        namespace = app_inst_namespace(cluster, app, app_inst)
        await ensure_namespace(kube, namespace, labels)
        manifest = app_inst_manifest(app, app_inst)
        await apply_manifest(kube, namespace, manifest)
        await wait_ready(kube, namespace, manifest, timeout=300)
        ips = await service_external_ips(kube, namespace)

Errors are `edge_cloud.errors` classes whose messages name the object and the API
server's reason.
"""

from platforms.k8s._app import (
    APPINST_NAME_LABEL,
    APPINST_ORG_LABEL,
    CONFIG_LABEL,
    MEX_DEPLOYMENT_LABEL,
    DeploymentVars,
    app_inst_manifest,
    app_inst_namespace,
    check_kubernetes_app,
    config_selector,
    dns_sanitize,
    k8s_sanitize,
    label_value_sanitize,
    namespace_sanitize,
    replace_deployment_vars,
)
from platforms.k8s._client import KubeClient, api_error, kube_errors
from platforms.k8s._cluster import (
    DEFAULT_NAMESPACE,
    NodeInfo,
    delete_namespace,
    ensure_namespace,
    ensure_pull_secret,
    image_registry_host,
    list_nodes,
    parse_quantity,
    pull_secret_name,
)
from platforms.k8s._manifest import (
    KubeObject,
    apply_manifest,
    delete_manifest,
    parse_manifest,
    service_external_ips,
    wait_ready,
)

__all__ = [
    "APPINST_NAME_LABEL",
    "APPINST_ORG_LABEL",
    "CONFIG_LABEL",
    "DEFAULT_NAMESPACE",
    "MEX_DEPLOYMENT_LABEL",
    "DeploymentVars",
    "KubeClient",
    "KubeObject",
    "NodeInfo",
    "api_error",
    "app_inst_manifest",
    "app_inst_namespace",
    "apply_manifest",
    "check_kubernetes_app",
    "config_selector",
    "delete_manifest",
    "delete_namespace",
    "dns_sanitize",
    "ensure_namespace",
    "ensure_pull_secret",
    "image_registry_host",
    "k8s_sanitize",
    "kube_errors",
    "label_value_sanitize",
    "list_nodes",
    "namespace_sanitize",
    "parse_manifest",
    "parse_quantity",
    "pull_secret_name",
    "replace_deployment_vars",
    "service_external_ips",
    "wait_ready",
]
