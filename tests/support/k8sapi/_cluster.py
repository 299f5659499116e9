"""The tiny controller loop that makes the test server behave like a cluster.

It does what kube-controller-manager, the scheduler, the kubelets and a cloud load-balancer
controller would, just enough for deployers to observe: Deployments get ReplicaSets and
Running Pods, StatefulSets and DaemonSets get their Pods, workload status reports readiness,
LoadBalancer Services get an ingress IP from a pool, dependents of deleted owners are
garbage-collected, terminating namespaces are emptied and removed, PVCs bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.k8sapi._resources import BY_PATH, ResourceType, default_pod_spec
from tests.support.k8sapi._store import Event, Store, now_rfc3339

_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated suffixes

NAMESPACES = BY_PATH[("", "v1", "namespaces")]
PODS = BY_PATH[("", "v1", "pods")]
SERVICES = BY_PATH[("", "v1", "services")]
CONFIGMAPS = BY_PATH[("", "v1", "configmaps")]
SERVICEACCOUNTS = BY_PATH[("", "v1", "serviceaccounts")]
PVCS = BY_PATH[("", "v1", "persistentvolumeclaims")]
NODES = BY_PATH[("", "v1", "nodes")]
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
REPLICASETS = BY_PATH[("apps", "v1", "replicasets")]
STATEFULSETS = BY_PATH[("apps", "v1", "statefulsets")]
DAEMONSETS = BY_PATH[("apps", "v1", "daemonsets")]


def random_suffix(length: int = 5) -> str:
    """A generated-name suffix, as `generateName` and controllers make them."""
    return "".join(random.choice(_SAFE) for _ in range(length))  # noqa: S311 - not a secret


def template_hash(template: Any) -> str:
    """A stable short hash of a pod template (the `pod-template-hash` label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A fake node listed by the server (nodes are read-only through the API)."""

    name: str
    cpu: str = "4"
    memory: str = "16Gi"
    pods: str = "110"
    ephemeral_storage: str = "100Gi"
    instance_type: str = "m5.xlarge"
    internal_ip: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    gpus: int = 0


def node_object(spec: NodeSpec, index: int) -> dict[str, Any]:
    """A complete Node, with the fields `kubectl get nodes` and our resource counting read."""
    capacity = {
        "cpu": spec.cpu,
        "memory": spec.memory,
        "pods": spec.pods,
        "ephemeral-storage": spec.ephemeral_storage,
    }
    if spec.gpus:
        capacity["nvidia.com/gpu"] = str(spec.gpus)
    ip = spec.internal_ip or f"10.0.0.{10 + index}"
    labels = {
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": spec.instance_type,
        **spec.labels,
    }
    ts = now_rfc3339()
    return {
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": ts,
                    "lastTransitionTime": ts,
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": f"boot-{index}",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.0",
                "kubeProxyVersion": "v1.31.0",
                "kubeletVersion": "v1.31.0",
                "machineID": f"machine-{index}",
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": f"00000000-0000-0000-0000-{index:012d}",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


@dataclass(slots=True)
class ClusterBehaviour:
    """Knobs for the controller loop.

    Attributes:
        ready_delay: Seconds a pod stays Pending (and an LB without IP) before going Running,
            so clients can observe a rollout in progress.
        lb_pool: IPs handed to LoadBalancer Services, in order; an empty or exhausted pool
            leaves them pending, as a cloud without quota would.
        unpullable_images: Image prefixes whose pods stay Pending in ErrImagePull.
    """

    ready_delay: float = 0.0
    lb_pool: Sequence[str] = ("203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13")
    unpullable_images: Sequence[str] = ("unpullable.invalid/",)


def _owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(
        ref.get("uid") == owner["metadata"]["uid"]
        for ref in obj["metadata"].get("ownerReferences") or []
    )


class ClusterLoop:
    """Reconciles the store after each change, like a cluster's controllers and kubelets."""

    def __init__(self, store: Store, behaviour: ClusterBehaviour) -> None:
        self._store = store
        self._behaviour = behaviour
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_since: dict[str, float] = {}
        self._next_pod_ip = 2
        self._next_cluster_ip = 10
        self._next_node_port = 30000
        self._node_turn = 0
        store.on_change(self._changed)

    def _changed(self, event: Event) -> None:
        self._wake.set()

    def start(self) -> None:
        """Run the loop as a task of the current event loop."""
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="k8sapi-cluster")

    async def stop(self) -> None:
        """Cancel the loop and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            waiting = self.reconcile()
            timeout = 0.05 if waiting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    # Allocation helpers used on create by the HTTP layer ---------------------------------

    def allocate_cluster_ip(self) -> str:
        """The next ClusterIP from 10.96.0.0/12."""
        ip = ipaddress.IPv4Address("10.96.0.0") + self._next_cluster_ip
        self._next_cluster_ip += 1
        return str(ip)

    def allocate_node_port(self) -> int:
        """The next NodePort from 30000-32767."""
        port = self._next_node_port
        self._next_node_port = 30000 + (self._next_node_port - 30000 + 1) % 2768
        return port

    # Reconciliation ---------------------------------------------------------------------

    def reconcile(self) -> bool:
        """One pass over everything; returns whether something waits on time (a delay)."""
        for _ in range(10):  # until nothing changes, bounded
            before = self._store.resource_version
            waiting = False
            self._namespaces()
            self._collect_garbage()
            for deployment in list(self._store.items(DEPLOYMENTS)):
                self._deployment(deployment)
            for rs in list(self._store.items(REPLICASETS)):
                self._replicaset(rs)
            for sts in list(self._store.items(STATEFULSETS)):
                self._statefulset(sts)
            for ds in list(self._store.items(DAEMONSETS)):
                self._daemonset(ds)
            for pod in list(self._store.items(PODS)):
                waiting |= self._pod(pod)
            for deployment in list(self._store.items(DEPLOYMENTS)):
                self._deployment_status(deployment)
            waiting |= self._services()
            self._claims()
            if self._store.resource_version == before:
                return waiting
        return True

    def _namespaces(self) -> None:
        for ns in list(self._store.items(NAMESPACES)):
            name = ns["metadata"]["name"]
            if ns["status"].get("phase") == "Terminating":
                for rt in BY_PATH.values():
                    if rt.namespaced:
                        for obj in list(self._store.items(rt, name)):
                            self._store.delete(rt, name, obj["metadata"]["name"])
                self._store.delete(NAMESPACES, "", name)
                continue
            if self._store.find(SERVICEACCOUNTS, name, "default") is None:
                self._store.create(SERVICEACCOUNTS, name, {"metadata": {"name": "default"}})
            if self._store.find(CONFIGMAPS, name, "kube-root-ca.crt") is None:
                self._store.create(
                    CONFIGMAPS,
                    name,
                    {
                        "metadata": {
                            "name": "kube-root-ca.crt",
                            "annotations": {
                                "kubernetes.io/description": "Contains a CA bundle that can be "
                                "used to verify the kube-apiserver when using internal endpoints"
                            },
                        },
                        "data": {"ca.crt": ""},
                    },
                )

    def _collect_garbage(self) -> None:
        uids = self._store.uids()
        for rt in BY_PATH.values():
            for obj in list(self._store.items(rt)):
                refs = obj["metadata"].get("ownerReferences") or []
                if refs and not any(ref.get("uid") in uids for ref in refs):
                    meta = obj["metadata"]
                    self._store.delete(rt, meta.get("namespace", ""), meta["name"])

    def _new_pod(
        self, owner: dict[str, Any], name: str, labels: dict[str, str], node: str = ""
    ) -> None:
        template = owner["spec"]["template"]
        spec = json.loads(json.dumps(template.get("spec") or {}))
        default_pod_spec(spec)
        if node:
            spec["nodeName"] = node
        pod = {
            "metadata": {
                "name": name,
                "labels": {**(template.get("metadata", {}).get("labels") or {}), **labels},
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [_owner_ref(owner)],
            },
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        self._store.create(PODS, owner["metadata"]["namespace"], pod)

    def _owned_pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            p
            for p in self._store.items(PODS, owner["metadata"]["namespace"])
            if _owned_by(p, owner)
        ]

    def _deployment(self, deployment: dict[str, Any]) -> None:
        ns = deployment["metadata"]["namespace"]
        template = deployment["spec"]["template"]
        pod_hash = template_hash(template)
        name = f"{deployment['metadata']['name']}-{pod_hash}"
        owned = [rs for rs in self._store.items(REPLICASETS, ns) if _owned_by(rs, deployment)]
        replicas = deployment["spec"].get("replicas", 1)
        current = next((rs for rs in owned if rs["metadata"]["name"] == name), None)
        if current is None:
            labels = {
                **(template.get("metadata", {}).get("labels") or {}),
                "pod-template-hash": pod_hash,
            }
            rs_template = json.loads(json.dumps(template))
            rs_template.setdefault("metadata", {})["labels"] = labels
            selector = json.loads(json.dumps(deployment["spec"]["selector"]))
            selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
            self._store.create(
                REPLICASETS,
                ns,
                {
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {"deployment.kubernetes.io/revision": str(len(owned) + 1)},
                        "ownerReferences": [_owner_ref(deployment)],
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
                    "status": {"replicas": 0},
                },
            )
        elif current["spec"].get("replicas") != replicas:
            current["spec"]["replicas"] = replicas
            current["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            self._store.touch(REPLICASETS, current)
        for rs in owned:
            if rs["metadata"]["name"] != name and rs["spec"].get("replicas", 0) != 0:
                rs["spec"]["replicas"] = 0
                rs["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
                self._store.touch(REPLICASETS, rs)

    def _replicaset(self, rs: dict[str, Any]) -> None:
        ns = rs["metadata"]["namespace"]
        pods = self._owned_pods(rs)
        want = rs["spec"].get("replicas", 1)
        pod_hash = rs["metadata"].get("labels", {}).get("pod-template-hash", "")
        for _ in range(want - len(pods)):
            labels = {"pod-template-hash": pod_hash} if pod_hash else {}
            self._new_pod(rs, f"{rs['metadata']['name']}-{random_suffix()}", labels)
        for pod in pods[want:] if len(pods) > want else []:
            self._store.delete(PODS, ns, pod["metadata"]["name"])
        pods = self._owned_pods(rs)
        ready = sum(1 for p in pods if _pod_ready(p))
        status: dict[str, Any] = {
            "replicas": len(pods),
            "fullyLabeledReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        self._store.set_status(REPLICASETS, rs, status)

    def _deployment_status(self, deployment: dict[str, Any]) -> None:
        ns = deployment["metadata"]["namespace"]
        owned = [rs for rs in self._store.items(REPLICASETS, ns) if _owned_by(rs, deployment)]
        current_name = (
            f"{deployment['metadata']['name']}-{template_hash(deployment['spec']['template'])}"
        )
        want = deployment["spec"].get("replicas", 1)
        total = sum(rs.get("status", {}).get("replicas", 0) for rs in owned)
        ready = sum(rs.get("status", {}).get("readyReplicas", 0) for rs in owned)
        current = next((rs for rs in owned if rs["metadata"]["name"] == current_name), None)
        updated = current.get("status", {}).get("replicas", 0) if current else 0
        updated_ready = current.get("status", {}).get("readyReplicas", 0) if current else 0
        max_unavailable = want // 4
        available = ready >= want - max_unavailable
        old = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}
        ts = now_rfc3339()

        def condition(kind: str, value: bool, reason: str, message: str) -> dict[str, Any]:
            previous = old.get(kind)
            status = "True" if value else "False"
            same = (
                previous is not None
                and previous["status"] == status
                and previous["reason"] == reason
            )
            return {
                "type": kind,
                "status": status,
                "lastUpdateTime": previous["lastUpdateTime"] if same and previous else ts,
                "lastTransitionTime": previous["lastTransitionTime"]
                if previous is not None and previous["status"] == status
                else ts,
                "reason": reason,
                "message": message,
            }

        complete = updated_ready >= want and total == updated
        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                condition(
                    "Available",
                    available,
                    "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if available
                    else "Deployment does not have minimum availability.",
                ),
                condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    f'ReplicaSet "{current_name}" has successfully progressed.'
                    if complete
                    else f'ReplicaSet "{current_name}" is progressing.',
                ),
            ],
        }
        if total - ready > 0:
            status["unavailableReplicas"] = total - ready
        self._store.set_status(DEPLOYMENTS, deployment, status)

    def _statefulset(self, sts: dict[str, Any]) -> None:
        ns, name = sts["metadata"]["namespace"], sts["metadata"]["name"]
        revision = f"{name}-{template_hash(sts['spec']['template'])}"
        want = sts["spec"].get("replicas", 1)
        pods = {p["metadata"]["name"]: p for p in self._owned_pods(sts)}
        for ordinal in range(want):
            pod_name = f"{name}-{ordinal}"
            pod = pods.pop(pod_name, None)
            if (
                pod is not None
                and pod["metadata"]["labels"].get("controller-revision-hash") != revision
            ):
                self._store.delete(PODS, ns, pod_name)
                pod = None
            if pod is None:
                labels = {
                    "controller-revision-hash": revision,
                    "statefulset.kubernetes.io/pod-name": pod_name,
                    "apps.kubernetes.io/pod-index": str(ordinal),
                }
                self._new_pod(sts, pod_name, labels)
        for extra in pods:
            self._store.delete(PODS, ns, extra)
        owned = self._owned_pods(sts)
        ready = sum(1 for p in owned if _pod_ready(p))
        self._store.set_status(
            STATEFULSETS,
            sts,
            {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": len(owned),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "currentReplicas": len(owned),
                "updatedReplicas": len(owned),
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            },
        )

    def _daemonset(self, ds: dict[str, Any]) -> None:
        ns = ds["metadata"]["namespace"]
        revision = template_hash(ds["spec"]["template"])
        selector = (ds["spec"]["template"].get("spec") or {}).get("nodeSelector") or {}
        nodes = [
            n["metadata"]["name"]
            for n in self._store.items(NODES)
            if all(n["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
        ]
        by_node = {p["spec"].get("nodeName"): p for p in self._owned_pods(ds)}
        for node in nodes:
            pod = by_node.pop(node, None)
            if (
                pod is not None
                and pod["metadata"]["labels"].get("controller-revision-hash") != revision
            ):
                self._store.delete(PODS, ns, pod["metadata"]["name"])
                pod = None
            if pod is None:
                self._new_pod(
                    ds,
                    f"{ds['metadata']['name']}-{random_suffix()}",
                    {
                        "controller-revision-hash": revision,
                        "pod-template-generation": str(ds["metadata"].get("generation", 1)),
                    },
                    node=node,
                )
        for pod in by_node.values():
            self._store.delete(PODS, ns, pod["metadata"]["name"])
        owned = self._owned_pods(ds)
        ready = sum(1 for p in owned if _pod_ready(p))
        self._store.set_status(
            DAEMONSETS,
            ds,
            {
                "observedGeneration": ds["metadata"].get("generation", 1),
                "desiredNumberScheduled": len(nodes),
                "currentNumberScheduled": len(owned),
                "updatedNumberScheduled": len(owned),
                "numberMisscheduled": 0,
                "numberReady": ready,
                "numberAvailable": ready,
            },
        )

    def _pod(self, pod: dict[str, Any]) -> bool:
        """Schedule and start one pod; returns whether it still waits on the delay."""
        spec, status = pod["spec"], pod.setdefault("status", {})
        nodes = [n["metadata"]["name"] for n in self._store.items(NODES)]
        if not spec.get("nodeName") and nodes:
            spec["nodeName"] = nodes[self._node_turn % len(nodes)]
            self._node_turn += 1
            self._store.touch(PODS, pod)
        if (
            status.get("phase") != "Pending"
            or not spec.get("nodeName")
            or status.get("containerStatuses") is not None  # started, or stuck pulling
        ):
            return False
        uid = pod["metadata"]["uid"]
        loop = asyncio.get_running_loop()
        started = self._pending_since.setdefault(uid, loop.time())
        if loop.time() - started < self._behaviour.ready_delay:
            return True
        self._pending_since.pop(uid, None)
        ts = now_rfc3339()
        node = self._store.find(NODES, "", spec["nodeName"])
        host_ip = node["status"]["addresses"][0]["address"] if node else "10.0.0.1"
        pod_ip = str(ipaddress.IPv4Address("10.244.0.0") + self._next_pod_ip)
        self._next_pod_ip += 1
        bad = [
            c
            for c in spec["containers"]
            if any(str(c.get("image", "")).startswith(p) for p in self._behaviour.unpullable_images)
        ]
        containers: list[dict[str, Any]] = []
        for c in spec["containers"]:
            failing = c in bad
            state: dict[str, Any] = (
                {
                    "waiting": {
                        "reason": "ErrImagePull",
                        "message": f'failed to pull and unpack image "{c["image"]}": not found',
                    }
                }
                if failing
                else {"running": {"startedAt": ts}}
            )
            containers.append(
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "" if failing else f"{c['image']}@sha256:{'0' * 64}",
                    "containerID": ""
                    if failing
                    else f"containerd://{uid.replace('-', '')}{len(containers)}",
                    "ready": not failing,
                    "started": not failing,
                    "restartCount": 0,
                    "state": state,
                    "lastState": {},
                }
            )
        for c in containers:
            if not c["containerID"]:
                del c["containerID"]
        ok = not bad

        def cond(kind: str, value: bool) -> dict[str, Any]:
            return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": ts}

        new_status = {
            "phase": "Running" if ok else "Pending",
            "conditions": [
                cond("PodReadyToStartContainers", True),
                cond("Initialized", True),
                cond("Ready", ok),
                cond("ContainersReady", ok),
                cond("PodScheduled", True),
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": ts,
            "containerStatuses": containers,
            "qosClass": status.get("qosClass", "BestEffort"),
        }
        if not ok:
            new_status["conditions"][2]["reason"] = "ContainersNotReady"
        self._store.set_status(PODS, pod, new_status)
        return False

    def _services(self) -> bool:
        """Hand LoadBalancer Services an IP; returns whether one waits on the delay."""
        waiting = False
        used = {
            ing.get("ip")
            for svc in self._store.items(SERVICES)
            for ing in (svc.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
        }
        loop = asyncio.get_running_loop()
        for svc in list(self._store.items(SERVICES)):
            if svc["spec"].get("type") != "LoadBalancer":
                if (svc.get("status", {}).get("loadBalancer") or {}).get("ingress"):
                    self._store.set_status(SERVICES, svc, {"loadBalancer": {}})
                continue
            if (svc.get("status", {}).get("loadBalancer") or {}).get("ingress"):
                continue
            uid = svc["metadata"]["uid"]
            started = self._pending_since.setdefault(uid, loop.time())
            if loop.time() - started < self._behaviour.ready_delay:
                waiting = True
                continue
            free = [ip for ip in self._behaviour.lb_pool if ip not in used]
            if not free:
                continue  # stays <pending>, like a cloud out of addresses
            self._pending_since.pop(uid, None)
            ip = free[0]
            used.add(ip)
            ingress: dict[str, Any] = {"ip": ip, "ipMode": "VIP"}
            self._store.set_status(SERVICES, svc, {"loadBalancer": {"ingress": [ingress]}})
        return waiting

    def _claims(self) -> None:
        for pvc in list(self._store.items(PVCS)):
            if (pvc.get("status") or {}).get("phase") == "Bound":
                continue
            spec = pvc["spec"]
            if not spec.get("volumeName"):
                spec["volumeName"] = f"pvc-{pvc['metadata']['uid']}"
                spec.setdefault("storageClassName", "standard")
            self._store.set_status(
                PVCS,
                pvc,
                {
                    "phase": "Bound",
                    "accessModes": list(spec.get("accessModes") or []),
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                },
            )


def _pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


__all__ = ["ClusterBehaviour", "ClusterLoop", "NodeSpec", "ResourceType", "node_object"]
