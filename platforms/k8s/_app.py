"""Kubernetes app instances the way the original lays them out (`pkg/k8smgmt`).

Namespace per AppInst (`GetNamespace`), the labels every object carries (owner labels for
metrics, the config label that marks manifest objects, `mex-app` on pod templates so pods
can be found for exec and logs), and the App's environment as a ConfigMap/Secret referenced
by every container (`MergeEnvVars`). Helm Apps need the helm client and chart
repositories, which a CCRM deploying in process does not have: that is an explicit error.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import yaml
from edgeproto import app_pb2, appinst_pb2, clusterinst_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.platform import Deployment, NotSupportedByPlatform

__all__ = [
    "APPINST_NAME_LABEL",
    "APPINST_ORG_LABEL",
    "CONFIG_LABEL",
    "MEX_DEPLOYMENT_LABEL",
    "DeploymentVars",
    "app_inst_manifest",
    "app_inst_namespace",
    "check_kubernetes_app",
    "config_selector",
    "dns_sanitize",
    "k8s_sanitize",
    "label_value_sanitize",
    "namespace_sanitize",
    "replace_deployment_vars",
]

MEX_DEPLOYMENT_LABEL: Final = "mex-app"
CONFIG_LABEL: Final = "app.edgexr.org/config"
APPINST_NAME_LABEL: Final = "app.edgexr.org/appinst-name"
APPINST_ORG_LABEL: Final = "app.edgexr.org/appinst-org"
DEFAULT_NAMESPACE: Final = "default"
_NAMESPACE_MAX: Final = 63
_WORKLOADS: Final = ("Deployment", "DaemonSet", "StatefulSet")


def dns_sanitize(name: str) -> str:
    """RFC 1123 label characters only (the original's `util.DNSSanitize`)."""
    out: list[str] = []
    last = len(name) - 1
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.islower() or ch.isdigit()):
            out.append(ch)
        elif ch.isascii() and ch.isupper():
            out.append(ch.lower())
        elif ch in "-_" and 0 < i < last:
            out.append("-")
    return "".join(out)


def namespace_sanitize(name: str) -> str:
    """A namespace name: DNS-sanitised, at most 63 characters, no trailing `-`."""
    return dns_sanitize(name)[:_NAMESPACE_MAX].rstrip("-")


def k8s_sanitize(name: str) -> str:
    """The original's `K8SSanitize`: `_`→`-`, spaces and `&,!` dropped, lower-cased."""
    for old, new in (("_", "-"), (" ", ""), ("&", ""), (",", ""), ("!", "")):
        name = name.replace(old, new)
    return name.lower()


def label_value_sanitize(value: str) -> str:
    """A valid label value (the original's `K8SLabelValueSanitize`)."""
    out = ""
    for ch in value:
        if len(out) == 63:
            break
        alnum = ch.isascii() and ch.isalnum()
        if len(out) in (0, 62) and not alnum:
            continue
        if alnum or ch in "-_.":
            out += ch
    return out.rstrip("._-")


@dataclass(frozen=True, slots=True)
class DeploymentVars:
    """What a manifest may reference as `[[ .Deployment.<Field> ]]`.

    The original's `CrmReplaceVars`; the attribute names are the template's field names,
    which App authors write, hence the CamelCase.
    """

    ClusterIp: str = ""
    ClusterIPV6: str = ""
    CloudletName: str = ""
    ClusterName: str = ""
    CloudletOrg: str = ""
    AppOrg: str = ""
    DnsZone: str = ""


