"""The resource types the test server serves: discovery facts, validation and defaults.

Validation messages follow the API server's (`field: Invalid value: ...: reason`), since
people read them in our platform errors; defaults follow what a v1.31 server fills in, so
objects read back look like a real cluster's.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from tests.support.k8sapi._errors import ApiError, bad_request, invalid
from tests.support.k8sapi._selectors import match_labels_selector

_ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One REST resource: where it lives in the URL space and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = _ALL_VERBS
    has_status: bool = False
    # The real registry returns the deleted object for these instead of a Status.
    returns_deleted: bool = False
    # Whether metadata.generation is kept and bumped on spec changes.
    tracks_generation: bool = False
    name_rule: str = "subdomain"  # "subdomain", "label" or "dns1035"
    field_selectors: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """`v1` or `apps/v1`."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        """The singular name discovery reports (lower-case kind)."""
        return self.kind.lower()


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        has_status=True,
        returns_deleted=True,
        name_rule="label",
        field_selectors=("status.phase",),
    ),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        has_status=True,
        returns_deleted=True,
        tracks_generation=True,
        field_selectors=("spec.nodeName", "status.phase", "spec.serviceAccountName"),
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        short_names=("svc",),
        has_status=True,
        returns_deleted=True,
        name_rule="dns1035",
        field_selectors=("spec.type", "spec.clusterIP"),
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "secrets", "Secret", field_selectors=("type",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceType(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        has_status=True,
        returns_deleted=True,
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        namespaced=False,
        short_names=("no",),
        verbs=("get", "list", "watch"),
        has_status=True,
        field_selectors=("spec.unschedulable",),
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        has_status=True,
        tracks_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        has_status=True,
        tracks_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        has_status=True,
        tracks_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        has_status=True,
        tracks_generation=True,
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        short_names=("ing",),
        has_status=True,
        tracks_generation=True,
    ),
    ResourceType(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        short_names=("netpol",),
        tracks_generation=True,
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
BY_KIND: dict[tuple[str, str], ResourceType] = {(r.api_version, r.kind): r for r in RESOURCES}

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_NAME_MESSAGES = {
    "subdomain": (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character (e.g. "
        "'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ),
    "label": (
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
        "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ),
    "dns1035": (
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
        "with an alphabetic character, and end with an alphanumeric character (e.g. "
        "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    ),
}


def name_error(rule: str, name: str) -> str | None:
    """Why `name` breaks `rule` (the API server's text), or None when it is valid."""
    pattern, limit = {
        "subdomain": (_SUBDOMAIN, 253),
        "label": (_LABEL, 63),
        "dns1035": (_DNS1035, 63),
    }[rule]
    if len(name) > limit:
        return f"must be no more than {limit} characters"
    if not pattern.match(name):
        return _NAME_MESSAGES[rule]
    return None


Causes = list[tuple[str, str, str]]


def _required(causes: Causes, field: str, detail: str = "") -> None:
    causes.append(
        ("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))
    )


def _bad(causes: Causes, field: str, value: Any, why: str) -> None:
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    causes.append(("FieldValueInvalid", field, f"Invalid value: {shown}: {why}"))


def _check_labels(causes: Causes, field: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise bad_request(f"{field}: expected a map of strings")
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        prefix = key[: -len(name) - 1] if "/" in key else ""
        if (
            len(name) > 63
            or not _QUALIFIED.match(name)
            or (prefix and name_error("subdomain", prefix))
        ):
            _bad(
                causes,
                field,
                key,
                "name part must consist of alphanumeric characters, '-', '_' "
                "or '.', and must start and end with an alphanumeric character",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                f"ObjectMeta.{field} of type string"
            )
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            _bad(
                causes,
                f"{field}",
                value,
                "a valid label must be an empty string or consist "
                "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character",
            )


def _check_pod_spec(causes: Causes, field: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        _required(causes, field)
        return
    containers = spec.get("containers")
    if not containers:
        _required(causes, f"{field}.containers")
        return
    names: set[str] = set()
    for n, container in enumerate(containers):
        where = f"{field}.containers[{n}]"
        name = container.get("name")
        if not name:
            _required(causes, f"{where}.name")
        elif (why := name_error("label", name)) is not None:
            _bad(causes, f"{where}.name", name, why)
        elif name in names:
            causes.append(("FieldValueDuplicate", f"{where}.name", f'Duplicate value: "{name}"'))
        else:
            names.add(name)
        if not container.get("image"):
            _required(causes, f"{where}.image")
        for p, port in enumerate(container.get("ports") or []):
            number = port.get("containerPort")
            if not isinstance(number, int) or not 0 < number < 65536:
                _bad(
                    causes,
                    f"{where}.ports[{p}].containerPort",
                    number,
                    "must be between 1 and 65535, inclusive",
                )
            proto = port.get("protocol", "TCP")
            if proto not in ("TCP", "UDP", "SCTP"):
                causes.append(
                    (
                        "FieldValueNotSupported",
                        f"{where}.ports[{p}].protocol",
                        f'Unsupported value: "{proto}": supported values: "SCTP", "TCP", "UDP"',
                    )
                )


def _check_workload(causes: Causes, obj: dict[str, Any], needs_replicas: bool) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        _required(causes, "spec")
        return
    selector = spec.get("selector")
    if not selector:
        _required(causes, "spec.selector")
    template = spec.get("template")
    if not isinstance(template, dict):
        _required(causes, "spec.template")
        return
    labels = (template.get("metadata") or {}).get("labels") or {}
    _check_labels(causes, "spec.template.metadata.labels", labels)
    if selector and not match_labels_selector(selector)(labels):
        _bad(
            causes,
            "spec.template.metadata.labels",
            str(labels),
            "`selector` does not match template `labels`",
        )
    _check_pod_spec(causes, "spec.template.spec", template.get("spec"))
    replicas = spec.get("replicas")
    if needs_replicas and replicas is not None and (not isinstance(replicas, int) or replicas < 0):
        _bad(causes, "spec.replicas", replicas, "must be greater than or equal to 0")


def _check_service(causes: Causes, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(
            (
                "FieldValueNotSupported",
                "spec.type",
                f'Unsupported value: "{svc_type}": '
                'supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
            )
        )
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and svc_type != "ExternalName":
        _required(causes, "spec.ports")
    names: set[str] = set()
    for n, port in enumerate(ports):
        name = port.get("name", "")
        if len(ports) > 1 and not name:
            _required(causes, f"spec.ports[{n}].name")
        elif name in names:
            causes.append(
                ("FieldValueDuplicate", f"spec.ports[{n}].name", f'Duplicate value: "{name}"')
            )
        names.add(name)
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            _bad(causes, f"spec.ports[{n}].port", number, "must be between 1 and 65535, inclusive")
        proto = port.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            causes.append(
                (
                    "FieldValueNotSupported",
                    f"spec.ports[{n}].protocol",
                    f'Unsupported value: "{proto}": supported values: "SCTP", "TCP", "UDP"',
                )
            )


def _check_ingress(causes: Causes, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        causes.append(
            (
                "FieldValueInvalid",
                "spec",
                'Invalid value: "": either `defaultBackend` or `rules` must be specified',
            )
        )
    for r, rule in enumerate(rules):
        for p, path in enumerate((rule.get("http") or {}).get("paths") or []):
            where = f"spec.rules[{r}].http.paths[{p}]"
            kind = path.get("pathType")
            if not kind:
                _required(causes, f"{where}.pathType", "pathType must be specified")
            elif kind not in ("Exact", "Prefix", "ImplementationSpecific"):
                causes.append(
                    (
                        "FieldValueNotSupported",
                        f"{where}.pathType",
                        f'Unsupported value: "{kind}": supported values: "Exact", '
                        '"ImplementationSpecific", "Prefix"',
                    )
                )
            if not path.get("backend"):
                _required(causes, f"{where}.backend")


def _decode_secret_data(obj: dict[str, Any]) -> None:
    data = obj.get("data") or {}
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"in data[{key}]"
            ) from None
    string_data = obj.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Refuse what the API server refuses, with its codes and wording.

    Args:
        rt: The resource type.
        obj: The object to store (defaults not yet applied).
        old: The stored object for updates, None for creates.

    Raises:
        ApiError: 422 Invalid listing every bad field, or 400 for undecodable content.
    """
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    causes: Causes = []
    if not name:
        _required(causes, "metadata.name", "name or generateName is required")
    elif (why := name_error(rt.name_rule, name)) is not None:
        _bad(causes, "metadata.name", name, why)
    _check_labels(causes, "metadata.labels", meta.get("labels"))
    if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        _check_workload(causes, obj, needs_replicas=True)
    elif rt.kind == "DaemonSet":
        _check_workload(causes, obj, needs_replicas=False)
    elif rt.kind == "Pod":
        _check_pod_spec(causes, "spec", obj.get("spec"))
    elif rt.kind == "Service":
        _check_service(causes, obj)
    elif rt.kind == "Secret":
        _decode_secret_data(obj)
        if obj.get("type") == "kubernetes.io/dockerconfigjson" and ".dockerconfigjson" not in (
            obj.get("data") or {}
        ):
            _required(causes, "data[.dockerconfigjson]")
    elif rt.kind == "Ingress":
        _check_ingress(causes, obj)
    elif rt.kind == "PersistentVolumeClaim":
        spec = obj.get("spec") or {}
        if not spec.get("accessModes"):
            _required(causes, "spec.accessModes", "at least 1 access mode is required")
        if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
            _required(causes, "spec.resources[storage]")
    if old is not None:
        _check_immutable(causes, rt, obj, old)
    if causes:
        raise invalid(rt.kind, rt.group, name, causes)


def _check_immutable(
    causes: Causes, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any]
) -> None:
    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    if rt.group == "apps" and spec.get("selector") != old_spec.get("selector"):
        _bad(causes, "spec.selector", str(spec.get("selector")), "field is immutable")
    if rt.kind == "Service" and spec.get("clusterIP") not in (None, "", old_spec.get("clusterIP")):
        _bad(causes, "spec.clusterIP", spec.get("clusterIP"), "field is immutable")
    if rt.kind == "Secret" and old.get("immutable") and obj.get("data") != old.get("data"):
        causes.append(
            ("FieldValueForbidden", "data", "Forbidden: field is immutable when `immutable` is set")
        )


def _default_container(container: dict[str, Any]) -> None:
    image = str(container.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    tagged = (":" in last and not last.endswith(":latest")) or "@" in last
    container.setdefault("imagePullPolicy", "IfNotPresent" if tagged else "Always")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    """Fill what the server defaults in every pod spec (policies, scheduler, grace period)."""
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or []:
            _default_container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if spec.get("serviceAccountName") is None:
        spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
    spec.setdefault("enableServiceLinks", True)
    if spec.get("volumes") is None:
        spec.pop("volumes", None)


def apply_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Defaults the API server sets on write, so reads look like a real cluster's objects."""
    spec = obj.get("spec")
    if rt.kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and isinstance(
        spec, dict
    ):
        if rt.kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        template = spec["template"]
        template.setdefault("metadata", {})
        default_pod_spec(template["spec"])
        if rt.kind == "Deployment":
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
            spec.setdefault("progressDeadlineSeconds", 600)
        elif rt.kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault(
                "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
            )
            spec.setdefault(
                "persistentVolumeClaimRetentionPolicy",
                {"whenDeleted": "Retain", "whenScaled": "Retain"},
            )
        elif rt.kind == "DaemonSet":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            )
    elif rt.kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec)
    elif rt.kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec["type"] in ("LoadBalancer", "NodePort"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        obj.setdefault("status", {"loadBalancer": {}})
    elif rt.kind == "Secret":
        obj.setdefault("type", "Opaque")
    elif rt.kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = obj.get("status") or {"phase": "Active"}
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif rt.kind == "Ingress":
        obj.setdefault("status", {"loadBalancer": {}})
    elif rt.kind == "NetworkPolicy":
        spec = obj.setdefault("spec", {})
        spec.setdefault("podSelector", {})
        if "policyTypes" not in spec:
            spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    elif rt.kind == "PersistentVolumeClaim":
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        obj.setdefault("status", {"phase": "Pending"})


def raise_if_not_object(body: Any) -> dict[str, Any]:
    """The decoded body as an object, or the server's 400 for anything else."""
    if not isinstance(body, dict):
        raise bad_request(
            "the object provided is unrecognized (must be of type Object): "
            f"json: cannot unmarshal {type(body).__name__} into Go value of type struct"
        )
    return body


__all__ = [
    "BY_KIND",
    "BY_PATH",
    "RESOURCES",
    "ApiError",
    "ResourceType",
    "apply_defaults",
    "default_pod_spec",
    "name_error",
    "raise_if_not_object",
    "validate",
]
