"""Static checks of docker/: the Dockerfile, compose.yaml and the Helm chart.

Nothing here needs Docker or a cluster. The daemons come from the `edge_cloud.services`
entry-point group and their flags, variables and default ports from their config classes, so
renaming an option or moving a default port fails here before it breaks a deployment.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_cloud.cli.serve import GROUP, available
from edge_cloud.config import CommonConfig, help_text, load, split_host_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
CHART = DOCKER / "helm" / "edge-cloud"
TEMPLATES = CHART / "templates"

DAEMONS = available()
# Listener fields of the config classes and the port names compose and the chart use for them.
LISTENERS = {"api_addr": "api", "notify_addr": "notify", "http_addr": "http"}
SERVERS = ("etcd", "redis", "influxdb")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@cache
def config_class(daemon: str) -> type[CommonConfig]:
    """The CommonConfig subclass in `<package>.config` of the daemon's entry point."""
    (entry,) = (ep for ep in importlib.metadata.entry_points(group=GROUP) if ep.name == daemon)
    package = entry.value.split(":")[0].removesuffix(".__main__")
    module = importlib.import_module(f"{package}.config")
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, CommonConfig)
        and obj is not CommonConfig
        and obj.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{module.__name__} should define one config class, has {found}"
    return found[0]


@cache
def env_names(daemon: str) -> frozenset[str]:
    """Every variable the daemon's config accepts, read from its `--help`."""
    cls = config_class(daemon)
    names = frozenset(re.findall(r"\[env\s+(\S+?);", help_text(cls)))
    assert len(names) == len(dataclasses.fields(cls)), "every option shows its variable"
    return names


def default_ports(daemon: str) -> dict[str, int]:
    """Port name (api, notify, http) to the daemon's default port."""
    defaults = config_class(daemon)()
    ports = {}
    for field, port_name in LISTENERS.items():
        addr = getattr(defaults, field, None)
        if addr:
            ports[port_name] = split_host_port(addr)[1]
    return ports


def default_grace() -> float:
    return max(config_class(d)().shutdown_grace for d in DAEMONS)


def port_of(addr: str) -> int:
    return split_host_port(addr.removeprefix("http://").removeprefix("https://"))[1]


# --- compose ----------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = _yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def compose_env(daemon: str) -> dict[str, str]:
    env = compose()["services"][daemon].get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def test_daemons_are_installed() -> None:
    assert {"controller", "ccrm", "dme"} <= set(DAEMONS)


def test_compose_has_servers_and_every_daemon() -> None:
    services = compose()["services"]
    for name in (*SERVERS, *DAEMONS):
        assert name in services, f"compose.yaml lacks {name}"
    assert services["etcd"]["image"].startswith("quay.io/coreos/etcd:v3.5.")
    assert services["redis"]["image"] == "redis:7"
    assert services["influxdb"]["image"] == "influxdb:1.8"
    for name in SERVERS:
        assert "healthcheck" in services[name]


@pytest.mark.parametrize("daemon", DAEMONS)
def test_compose_daemon_builds_the_one_image(daemon: str) -> None:
    service = compose()["services"][daemon]
    build = service["build"]
    assert build["context"] == ".."
    assert build["dockerfile"] == "docker/Dockerfile"
    assert build["args"]["SERVICE"] == daemon
    assert service["stop_signal"] == "SIGTERM"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_compose_env_names_are_real_options(daemon: str) -> None:
    env = compose_env(daemon)
    unknown = {k for k in env if k.startswith("EDGE_")} - env_names(daemon)
    assert not unknown, f"{daemon}: not options of {config_class(daemon).__name__}: {unknown}"
    # and the values parse: the daemon would start with this environment
    load(config_class(daemon), [], env)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_compose_ports_are_the_default_ports(daemon: str) -> None:
    service = compose()["services"][daemon]
    env = compose_env(daemon)
    defaults = default_ports(daemon)
    published = {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}
    assert published == set(defaults.values())
    env_var = {"api": "EDGE_API_ADDR", "notify": "EDGE_NOTIFY_ADDR", "http": "EDGE_HTTP_ADDR"}
    for name, port in defaults.items():
        assert env[env_var[name]] == f"0.0.0.0:{port}", "listen on all interfaces, default port"
    assert split_host_port(env["EDGE_METRICS_ADDR"])[0] == "0.0.0.0"


@pytest.mark.parametrize("daemon", DAEMONS)
def test_compose_daemon_health_and_order(daemon: str) -> None:
    service = compose()["services"][daemon]
    probe = " ".join(service["healthcheck"]["test"])
    assert "grpc_health" in probe
    assert f"127.0.0.1:{default_ports(daemon)['api']}" in probe
    one_liner = service["healthcheck"]["test"][-1]
    compile(one_liner, f"{daemon} healthcheck", "exec")
    depends = service["depends_on"]
    assert depends, f"{daemon} starts after something"
    assert all(dep["condition"] == "service_healthy" for dep in depends.values())
    for dep in depends:
        assert dep in compose()["services"]