def replace_deployment_vars(manifest: str, delimiters: str, variables: DeploymentVars) -> str:
    """Substitute `[[ .Deployment.Field ]]` references (the original's `ReplaceDeploymentVars`).

    The original runs Go's text/template; manifests use it for field references only, which
    is what this supports, with Go's `-` whitespace trimming. Anything else in an action is
    refused rather than passed through half-understood.

    Args:
        manifest: The manifest text.
        delimiters: `App.template_delimiter`, "<start> <end>" (default "[[ ]]").
        variables: The values.

    Raises:
        InvalidArgument: Bad delimiters, an unknown field, or a template action other than a
            field reference.
    """
    parts = (delimiters or "[[ ]]").split(" ")
    if len(parts) != 2:
        raise InvalidArgument(
            f"invalid app template delimiter {delimiters}, valid format '<START-DELIM> <END-DELIM>'"
        )
    start, end = (re.escape(p) for p in parts)
    action = re.compile(rf"(\s*){start}(-\s)?\s*(.*?)\s*(\s-)?{end}(\s*)", re.DOTALL)
    values = asdict(variables)

    def substitute(m: re.Match[str]) -> str:
        expr = m.group(3)
        ref = re.fullmatch(r"\.Deployment\.([A-Za-z0-9_]+)", expr)
        if ref is None:
            raise InvalidArgument(
                f"unsupported template action {expr!r} in the manifest: only "
                "`.Deployment.<Field>` references are substituted; try changing "
                "templatedelimiter in app definition"
            )
        if ref.group(1) not in values:
            raise InvalidArgument(
                f"template: can't evaluate field {ref.group(1)} in type deployvars.CrmReplaceVars"
            )
        before = "" if m.group(2) else m.group(1)
        after = "" if m.group(4) else m.group(5)
        return f"{before}{values[ref.group(1)]}{after}"

    return action.sub(substitute, manifest)


def check_kubernetes_app(app: app_pb2.App) -> Deployment:
    """The App's deployment, refused unless this in-process deployer can run it.

    Raises:
        NotSupportedByPlatform: A Helm App: installing charts needs the `helm` client and
            network access to the chart repository, neither of which this deployer has; the
            same class the conformance suite expects for any deployment a platform refuses.
        InvalidArgument: Not a Kubernetes App, or a Kubernetes App without a manifest.
    """
    try:
        deployment = Deployment.of(app.deployment)
    except ValueError:
        raise InvalidArgument(f"unknown deployment type {app.deployment!r}") from None
    if deployment is Deployment.HELM:
        # TODO(#9, helm): install charts once the CCRM has a chart fetcher and renderer.
        raise NotSupportedByPlatform(
            f"App {app.key.name!r} version {app.key.version!r} is a Helm chart "
            f"({app.image_path}): deploying Helm apps needs the helm client and access to the "
            "chart repository, which this platform's in-process Kubernetes deployer does not "
            "have; deploy the App as a Kubernetes manifest instead"
        )
    if deployment is not Deployment.KUBERNETES:
        raise InvalidArgument(f"{deployment} Apps do not deploy to Kubernetes clusters")
    if not app.deployment_manifest.strip():
        raise InvalidArgument(
            f"App {app.key.name!r} version {app.key.version!r} has no Kubernetes manifest "
            "(the Controller generates one for Apps without; is this App from before that?)"
        )
    return deployment


def app_inst_namespace(
    cluster: clusterinst_pb2.ClusterInst, app: app_pb2.App, app_inst: appinst_pb2.AppInst
) -> str:
    """The namespace an AppInst's objects go to (the original's `GetNamespace`, current rules).

    A cluster restricted to one namespace wins, then the AppInst's own (the Controller
    fills it), then "default" for the deprecated `manages_own_namespaces`, else
    `<appinst-name>-<appinst-org>` sanitised. The original's older compatibility versions
    (namespaces only on multi-tenant clusters) exist only for AppInsts it created before
    them, which this system never has.
    """
    if cluster.single_kubernetes_namespace:
        return cluster.single_kubernetes_namespace
    if app_inst.namespace:
        return app_inst.namespace
    if app.manages_own_namespaces:
        return DEFAULT_NAMESPACE
    return namespace_sanitize(f"{app_inst.key.name}-{app_inst.key.organization}")


def _config_label(app_inst: appinst_pb2.AppInst) -> str:
    return (
        f"{label_value_sanitize(app_inst.key.name)}."
        f"{label_value_sanitize(app_inst.key.organization)}"
    )


def config_selector(app_inst: appinst_pb2.AppInst) -> str:
    """The label selector of every object from an AppInst's manifest (for pruning, cleanup)."""
    return f"{CONFIG_LABEL}={_config_label(app_inst)}"


def _owner_labels(app_inst: appinst_pb2.AppInst) -> dict[str, str]:
    return {
        APPINST_NAME_LABEL: label_value_sanitize(app_inst.key.name),
        APPINST_ORG_LABEL: label_value_sanitize(app_inst.key.organization),
    }


