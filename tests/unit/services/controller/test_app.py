"""App rules of the Controller (controller.md §3.7), with the original's exact texts.

`configure_app` and `update_app` read referenced objects through `References`; here a
dictionary-backed fake stands behind that interface (the API backs it with the etcd
transaction, see tests/integration/controller/test_app_api.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    common_pb2,
    decimal_pb2,
    flavor_pb2,
    resources_pb2,
    trustpolicy_pb2,
)

from edge_cloud.errors import EdgeError, FailedPrecondition, InvalidArgument, NotFound
from edge_cloud.objects import keys
from edge_cloud.store import KeyValue
from services.controller import _app
from services.controller._app import AppEnv

ENV = AppEnv(region="local", registry_fqdn="reg.example.com")
MD5 = "0123456789abcdef0123456789abcdef"
K8S_MANIFEST = """---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
data:
  a: "b"
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: LoadBalancer
  ports:
  - port: 80
    targetPort: 8080
"""


class FakeRefs:
    """`References` over dictionaries."""

    def __init__(self) -> None:
        self.flavors: dict[str, flavor_pb2.Flavor] = {
            "x1.small": flavor_pb2.Flavor(
                key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=2, disk=20
            ),
            "x1.gpu": flavor_pb2.Flavor(
                key=flavor_pb2.FlavorKey(name="x1.gpu"),
                ram=4096,
                vcpus=4,
                disk=40,
                gpus=[resources_pb2.GPUResource(model_id="nvidia-t4", count=1, memory=16)],
            ),
        }
        self.policies: set[str] = set()
        self.alerts: set[str] = set()
        self.apps: list[app_pb2.App] = []
        self.trust_error: EdgeError | None = None
        self.tpe: str | None = None

    def flavor(self, key: flavor_pb2.FlavorKey) -> flavor_pb2.Flavor:
        if key.name not in self.flavors:
            raise keys.not_found(key)
        return self.flavors[key.name]

    def auto_prov_policy(
        self, key: autoscalepolicy_pb2.PolicyKey
    ) -> autoprovpolicy_pb2.AutoProvPolicy:
        if key.name not in self.policies:
            raise keys.not_found(key)
        return autoprovpolicy_pb2.AutoProvPolicy(key=key)

    def alert_policy(self, key: alertpolicy_pb2.AlertPolicyKey) -> alertpolicy_pb2.AlertPolicy:
        if key.name not in self.alerts:
            raise keys.not_found(key)
        return alertpolicy_pb2.AlertPolicy(key=key)

    def other_apps(self) -> Iterable[app_pb2.App]:
        return self.apps

    def verify_trust_policies(self, app: app_pb2.App, instances: Collection[str]) -> None:
        if instances and self.trust_error is not None:
            raise self.trust_error

    def trust_policy_exception(self, app_key: app_pb2.AppKey) -> str | None:
        return self.tpe


def new_app(**kw: Any) -> app_pb2.App:
    fields: dict[str, Any] = {
        "key": app_pb2.AppKey(organization="dev", name="myapp", version="1.0"),
        "image_type": app_pb2.IMAGE_TYPE_DOCKER,
        "image_path": "registry.example.com/dev/myapp:1.0",
        "access_ports": "tcp:80",
        "default_flavor": flavor_pb2.FlavorKey(name="x1.small"),
    }
    fields.update(kw)
    return app_pb2.App(**fields)


def configured(app: app_pb2.App, refs: FakeRefs | None = None, env: AppEnv = ENV) -> app_pb2.App:
    _app.configure_app(app, refs or FakeRefs(), env, revision=None)
    return app


def refused(app: app_pb2.App, refs: FakeRefs | None = None, env: AppEnv = ENV) -> str:
    def run() -> None:
        _app.check_app(app)
        configured(app, refs, env)

    with pytest.raises(EdgeError) as caught:
        run()
    return caught.value.message


# --- request validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (app_pb2.AppKey(organization="dev", name="", version="1"), "Invalid app name"),
        (app_pb2.AppKey(organization="dev", name="-x", version="1"), "Invalid app name"),
        (app_pb2.AppKey(organization="dev", name="a", version="1/2"), "Invalid app version"),
        (app_pb2.AppKey(organization="d@v", name="a", version="1"), "Invalid app organization"),
    ],
)
def test_key_validation(key: app_pb2.AppKey, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _app.check_app(new_app(key=key))
    assert caught.value.message == message


def test_enum_values_are_checked() -> None:
    for field, message in (
        ("image_type", "invalid ImageType"),
        ("access_type", "invalid AccessType"),
        ("vm_app_os_type", "invalid VmAppOsType"),
        ("qos_session_profile", "invalid QosSessionProfile"),
        ("del_opt", "invalid DelOpt"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            _app.check_app(new_app(**{field: 99}))
        assert caught.value.message == message


def test_ports_config_kinds_and_delimiter() -> None:
    with pytest.raises(InvalidArgument, match=r"^App ports out of range$"):
        _app.check_app(new_app(access_ports="tcp:0"))
    # an update checks ports only when it changes them
    _app.check_app(new_app(access_ports="tcp:0", fields=["37"]), ["37"])
    with pytest.raises(InvalidArgument, match=r"^Invalid Config Kind - foo$"):
        _app.check_app(new_app(configs=[app_pb2.ConfigFile(kind="foo", config="x")]))
    with pytest.raises(InvalidArgument) as caught:
        _app.check_app(new_app(template_delimiter="[["))
    assert caught.value.message == (
        "invalid app template delimiter [[, valid format '<START-DELIM> <END-DELIM>'"
    )
    _app.check_app(new_app(template_delimiter="[[ ]]"))


def _pem(key: Any, fmt: serialization.PublicFormat) -> str:
    return str(key.public_bytes(serialization.Encoding.PEM, fmt).decode())


def test_auth_public_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key()
    _app.check_public_key(_pem(public, serialization.PublicFormat.SubjectPublicKeyInfo))
    _app.check_public_key(_pem(public, serialization.PublicFormat.PKCS1))
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _app.check_public_key(ssh.decode() + " me@laptop")

    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = _pem(public, serialization.PublicFormat.SubjectPublicKeyInfo)
    cases = [
        (_pem(ec_key, serialization.PublicFormat.SubjectPublicKeyInfo), "invalid PEM passed"),
        (pem.replace("MII", "XXX", 1), "x509.parse pki public key"),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            'Unsupported key tpe "PRIVATE KEY"',
        ),
        ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n", "ssh2 key format not supported"),
        ("not a key", "failed to parse public key: ssh: no key found\n"),
        # anything after the PEM block's end line: not PEM, and not an OpenSSH key either
        (pem + "\n", "failed to parse public key: ssh: no key found\n"),
    ]
    for text, message in cases:
        with pytest.raises(InvalidArgument) as caught:
            _app.check_app(new_app(auth_public_key=text))
        assert caught.value.message == message


def test_secret_env_vars_need_vault() -> None:
    with pytest.raises(FailedPrecondition, match="secrets backend \\(Vault\\)"):
        _app.refuse_secret_env_vars(new_app(secret_env_vars={"TOKEN": "x"}))
    _app.refuse_secret_env_vars(new_app(env_vars={"A": "b"}))


# --- configure: deployment, image, configs ----------------------------------------------------


def test_deployment_and_image_type_default_each_other() -> None:
    assert configured(new_app()).deployment == "kubernetes"
    helm = new_app(image_type=app_pb2.IMAGE_TYPE_HELM, image_path="oci://reg/charts/x")
    assert configured(helm).deployment == "helm"
    docker = new_app(image_type=app_pb2.IMAGE_TYPE_UNKNOWN, deployment="docker")
    assert configured(docker).image_type == app_pb2.IMAGE_TYPE_DOCKER
    assert refused(new_app(image_type=app_pb2.IMAGE_TYPE_UNKNOWN)) == (
        "unknown image type IMAGE_TYPE_UNKNOWN"
    )
    assert refused(new_app(deployment="swarm")) == (
        "Invalid deployment, must be one of [kubernetes vm helm docker]"
    )
    assert refused(new_app(deployment="vm")) == "Deployment is not valid for image type"
    vm = new_app(image_type=app_pb2.IMAGE_TYPE_UNKNOWN, deployment="vm")
    assert refused(vm) == "Deployment is not valid for image type"


def test_helm_takes_no_manifest() -> None:
    helm = new_app(
        image_type=app_pb2.IMAGE_TYPE_HELM,
        image_path="https://myhelmrepo/charts:mycharts/myhelmapp",
        deployment_manifest=K8S_MANIFEST,
    )
    assert refused(helm) == (
        "Manifest is not used for Helm deployments. Use config files for customizations"
    )
    helm.deployment_manifest = ""
    assert configured(helm).image_path == "https://myhelmrepo/charts:mycharts/myhelmapp"
    host_only = new_app(
        image_type=app_pb2.IMAGE_TYPE_HELM, image_path="https://charts.min.io:minio/minio"
    )
    assert configured(host_only).image_path == "https://charts.min.io/:minio/minio"
    bad = new_app(image_type=app_pb2.IMAGE_TYPE_HELM, image_path="ftp://x/y")
    assert refused(bad) == (
        'unsupported helm chart URL scheme for "ftp://x/y", must be http(s):// or oci://'
    )


def test_configs_per_deployment() -> None:
    env_yaml = app_pb2.ConfigFile(kind="envVarsYaml", config="- name: A\n  value: b\n")
    assert refused(new_app(deployment="docker", configs=[env_yaml])) == (
        "Invalid Config Kind(envVarsYaml) for deployment type(docker)"
    )
    empty = app_pb2.ConfigFile(kind="envVarsYaml")
    assert refused(new_app(configs=[empty])) == "Empty config for config kind envVarsYaml"
    configured(new_app(configs=[env_yaml]))
    remote = app_pb2.ConfigFile(kind="helmCustomizationYaml", config="http://invalidUrl")
    helm = new_app(image_type=app_pb2.IMAGE_TYPE_HELM, image_path="oci://r/c", configs=[remote])
    with pytest.raises(FailedPrecondition, match="does not download"):
        configured(helm)


def test_env_vars_only_for_docker_and_kubernetes() -> None:
    vm = new_app(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{MD5}",
        env_vars={"A": "b"},
    )
    assert refused(vm) == (
        "environment variables and secret environment variables are only supported for "
        "docker and kubernetes deployments"
    )
    assert dict(configured(new_app(env_vars={"A": "b"})).env_vars) == {"A": "b"}


def test_outbound_rules_are_normalised_then_checked() -> None:
    rule = trustpolicy_pb2.SecurityRule(protocol="tcp", port_range_min=443, remote_cidr="0.0.0.0/0")
    app = configured(new_app(required_outbound_connections=[rule]))
    stored = app.required_outbound_connections[0]
    assert (stored.protocol, stored.port_range_max) == ("TCP", 443)
    bad = trustpolicy_pb2.SecurityRule(protocol="sctp", port_range_min=1, remote_cidr="0.0.0.0/0")
    assert refused(new_app(required_outbound_connections=[bad])) == (
        "Protocol must be one of: (TCP,UDP,ICMP)"
    )
    cidr = trustpolicy_pb2.SecurityRule(protocol="udp", port_range_min=1, remote_cidr="10.0.0.0")
    assert refused(new_app(required_outbound_connections=[cidr])) == (
        "invalid CIDR address: 10.0.0.0"
    )


def test_access_type() -> None:
    assert refused(new_app(access_type=app_pb2.ACCESS_TYPE_DIRECT)) == (
        "Access Type Direct no longer supported"
    )
    assert configured(new_app()).access_type == app_pb2.ACCESS_TYPE_LOAD_BALANCER


def test_vm_with_command_and_os_type_rules() -> None:
    vm = new_app(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{MD5}",
        command="run",
    )
    assert refused(vm) == "Invalid argument, command is not supported for VM based deployments"
    k8s = new_app(vm_app_os_type=app_pb2.VM_APP_OS_LINUX)
    assert refused(k8s) == "VM App OS Type is only supported for VM deployments"


def test_docker_image_path_defaults_and_fixes() -> None:
    no_path = new_app(
        image_path="", key=app_pb2.AppKey(organization="Dev&Co", name="My App!", version="1.0")
    )
    assert refused(no_path, env=AppEnv(region="local")) == (
        "No image path specified and no default registryFQDN to fall back upon. Please "
        "specify the image path"
    )
    assert configured(no_path).image_path == "reg.example.com/Dev-Co/images/MyApp.:1.0"
    assert configured(new_app(image_path="https://reg.io/a/b:1")).image_path == "reg.io/a/b:1"
    assert configured(new_app(image_path="nginx")).image_path == "docker.io/nginx"
    assert configured(new_app(image_path="localhost/img:1")).image_path == "img:1"
    # a manifest instead of an image path: nothing is made up
    compose = new_app(image_path="", deployment="docker", deployment_manifest="some manifest")
    assert configured(compose).image_path == ""


def test_vm_image_paths() -> None:
    qcow = new_app(image_type=app_pb2.IMAGE_TYPE_QCOW, image_path="")
    assert refused(qcow) == "md5sum should be provided if imagepath is not specified"
    qcow.md5sum = MD5
    env = AppEnv(region="local", artifactory_fqdn="https://artifactory.example.com/")
    assert configured(qcow, env=env).image_path == (
        f"https://artifactory.example.com/repo-dev/myapp.qcow2#md5:{MD5}"
    )
    for path, message in (
        ("artifacts.example.com/images/", "missing filename from image path"),
        (
            "artifacts.example.com/vm.qcow2",
            "md5 checksum of image is required. Please append checksum to imagepath: "
            '"<url>#md5:checksum"',
        ),
        ("artifacts.example.com/vm.qcow2#sha1:" + MD5, "only md5 checksum is supported"),
        ("artifacts.example.com/vm.qcow2#md5:abc", "md5 checksum must be at least 32 characters"),
        ("artifacts.example.com/vm.qcow2#md5:" + "z" * 32, "invalid md5 checksum"),
    ):
        vm = new_app(image_type=app_pb2.IMAGE_TYPE_QCOW, image_path=path)
        assert refused(vm) == message
    ovf = new_app(image_type=app_pb2.IMAGE_TYPE_OVF, image_path="x.example.com/disk.vmdk")
    assert refused(ovf) == (
        "image path does not specify an OVF file https://x.example.com/disk.vmdk, <nil>"
    )


def test_registry_credentials() -> None:
    assert refused(new_app(username="me")) == (
        "registry username specified but credentials missing"
    )
    assert refused(new_app(credentials="pw")) == (
        "registry credentials specified but username missing"
    )
    with pytest.raises(FailedPrecondition, match="secrets backend \\(Vault\\)"):
        configured(new_app(username="me", credentials="pw"))


def test_scale_with_cluster_and_serverless() -> None:
    docker = new_app(deployment="docker", scale_with_cluster=True)
    assert refused(docker) == "app scaling is only supported for Kubernetes deployments"
    daemon = configured(new_app(scale_with_cluster=True))
    assert "kind: DaemonSet" in daemon.deployment_manifest
    user = new_app(scale_with_cluster=True, deployment_manifest=K8S_MANIFEST)
    assert refused(user) == "DaemonSet required in manifest when ScaleWithCluster set"
    legacy = new_app(serverless_config=app_pb2.ServerlessConfig(ram=10))
    assert refused(legacy) == (
        "serverless config is deprecated, please replace with KubernetesResources"
    )
    assert refused(new_app(deployment="docker", allow_serverless=True)) == (
        "Allow serverless only supported for deployment type Kubernetes"
    )
    assert refused(new_app(allow_serverless=True, deployment_manifest=K8S_MANIFEST)) == (
        "Allow serverless only allowed for system generated manifests"
    )
    assert configured(new_app(allow_serverless=True)).deployment_generator == "kubernetes-basic"


def test_qos_duration_needs_a_profile() -> None:
    assert refused(new_app(qos_session_duration=60)) == (
        "QosSessionDuration cannot be specified without setting QosSessionProfile"
    )
    configured(new_app(qos_session_duration=60, qos_session_profile=app_pb2.QOS_LOW_LATENCY))


# --- resources --------------------------------------------------------------------------------


def test_flavor_becomes_resources_and_is_cleared() -> None:
    k8s = configured(new_app())
    assert not k8s.HasField("default_flavor")
    pool = k8s.kubernetes_resources.cpu_pool
    assert (pool.total_vcpus.whole, pool.total_memory, pool.total_disk) == (2, 1024, 20)
    assert (pool.topology.min_node_vcpus, pool.topology.min_number_of_nodes) == (2, 1)
    docker = configured(new_app(deployment="docker"))
    assert (docker.node_resources.vcpus, docker.node_resources.ram) == (2, 1024)
    assert not docker.HasField("kubernetes_resources")
    gpu = configured(new_app(default_flavor=flavor_pb2.FlavorKey(name="x1.gpu")))
    assert gpu.kubernetes_resources.HasField("gpu_pool")
    assert gpu.kubernetes_resources.gpu_pool.total_gpus[0].vendor == "nvidia"


def test_resource_spec_errors() -> None:
    kr = resources_pb2.KubernetesResources(
        cpu_pool=resources_pb2.NodePoolResources(
            total_vcpus=decimal_pb2.Udec64(whole=1), total_memory=512
        )
    )
    nodes = resources_pb2.NodeResources(vcpus=1, ram=512)
    no_flavor = flavor_pb2.FlavorKey()
    cases = [
        (new_app(kubernetes_resources=kr), "cannot specify both flavor and KubernetesResources"),
        (
            new_app(deployment="docker", node_resources=nodes),
            "cannot specify both flavor and NodeResources",
        ),
        (new_app(default_flavor=no_flavor), "missing flavor or Kubernetes resources"),
        (
            new_app(default_flavor=no_flavor, deployment="docker"),
            "missing flavor or node resources",
        ),
        (
            new_app(default_flavor=no_flavor, deployment="docker", kubernetes_resources=kr),
            "cannot specify Kubernetes resources for docker deployment",
        ),
        (
            new_app(default_flavor=no_flavor, node_resources=nodes),
            "cannot specify node resources for Kubernetes deployment",
        ),
        (
            new_app(
                default_flavor=no_flavor,
                kubernetes_resources=resources_pb2.KubernetesResources(),
            ),
            "invalid KubernetesResources, no pools specified",
        ),
        (
            new_app(
                default_flavor=no_flavor,
                deployment="docker",
                node_resources=resources_pb2.NodeResources(ram=512),
            ),
            "invalid NodeResources, vcpus must be greater than 0, or infra node flavor must "
            "be specified",
        ),
    ]
    for app, message in cases:
        assert refused(app) == message
    vm = new_app(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://a.example.com/vm.qcow2#md5:{MD5}",
        kubernetes_resources=resources_pb2.KubernetesResources(),
    )
    assert refused(vm) == "cannot specify Kubernetes resources for vm deployment"
    missing = new_app(default_flavor=flavor_pb2.FlavorKey(name="nope"))
    with pytest.raises(NotFound, match=r'^Flavor key \{"name":"nope"\} not found$'):
        configured(missing)
    own = configured(new_app(default_flavor=no_flavor, kubernetes_resources=kr))
    assert own.kubernetes_resources.cpu_pool.topology.min_number_of_nodes == 1


# --- ports, manifests ----------------------------------------------------------------------------


def test_skip_health_check_ports() -> None:
    assert refused(new_app(skip_hc_ports="udp:11111")) == (
        "Protocol L_PROTO_UDP unsupported for healthchecks"
    )
    assert refused(new_app(skip_hc_ports="tcp:444")) == "skipHcPort 444 not found in accessPorts"
    ranged = new_app(access_ports="tcp:5000-5002", skip_hc_ports="tcp:5000-5004")
    assert refused(ranged) == "skipHcPort 5003 not found in accessPorts"
    configured(new_app(access_ports="tcp:5000-5002", skip_hc_ports="tcp:5000-5002"))
    configured(new_app(skip_hc_ports="all"))


def test_http_ports_and_namespaces_only_for_kubernetes() -> None:
    docker = new_app(deployment="docker", access_ports="tcp:80,http:443,http:8080")
    assert refused(docker) == "http ports [443 8080] not allowed for docker deployment"
    assert refused(new_app(deployment="docker", manages_own_namespaces=True)) == (
        "cannot specify Manages Own Namespaces for non-Kubernetes app"
    )
    assert refused(new_app(access_ports="tcp:80,tcp:80")) == (
        "duplicate access port definitions for tcp:80, please add a service name substring "
        "to distinguish"
    )
    configured(new_app(access_ports="tcp:80,http:443", manages_own_namespaces=True))


def test_user_manifests_are_checked_against_ports() -> None:
    ok = configured(new_app(deployment_manifest=K8S_MANIFEST))
    assert (ok.deployment_manifest, ok.deployment_generator) == (K8S_MANIFEST, "")
    missing = new_app(deployment_manifest=K8S_MANIFEST, access_ports="tcp:80,tcp:81")
    assert refused(missing) == (
        f"Invalid deployment manifest, {K8S_MANIFEST}, port tcp:81 defined in AccessPorts but "
        "missing from kubernetes manifest in a LoadBalancer service (TCP/UDP/HTTP) or "
        "ClusterIP service (HTTP only)"
    )
    vm = new_app(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://a.example.com/vm.qcow2#md5:{MD5}",
        deployment_manifest="echo hi",
    )
    assert refused(vm) == (
        "Invalid deployment manifest, echo hi, only cloud-init script support, must start "
        "with '#cloud-config'"
    )
    remote = new_app(deployment_manifest="https://example.com/app.yaml")
    with pytest.raises(FailedPrecondition, match="does not download"):
        configured(remote)


def test_generated_manifest_is_the_originals() -> None:
    app = configured(
        new_app(
            key=app_pb2.AppKey(organization="dev", name="My_App", version="1.0"),
            image_path="reg.example.com:5000/dev/app:1",
            access_ports="tcp:80:id=web,udp:10000-10001",
            command='server --name "a b"',
            command_args=[" -v "],
        )
    )
    assert app.deployment_generator == "kubernetes-basic"
    assert app.deployment_manifest == (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: my-app10-tcp\n  labels:\n"
        "    run: my-app1.0\nspec:\n  type: LoadBalancer\n  ports:\n  - name: web\n"
        "    protocol: TCP\n    port: 80\n    targetPort: 80\n  selector:\n    run: my-app1.0\n"
        "---\n"
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: my-app10-udp\n  labels:\n"
        "    run: my-app1.0\nspec:\n  type: LoadBalancer\n  ports:\n  - name: udp10000\n"
        "    protocol: UDP\n    port: 10000\n    targetPort: 10000\n  - name: udp10001\n"
        "    protocol: UDP\n    port: 10001\n    targetPort: 10001\n  selector:\n"
        "    run: my-app1.0\n"
        "---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: my-app10-deployment\n"
        "spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      run: my-app1.0\n"
        "  template:\n    metadata:\n      labels:\n        run: my-app1.0\n"
        "        mexDeployGen: kubernetes-basic\n    spec:\n      volumes:\n"
        "      imagePullSecrets:\n      - name: reg.example.com-5000\n      containers:\n"
        "      - name: my-app10\n        image: reg.example.com:5000/dev/app:1\n"
        "        imagePullPolicy: Always\n        ports:\n        - containerPort: 80\n"
        "          protocol: TCP\n        - containerPort: 10000\n          protocol: UDP\n"
        "        - containerPort: 10001\n          protocol: UDP\n        command:\n"
        '        - server\n        - --name\n        - "a b"\n        args:\n        - -v\n'
    )


# --- other Apps, policies ------------------------------------------------------------------------


def test_android_package_unique_across_apps() -> None:
    refs = FakeRefs()
    refs.apps = [new_app(android_package_name="com.dev.myapp")]
    same_app = new_app(
        key=app_pb2.AppKey(organization="dev", name="myapp", version="2.0"),
        android_package_name="com.dev.myapp",
    )
    configured(same_app, refs)  # another version of the same App may share it
    other = new_app(
        key=app_pb2.AppKey(organization="dev", name="other", version="1.0"),
        android_package_name="com.dev.myapp",
    )
    assert refused(other, refs) == "AndroidPackageName: com.dev.myapp in use by another App"


def test_policies_must_exist_in_the_apps_organization() -> None:
    refs = FakeRefs()
    app = new_app(auto_prov_policies=["p1"], alert_policies=["a1"])
    with pytest.raises(NotFound) as caught:
        configured(app, refs)
    assert caught.value.message == 'Policy key {"organization":"dev","name":"p1"} not found'
    refs.policies.add("p1")
    with pytest.raises(NotFound) as caught:
        configured(new_app(auto_prov_policies=["p1"], alert_policies=["a1"]), refs)
    assert caught.value.message == 'AlertPolicy key {"organization":"dev","name":"a1"} not found'
    refs.alerts.add("a1")
    configured(new_app(auto_prov_policies=["p1"], alert_policies=["a1"]), refs)
    legacy = new_app(auto_prov_policy="p0")
    with pytest.raises(NotFound, match='"name":"p0"'):
        configured(legacy, refs)
    assert _app.auto_prov_policy_names(
        new_app(auto_prov_policy="p0", auto_prov_policies=["p0", "p1"])
    ) == [
        "p0",
        "p1",
    ]


# --- update ---------------------------------------------------------------------------------------


def stored(**kw: Any) -> app_pb2.App:
    return configured(new_app(**kw))


def update(
    current: app_pb2.App,
    request: app_pb2.App,
    *,
    instances: Collection[str] = (),
    refs: FakeRefs | None = None,
    now: datetime | None = None,
) -> app_pb2.App:
    request.key.CopyFrom(current.key)
    return _app.update_app(
        current, request, refs=refs or FakeRefs(), env=ENV, instances=instances, now=now
    )


def update_refused(current: app_pb2.App, request: app_pb2.App, **kw: Any) -> str:
    with pytest.raises(EdgeError) as caught:
        update(current, request, **kw)
    return caught.value.message


INSTANCE = '{"name":"ai1","organization":"dev"}'


def test_frozen_fields_while_instances_exist() -> None:
    current = stored()
    for path, name in (
        ("7", "Access Ports"),
        ("34", "Skip Hc Ports"),
        ("15", "Deployment"),
        ("17", "Deployment Generator"),
    ):
        request = app_pb2.App(fields=[path], access_ports="tcp:81", deployment="kubernetes")
        assert update_refused(current, request, instances=[INSTANCE]) == (
            f"Cannot update {name} when AppInst exists"
        )
    changed = update(current, app_pb2.App(fields=["7"], access_ports="tcp:81"))
    assert changed.access_ports == "tcp:81"
    assert "port: 81" in changed.deployment_manifest  # regenerated


def test_vm_apps_with_instances_only_change_trust_and_os() -> None:
    vm = stored(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://a.example.com/vm.qcow2#md5:{MD5}",
    )
    request = app_pb2.App(fields=["13", "37"], command="x", trusted=True)
    assert update_refused(vm, request, instances=[INSTANCE]) == (
        "Update App field Command not supported for deployment: vm when AppInsts exist"
    )
    ok = update(
        vm,
        app_pb2.App(fields=["37", "41"], trusted=True, vm_app_os_type=app_pb2.VM_APP_OS_LINUX),
        instances=[INSTANCE],
    )
    assert (ok.trusted, ok.vm_app_os_type) == (True, app_pb2.VM_APP_OS_LINUX)


def test_docker_manifest_type_frozen_while_instances_exist() -> None:
    docker = stored(deployment="docker")
    request = app_pb2.App(fields=["16"], deployment_manifest="services: {}\n")
    assert update_refused(docker, request, instances=[INSTANCE]) == (
        "Cannot change App manifest from : docker to: docker-compose when AppInsts exist"
    )
    update(docker, app_pb2.App(fields=["37"], trusted=True), instances=[INSTANCE])


def test_user_manifest_must_come_again_with_new_ports() -> None:
    k8s = stored(deployment_manifest=K8S_MANIFEST)
    assert update_refused(k8s, app_pb2.App(fields=["7"], access_ports="tcp:80,tcp:81")) == (
        "kubernetes manifest which was previously specified must be provided again when "
        "changing access ports"
    )
    vm = stored(
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path=f"https://a.example.com/vm.qcow2#md5:{MD5}",
        deployment_manifest="#cloud-config vmManifest",
    )
    kept = update(vm, app_pb2.App(fields=["7"], access_ports="tcp:80,tcp:81"))
    assert kept.deployment_manifest == "#cloud-config vmManifest"


def test_revision_generated_unless_given_or_only_alert_policies() -> None:
    current = stored(revision="r1")
    at = datetime(2024, 5, 6, 7, 8, 9)
    changed = update(current, app_pb2.App(fields=["37"], trusted=True), now=at)
    assert changed.revision == "2024-05-06T070809"
    given = update(current, app_pb2.App(fields=["37"], trusted=True, revision="v2"), now=at)
    assert given.revision == "v2"
    refs = FakeRefs()
    refs.alerts.add("a1")
    alerts = update(current, app_pb2.App(fields=["42"], alert_policies=["a1"]), refs=refs, now=at)
    assert (alerts.revision, list(alerts.alert_policies)) == ("r1", ["a1"])


def test_update_list_actions() -> None:
    current = stored(env_vars={"env1": "val1", "env2": "val2"})
    added = update(
        current,
        app_pb2.App(fields=["47", "49"], env_vars={"env3": "val3"}, update_list_action="add"),
    )
    assert dict(added.env_vars) == {"env1": "val1", "env2": "val2", "env3": "val3"}
    removed = update(
        added,
        app_pb2.App(fields=["47"], env_vars={"env1": ""}, update_list_action="remove"),
    )
    assert dict(removed.env_vars) == {"env2": "val2", "env3": "val3"}
    replaced = update(removed, app_pb2.App(fields=["47"], env_vars={"env4": "val4"}))
    assert dict(replaced.env_vars) == {"env4": "val4"}
    refs = FakeRefs()
    refs.alerts.update({"a1", "a2"})
    with_alerts = update(
        current,
        app_pb2.App(fields=["42"], alert_policies=["a1", "a2"], update_list_action="add"),
        refs=refs,
    )
    dropped = update(
        with_alerts,
        app_pb2.App(fields=["42"], alert_policies=["a1"], update_list_action="remove"),
        refs=refs,
    )
    assert list(dropped.alert_policies) == ["a2"]


def test_qos_update_rules() -> None:
    current = stored(qos_session_profile=app_pb2.QOS_LOW_LATENCY, qos_session_duration=60)
    longer = update(current, app_pb2.App(fields=["44"], qos_session_duration=120))
    assert longer.qos_session_duration == 120
    off = update(current, app_pb2.App(fields=["43"], qos_session_profile=app_pb2.QOS_NO_PRIORITY))
    assert off.qos_session_duration == 0
    plain = stored()
    assert update_refused(plain, app_pb2.App(fields=["44"], qos_session_duration=5)) == (
        "QosSessionDuration cannot be specified without setting QosSessionProfile"
    )


def test_untrusting_an_app_checks_instances_and_exceptions() -> None:
    current = stored(trusted=True)
    refs = FakeRefs()
    refs.trust_error = FailedPrecondition("Non trusted app")
    assert (
        update_refused(
            current, app_pb2.App(fields=["37"], trusted=False), instances=[INSTANCE], refs=refs
        )
        == "Cannot set app to untrusted which has an instance on a trusted cloudlet"
    )
    refs = FakeRefs()
    refs.tpe = '{"app_key":{},"zone_pool_key":{},"name":"tpe1"}'
    assert update_refused(current, app_pb2.App(fields=["37"], trusted=False), refs=refs) == (
        'Application in use by Trust Policy Exception {"app_key":{},"zone_pool_key":{},'
        '"name":"tpe1"}'
    )


def test_global_id_is_not_user_updatable() -> None:
    assert "45" not in _app.UPDATABLE
    assert {"4", "7", "42", "47", "49", "50"} <= _app.UPDATABLE
    assert not {"2", "20", "28", "31", "35", "36", "56"} & _app.UPDATABLE


# --- identifiers, delete ------------------------------------------------------------------------


def test_global_id_candidates() -> None:
    key = app_pb2.AppKey(organization="AtlanticInc", name="Pillimo Go!", version="1.0.0")
    first, second, *_ = _app.global_id_candidates("local", key)
    assert (first, second) == ("local-pillimogo100atlanticinc", "local-pillimogo100atlanticinc1")
    long = app_pb2.AppKey(organization="o" * 40, name="n" * 40, version="v" * 40)
    ids = _app.global_id_candidates("my_long_region_name", long)
    assert ids[0] == "my-long-re-" + "n" * 30 + "v" * 9
    assert ids[3] == "my-long-re-" + "n" * 30 + "v" * 8 + "3"
    assert len(ids) == 10
    assert all(len(i) <= 50 for i in ids)
    assert _app.dns_sanitize("_Ab-c_d.e_") == "ab-c-de"


def test_choose_global_id_skips_taken_ones() -> None:
    candidates = ["a", "a1", "a2"]
    taken = {_app.global_id_store_key(c): KeyValue(c, c.encode(), 1, 1, 1) for c in ("a", "a1")}
    values: dict[str, KeyValue | None] = {_app.global_id_store_key("a2"): None, **taken}
    assert _app.choose_global_id(candidates, _app.IdKeys(values)) == "a2"
    with pytest.raises(FailedPrecondition) as caught:
        _app.choose_global_id(candidates[:2], _app.IdKeys(values))
    assert caught.value.message == (
        'Unable to generate unique global id from base label of "a", please change key values'
    )


def instance(liveness: int) -> appinst_pb2.AppInst:
    return appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization="dev"),
        liveness=liveness,  # type: ignore[arg-type]
    )


def test_delete_refuses_static_instances() -> None:
    app = stored()
    static = instance(common_pb2.LIVENESS_STATIC)
    with pytest.raises(FailedPrecondition) as caught:
        _app.instances_to_delete(app, [(INSTANCE, static)])
    assert caught.value.message == (
        'Application in use by static AppInst {"name":"ai1","organization":"dev"}'
    )
    dynamic = instance(common_pb2.LIVENESS_DYNAMIC)
    autoprov = instance(common_pb2.LIVENESS_AUTOPROV)
    assert len(_app.instances_to_delete(app, [("a", dynamic), ("b", autoprov), ("c", None)])) == 2
    sidecar = stored(del_opt=app_pb2.AUTO_DELETE)
    assert _app.instances_to_delete(sidecar, [(INSTANCE, static)]) == [static]


def test_update_one_nested_resource_value() -> None:
    current = stored()
    request = app_pb2.App(fields=["50.1.2"])
    request.kubernetes_resources.cpu_pool.total_memory = 4096
    changed = update(current, request)
    expected = resources_pb2.KubernetesResources()
    expected.CopyFrom(current.kubernetes_resources)
    expected.cpu_pool.total_memory = 4096
    assert changed.kubernetes_resources == expected
    flavor_again = app_pb2.App(fields=["9"], default_flavor=flavor_pb2.FlavorKey(name="x1.small"))
    assert update_refused(current, flavor_again) == (
        "cannot specify both flavor and KubernetesResources"
    )