def test_compose_wiring_matches_make_run() -> None:
    ctl = compose_env("controller")
    assert ctl["EDGE_ETCD_URLS"] == "http://etcd:2379"
    assert ctl["EDGE_REDIS_STANDALONE_ADDR"] == "redis:6379"
    assert ctl["EDGE_INFLUX_ADDR"] == "http://influxdb:8086"
    assert ctl["EDGE_PLATFORM_SERVICE_ADDRS"] == f"ccrm=ccrm:{default_ports('ccrm')['api']}"
    notify = f"controller:{default_ports('controller')['notify']}"
    for daemon in ("ccrm", "dme"):
        assert compose_env(daemon)["EDGE_NOTIFY_ADDRS"] == notify
    deps = set(compose()["services"]["controller"]["depends_on"])
    assert deps == set(SERVERS)


def test_compose_grace_above_daemon_grace() -> None:
    for daemon in DAEMONS:
        grace = str(compose()["services"][daemon]["stop_grace_period"])
        assert grace.endswith("s")
        assert float(grace[:-1]) > default_grace()


# --- Dockerfile -------------------------------------------------------------------------------


@cache
def dockerfile() -> str:
    return DOCKERFILE.read_text()


def final_stage() -> str:
    return dockerfile().rsplit("\nFROM ", 1)[1]


def test_dockerfile_builds_like_make_setup_proto() -> None:
    text = dockerfile()
    assert text.count("\nFROM ") >= 2, "multi-stage"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "-c constraints.txt" in text
    assert "scripts/gen_protos.py" in text
    assert "--group build" in text
    assert re.search(r"^ARG SERVICE", text, re.M)
    assert re.search(r"^ARG EXTRAS", text, re.M)


def test_dockerfile_final_stage() -> None:
    stage = final_stage()
    assert stage.startswith("${PYTHON_IMAGE}")
    assert "build-essential" not in stage
    assert "--group" not in stage
    users = re.findall(r"^USER\s+(\S+)", stage, re.M)
    assert users, "the final stage sets a USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^STOPSIGNAL SIGTERM$", stage, re.M)
    assert 'CMD ["edge", "serve", "$SERVICE"]' in stage
    assert re.search(r"^ENTRYPOINT \[", stage, re.M)
    assert re.search(r"ENV SERVICE=\$\{SERVICE\}", stage)


def test_dockerfile_exposes_every_daemon_port_and_checks_health() -> None:
    stage = final_stage()
    (expose,) = re.findall(r"^EXPOSE (.+)$", stage, re.M)
    exposed = {int(p.split("/")[0]) for p in expose.split()}
    for daemon in DAEMONS:
        assert set(default_ports(daemon).values()) <= exposed, daemon
    (metrics,) = re.findall(r"EDGE_METRICS_ADDR=(\S+)", stage)
    metrics_port = split_host_port(metrics)[1]
    assert metrics_port in exposed
    check = stage.split("\nHEALTHCHECK ", 1)[1].split("\n\n", 1)[0]
    assert f"127.0.0.1:{metrics_port}/healthz" in check
    assert "EDGE_METRICS_ADDR" in env_names(DAEMONS[0])


def test_dockerignore_keeps_generated_code_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    for name in (".venv", "gen", ".git"):
        assert name in lines


# --- Helm chart -------------------------------------------------------------------------------


@cache
def values() -> dict[str, Any]:
    data = _yaml(CHART / "values.yaml")
    assert isinstance(data, dict)
    return data


def chart_env(daemon: str) -> dict[str, str]:
    """The environment the Deployment template gives a daemon (daemon env wins)."""
    d = values()["daemons"][daemon]
    env = {**values()["env"], **d["env"]}
    for field, var in d["externalEnv"].items():
        env[var] = values()["external"][field]
    return {k: str(v) for k, v in env.items()}


def test_chart_metadata() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "edge-cloud"
    assert {"deployment.yaml", "service.yaml", "_helpers.tpl"} <= {
        p.name for p in TEMPLATES.iterdir()
    }


def test_values_have_every_daemon() -> None:
    assert set(DAEMONS) <= set(values()["daemons"])
    for daemon in DAEMONS:
        d = values()["daemons"][daemon]
        assert d["enabled"] is True
        assert int(d["replicas"]) >= 1
        assert "resources" in d