def _add_pull_secrets(pod_spec: dict[str, Any], names: Sequence[str]) -> None:
    current = pod_spec.get("imagePullSecrets") or []
    have = {s.get("name") for s in current if isinstance(s, dict)}
    current.extend({"name": n} for n in names if n not in have)
    if current:
        pod_spec["imagePullSecrets"] = current


def app_inst_manifest(
    app: app_pb2.App,
    app_inst: appinst_pb2.AppInst,
    *,
    secret_vars: Mapping[str, str] | None = None,
    image_pull_secrets: Sequence[str] = (),
    deployment_vars: DeploymentVars | None = None,
) -> str:
    """The App's manifest as deployed for one AppInst (the original's `MergeEnvVars`).

    Adds a ConfigMap `<app><version>-envvars` for `app.env_vars` and a Secret
    `<app><version>` for the secret variables, referenced by every container through
    `envFrom`; labels every object with the config and owner labels; labels pod templates
    with the owner labels and `mex-app=<workload name>`; adds image pull secrets; defaults
    Deployment/StatefulSet replicas to 1 (the serverless minimum in a dedicated namespace).

    Args:
        app: The App, with its stored (possibly generated) `deployment_manifest`.
        app_inst: The instance being deployed.
        secret_vars: The App's secret environment (from the access API), one per name in
            `app.secret_env_vars`.
        image_pull_secrets: Names of docker-registry Secrets in the namespace.
        deployment_vars: When given, `[[ .Deployment.Field ]]` references in the manifest
            are replaced first (`replace_deployment_vars`, with `app.template_delimiter`).

    Raises:
        InvalidArgument: The manifest does not parse, a template reference is bad, or secret
            variables are missing.
    """
    text = app.deployment_manifest
    if deployment_vars is not None:
        text = replace_deployment_vars(text, app.template_delimiter, deployment_vars)
    try:
        objects = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InvalidArgument(f"invalid kubernetes deployment yaml, {err}") from None
    if not all(isinstance(o, dict) for o in objects):
        raise InvalidArgument("invalid kubernetes deployment yaml, a document is not an object")
    objects = [copy.deepcopy(o) for o in objects]
    base = k8s_sanitize(app.key.name) + k8s_sanitize(app.key.version)
    env_from: list[dict[str, Any]] = []
    if app.env_vars:
        name = f"{base}-envvars"
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": dict(sorted(app.env_vars.items())),
            }
        )
        env_from.append({"configMapRef": {"name": name}})
    if app.secret_env_vars:
        values = dict(secret_vars or {})
        if len(values) != len(app.secret_env_vars):
            raise InvalidArgument(
                "failed to get the correct number of App secret vars from encrypted storage, "
                f"expected {len(app.secret_env_vars)} but only got {len(values)}"
            )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": base},
                "stringData": dict(sorted(values.items())),
            }
        )
        env_from.append({"secretRef": {"name": base}})
    owner = _owner_labels(app_inst)
    for obj in objects:
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        labels = meta.get("labels") or {}
        labels[CONFIG_LABEL] = _config_label(app_inst)
        labels.update(owner)
        meta["labels"] = labels
        if obj.get("kind") not in _WORKLOADS:
            continue
        spec = obj.setdefault("spec", {}) or {}
        obj["spec"] = spec
        if obj["kind"] != "DaemonSet":
            replicas = spec.get("replicas") or 1
            # Every AppInst has its own namespace under the current rules, so the serverless
            # minimum applies whenever the App has one (a zero minimum keeps the manifest's).
            if app.HasField("serverless_config"):
                replicas = app.serverless_config.min_replicas or replicas
            spec["replicas"] = replicas
        template = spec.setdefault("template", {}) or {}
        spec["template"] = template
        tmeta = template.setdefault("metadata", {}) or {}
        template["metadata"] = tmeta
        tlabels = tmeta.get("labels") or {}
        tlabels.update(owner)
        tlabels[MEX_DEPLOYMENT_LABEL] = str(meta.get("name", ""))
        tmeta["labels"] = tlabels
        pod_spec = template.setdefault("spec", {}) or {}
        template["spec"] = pod_spec
        for container in pod_spec.get("containers") or []:
            if env_from:
                container["envFrom"] = [*(container.get("envFrom") or []), *env_from]
        if image_pull_secrets:
            _add_pull_secrets(pod_spec, image_pull_secrets)
    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)