@pytest.mark.parametrize("daemon", DAEMONS)
def test_values_env_names_are_real_options(daemon: str) -> None:
    env = chart_env(daemon)
    unknown = {k for k in env if k.startswith("EDGE_")} - env_names(daemon)
    assert not unknown, f"{daemon}: not options of {config_class(daemon).__name__}: {unknown}"
    load(config_class(daemon), [], env)


@pytest.mark.parametrize("daemon", DAEMONS)
def test_values_ports_are_the_default_ports(daemon: str) -> None:
    d = values()["daemons"][daemon]
    ports = dict(d["ports"])
    metrics = ports.pop("metrics")
    assert ports == default_ports(daemon)
    env = chart_env(daemon)
    assert env["EDGE_API_ADDR"] == f"0.0.0.0:{ports['api']}"
    assert port_of(env["EDGE_METRICS_ADDR"]) == metrics


def test_values_wiring() -> None:
    ctl = chart_env("controller")
    assert ctl["EDGE_NOTIFY_ADDR"] == f"0.0.0.0:{default_ports('controller')['notify']}"
    assert {"EDGE_ETCD_URLS", "EDGE_REDIS_STANDALONE_ADDR", "EDGE_INFLUX_ADDR"} <= set(ctl)
    ccrm_type, ccrm_addr = ctl["EDGE_PLATFORM_SERVICE_ADDRS"].split("=")
    assert ccrm_type == "ccrm"
    assert ccrm_addr == f"edge-cloud-ccrm:{default_ports('ccrm')['api']}"
    notify = f"edge-cloud-controller:{default_ports('controller')['notify']}"
    for daemon in ("ccrm", "dme"):
        assert chart_env(daemon)["EDGE_NOTIFY_ADDRS"] == notify


def test_values_grace_above_daemon_grace() -> None:
    assert values()["terminationGracePeriodSeconds"] > default_grace()


def _lookup(data: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


@pytest.mark.parametrize("template", ["deployment.yaml", "service.yaml"])
def test_template_references_resolve(template: str) -> None:
    """The minimal rendering we can do without helm: every value a template reads exists."""
    text = (TEMPLATES / template).read_text()
    assert "range $name, $d := .Values.daemons" in text
    for ref in re.findall(r"\$?\.Values\.([A-Za-z_][\w.]*)", text):
        assert _lookup(values(), ref), f"{template}: .Values.{ref} is not in values.yaml"
    for ref in re.findall(r"\$d\.([A-Za-z_][\w.]*)", text):
        for daemon in DAEMONS:
            assert _lookup(values()["daemons"][daemon], ref), f"{template}: {daemon}.{ref}"


def test_deployment_probes_and_grace() -> None:
    text = (TEMPLATES / "deployment.yaml").read_text()
    assert "terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}" in text
    grpc_probes = re.findall(r"grpc:\s*\n\s*port: \{\{ \$d\.ports\.(\w+) \}\}", text)
    assert grpc_probes == ["api", "api"], "readiness and liveness use gRPC health on the API port"
    assert re.search(r"path: /readyz\s*\n\s*port: \{\{ \$d\.ports\.metrics \}\}", text)
    assert re.search(r"path: /healthz\s*\n\s*port: \{\{ \$d\.ports\.metrics \}\}", text)
    assert values()["probe"]["type"] in ("grpc", "http")
    assert 'args: ["edge", "serve", {{ $name | quote }}]' in text
    for daemon in DAEMONS:
        assert values()["daemons"][daemon]["ports"]["api"] == default_ports(daemon)["api"]


def test_service_exposes_every_port() -> None:
    text = (TEMPLATES / "service.yaml").read_text()
    assert "kind: Service" in text
    assert "range $portName, $port := $d.ports" in text
    assert "targetPort: {{ $portName }}" in text


def skeleton(template: str) -> list[Any]:
    """Parse a template as YAML with its directives dropped and its actions replaced by X."""
    lines = []
    for line in (TEMPLATES / template).read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("{{") and stripped.endswith("}}") and stripped.count("{{") == 1:
            continue  # range/if/with/end, or an include that renders whole lines
        lines.append(re.sub(r"\{\{.*?\}\}", "X", line))
    return [doc for doc in yaml.safe_load_all("\n".join(lines)) if doc]


def test_templates_are_yaml_shaped() -> None:
    (deployment,) = skeleton("deployment.yaml")
    assert deployment["kind"] == "Deployment"
    pod = deployment["spec"]["template"]["spec"]
    assert "terminationGracePeriodSeconds" in pod
    (container,) = pod["containers"]
    for key in ("image", "args", "env", "ports", "readinessProbe", "livenessProbe", "resources"):
        assert key in container, key
    assert container["args"][:2] == ["edge", "serve"]
    (service,) = skeleton("service.yaml")
    assert service["kind"] == "Service"
    assert service["spec"]["ports"][0].keys() >= {"name", "port", "targetPort"}
