"""Offline checks of the deployment files against the program they deploy.

No Docker engine or cluster is needed: compose is checked against the vendored
compose-spec schema, manifests with kubernetes-validate's bundled schemas, nginx
and Prometheus configs with the real `nginx -t` and `promtool`, and every command,
environment variable and port the files use is compared with what the package
really accepts (`[project.scripts]`, `spartan.config.env_names()`, `load_config`).
Proxy and probe configs (nginx, Prometheus, healthcheck) are checked in test_proxies.py.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from spartan.config import Config, env_names, load_config
from spartan.enrolment import required as enrolment_required
from spartan.token_secret import refusal

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
CLUSTER_FILE = DEPLOY / "docker-compose.cluster.yml"
K8S = DEPLOY / "k8s"
HEALTHCHECK = DEPLOY / "healthcheck.py"
IMAGE = "spartan-messenger"
GRPC_PORTS = {"spartan-gateway": 3000, "spartan-presence": 3001, "spartan-history": 3002}
HEALTH_NAMES = {"spartan-gateway": "spartan.v1.Spartan", "spartan-presence": "spartan.v1.Presence",
                "spartan-history": "spartan.v1.History"}
METRICS_PORT = 9100
SECRET_FILE = "/var/lib/spartan/secret/token_secret"
# A drain is the reconnect notices (up to half the grace) and then the grace for in-flight calls.
DRAIN_FACTOR = 1.5
# Any attempt to reach the network fails fast: the validators must work from their bundled schemas.
OFFLINE_ENV = {**os.environ, "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": ""}


# --- loading ------------------------------------------------------------------------------

def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def spartan_compose_services() -> dict[str, dict[str, Any]]:
    """The long-running services of the Spartan image (not the one-shot token-secret)."""
    return {name: svc for name, svc in compose()["services"].items()
            if svc.get("image", "").startswith(IMAGE) and svc["command"][0] in GRPC_PORTS}


def interpolate(value: object) -> str:
    """Compose's `${NAME:-default}` with nothing set in the environment."""
    text = str(value)
    if re.search(r"\$\{[A-Za-z_]+\}", text):
        raise AssertionError(f"{text!r} needs a variable without a default: `docker compose up` alone must work")
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {name: interpolate(value) for name, value in service["environment"].items()}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_manifest_files() -> list[Path]:
    return [K8S / name for name in kustomization()["resources"]]


def generator_files(kind: str) -> dict[str, dict[str, Path]]:
    """{generated name: {key: file}} for configMapGenerator or secretGenerator."""
    found = {}
    for generator in kustomization()[kind]:
        files = {}
        for item in generator["files"]:
            key, _, source = item.rpartition("=")
            files[key or Path(source).name] = K8S / source
        found[generator["name"]] = files
    return found


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in k8s_manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_workloads() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every Deployment and StatefulSet."""
    for obj in k8s_objects():
        if obj["kind"] in ("Deployment", "StatefulSet"):
            yield obj, obj["spec"]["template"]["spec"]


def spartan_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    for workload, pod in k8s_workloads():
        for container in pod["containers"]:
            if container["image"].startswith(IMAGE):
                yield workload, pod, container


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """Container env with values from Secrets and the downward API replaced by stand-ins."""
    env = {}
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else f"from-{next(iter(item['valueFrom']))}"
    return env


def grpc_port(command: str, config: Config) -> int:
    if command == "spartan-gateway":
        return config.port
    address = config.services.presence if command == "spartan-presence" else config.services.history
    return int(address.rsplit(":", 1)[1])


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match[1]) * (60 if match[2] == "m" else 1)


# --- schemas --------------------------------------------------------------------------------

def tool(name: str) -> str:
    """A validator installed with the test extra: from the environment running the tests (its
    scripts folder, e.g. .venv/bin, need not be on PATH), else from PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the test extra (bash scripts/bootstrap.sh --for-tests)")
    return found


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, env=OFFLINE_ENV, timeout=120)


def test_compose_file_matches_the_compose_spec() -> None:
    result = check_compose(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_cluster_file_matches_the_compose_spec() -> None:
    result = check_compose(CLUSTER_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_cluster_file_puts_every_spartan_service_on_six_nodes_with_their_own_data() -> None:
    base, override = compose()["services"], yaml.safe_load(CLUSTER_FILE.read_text())["services"]
    nodes = [name for name, svc in override.items() if "--cluster-enabled" in svc.get("command", [])]
    assert len(nodes) == 6, nodes  # three primaries, a replica each
    assert nodes[0] == "redis", "the service every other one waits for is a cluster node"
    assert override["redis-cluster"]["command"] == nodes  # the one-shot forms the cluster of every node
    data = [next(v for v in override[n].get("volumes", base.get(n, {}).get("volumes", [])) if v.endswith(":/data"))
            for n in nodes]
    assert len(set(data)) == len(nodes), data
    for name, svc in spartan_compose_services().items():
        config = load_config(ROOT / "config.yaml", env={**compose_env(svc), **compose_env(override[name])})
        scheme, _, hosts = config.redis.url.partition("://")
        assert scheme == "redis+cluster" and {h.split(":")[0] for h in hosts.split(",")} <= set(nodes), name
        assert override[name]["depends_on"]["redis-cluster"]["condition"] == "service_completed_successfully", name


def test_compose_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["redis"]["healthckeck"] = broken["services"]["redis"].pop("healthcheck")
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert check_compose(path).returncode != 0


def validate_k8s(paths: list[Path], version: str | None) -> subprocess.CompletedProcess[str]:
    version_args = ["-k", version] if version else []
    return subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", *version_args, *map(str, paths)],
                          capture_output=True, text=True, env=OFFLINE_ENV, timeout=300)


@pytest.mark.parametrize("version", ["1.30.0", None], ids=["k8s-1.30", "newest-bundled"])
def test_k8s_manifests_pass_strict_validation(version: str | None) -> None:
    result = validate_k8s(k8s_manifest_files(), version)
    assert result.returncode == 0, result.stdout + result.stderr


def test_k8s_strict_validation_catches_an_unknown_field(tmp_path: Path) -> None:
    text = (K8S / "gateway.yaml").read_text().replace("readOnlyRootFilesystem: true",
                                                       "readOnlyRootFilesystem: true\n            readOnlyRoot: true")
    (tmp_path / "gateway.yaml").write_text(text)
    assert validate_k8s([tmp_path / "gateway.yaml"], "1.30.0").returncode != 0


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    listed = {path.name for path in k8s_manifest_files()}
    generated_from = {path.name for kind in ("configMapGenerator", "secretGenerator")
                      for files in generator_files(kind).values() for path in files.values()}
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"} - generated_from
    assert listed == present
    assert kustomization()["images"][0]["name"] == IMAGE
    for obj in k8s_objects():
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == kustomization()["namespace"], obj["metadata"]["name"]
    assert not [obj for obj in k8s_objects() if obj["kind"] in ("ConfigMap", "Secret")], \
        "config and secret come from kustomize generators, so a change rolls the pods"


def test_k8s_config_and_secret_references_match_the_generators() -> None:
    configs, secrets = generator_files("configMapGenerator"), generator_files("secretGenerator")
    for path in [p for files in (*configs.values(), *secrets.values()) for p in files.values()]:
        assert path.exists(), path
    for workload, pod, container in spartan_containers():
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert set(configs[volume["configMap"]["name"]]) == {"config.yaml"}, workload["metadata"]["name"]
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]], (workload["metadata"]["name"], ref)


def test_k8s_placeholder_secret_is_refused_by_gateways() -> None:
    (files,) = generator_files("secretGenerator").values()
    for path in files.values():
        placeholder = path.read_text().strip()
        assert placeholder.startswith("REPLACE-ME")
        assert refusal(placeholder), f"{path.name}: gateways would run with the repository's placeholder"


# --- commands, environment, ports ------------------------------------------------------------

def test_every_service_command_is_a_console_script() -> None:
    scripts = console_scripts()
    commands = [svc["command"][0] for svc in spartan_compose_services().values()]
    commands += [container["command"][0] for _, _, container in spartan_containers()]
    assert sorted(set(commands)) == sorted(GRPC_PORTS)
    assert set(commands) <= scripts
    dockerfile_cmd = re.search(r'^CMD \["([^"]+)"', (DEPLOY / "Dockerfile").read_text(), re.M)
    assert dockerfile_cmd and dockerfile_cmd[1] in scripts


def test_every_environment_variable_is_an_accepted_setting() -> None:
    accepted = env_names()
    used = {name for svc in compose()["services"].values() if svc.get("image", "").startswith(IMAGE)
            for name in svc.get("environment", {})}
    used |= {item["name"] for _, _, container in spartan_containers() for item in container.get("env", [])}
    assert used, "no SPARTAN_* settings found"
    assert used <= accepted, sorted(used - accepted)


def test_compose_environment_gives_the_container_addresses() -> None:
    grace = None
    for name, svc in spartan_compose_services().items():
        config = load_config(ROOT / "config.yaml", env=compose_env(svc))
        command = svc["command"][0]
        assert config.redis.url == "redis://redis:6379/0"
        assert (config.services.presence, config.services.history) == ("presence:3001", "history:3002")
        assert config.services.listen_host == "0.0.0.0"
        assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", METRICS_PORT)
        assert config.log.format == "json"
        assert seconds(svc["stop_grace_period"]) > DRAIN_FACTOR * config.shutdown.grace_seconds
        grace = config.shutdown.grace_seconds
        if command == "spartan-gateway":
            assert (config.gateway.host, config.port) == ("0.0.0.0", 3000)
            assert config.auth.token_secret == "" and config.auth.token_secret_file == SECRET_FILE
            assert f"token-secret:{Path(SECRET_FILE).parent}:ro" in svc["volumes"], name
            assert svc["depends_on"]["token-secret"]["condition"] == "service_completed_successfully", name
            assert config.gateway.instance_id == name
            assert config.gateway.max_connection_age_seconds > 0
    assert grace is not None


def test_compose_ports_match_the_config() -> None:
    for name, svc in spartan_compose_services().items():
        config = load_config(ROOT / "config.yaml", env=compose_env(svc))
        command = svc["command"][0]
        port = grpc_port(command, config)
        assert port == GRPC_PORTS[command], name
        assert {str(port), str(config.metrics.port)} <= set(map(str, svc["expose"])), name
        check = svc["healthcheck"]["test"]
        assert check[:3] == ["CMD", "python", "/opt/spartan/healthcheck.py"], name
        assert check[3] == f"127.0.0.1:{port}" and check[check.index("--service") + 1] == HEALTH_NAMES[command]
    assert [interpolate(p) for p in compose()["services"]["nginx"]["ports"]] == ["127.0.0.1:3000:3000"]


def test_compose_publishes_on_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert interpolate(port).startswith("127.0.0.1:"), (name, port)
            # Publish addresses are compose variables, not settings: a SPARTAN_* name here would
            # be exported in users' shells and refused by client.py as an unknown setting.
            assert not re.search(r"\$\{SPARTAN_", str(port)), (name, port)


def test_compose_generates_the_token_secret_once() -> None:
    service = compose()["services"]["token-secret"]
    assert service["image"].startswith(IMAGE) and service["restart"] == "no"
    command = service["command"]
    assert command[0] in console_scripts() and command[1:] == ["gen-secret", "--file", SECRET_FILE]
    assert f"token-secret:{Path(SECRET_FILE).parent}" in service["volumes"]
    assert "token-secret" in compose()["volumes"]
    assert "TOKEN_SECRET:" not in COMPOSE_FILE.read_text().replace("TOKEN_SECRET_FILE:", "")


def test_every_spartan_variable_named_in_files_and_docs_is_a_setting() -> None:
    """One name per setting: users who export a name from the docs get a program that accepts it."""
    accepted = env_names()
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), COMPOSE_FILE, *sorted(K8S.glob("*.yaml")),
             DEPLOY / "Dockerfile"]
    unknown = {}
    for path in texts:
        if path.exists():
            for line in path.read_text().splitlines():
                if "unknown setting" in line:
                    continue  # an example of the error a misspelt name gets
                for name in re.findall(r"\bSPARTAN_[A-Z0-9_]*[A-Z0-9]\b", line):
                    if name not in accepted:
                        unknown.setdefault(name, path.relative_to(ROOT).as_posix())
    assert not unknown, unknown


def test_compose_starts_in_dependency_order() -> None:
    services = compose()["services"]
    for name, svc in spartan_compose_services().items():
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        if svc["command"][0] == "spartan-gateway":
            assert {"presence", "history"} <= set(svc["depends_on"]), name
    gateways = {n for n, s in spartan_compose_services().items() if s["command"][0] == "spartan-gateway"}
    assert len(gateways) >= 3
    assert set(services["nginx"]["depends_on"]) == gateways
    assert "--appendonly" in services["redis"]["command"] and "redis-data:/data" in services["redis"]["volumes"]


def test_k8s_environment_and_ports_match_the_config() -> None:
    for workload, pod, container in spartan_containers():
        name = workload["metadata"]["name"]
        command = container["command"][0]
        assert container["args"] == ["--config", "/etc/spartan/config.yaml"]
        config = load_config(ROOT / "config.yaml", env=k8s_env(container))
        port = grpc_port(command, config)
        assert port == GRPC_PORTS[command], name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": port, "metrics": config.metrics.port} and config.metrics.port == METRICS_PORT
        assert config.redis.url and (config.services.presence, config.services.history) == ("presence:3001", "history:3002")
        assert config.log.format == "json"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        assert container["readinessProbe"]["grpc"]["service"] == HEALTH_NAMES[command]
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                               "prometheus.io/path": "/metrics"}
        pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_FACTOR * config.shutdown.grace_seconds, name
        if command == "spartan-gateway":
            assert config.auth.token_secret and config.gateway.max_connection_age_seconds > 0
        else:
            assert config.services.listen_host == "0.0.0.0"


def test_k8s_services_point_at_named_container_ports() -> None:
    objects = k8s_objects()
    container_ports = {}
    for workload, pod in k8s_workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for container in pod["containers"]:
            for port in container["ports"]:
                container_ports[(labels["app.kubernetes.io/name"], port["name"])] = port["containerPort"]
    services = [obj for obj in objects if obj["kind"] == "Service"]
    assert {svc["metadata"]["name"] for svc in services} >= {"redis", "presence", "history", "gateway", "gateway-headless"}
    for svc in services:
        app = svc["spec"]["selector"]["app.kubernetes.io/name"]
        for port in svc["spec"]["ports"]:
            assert container_ports[(app, port["targetPort"])] == port["port"], svc["metadata"]["name"]


def test_k8s_config_is_the_root_config_unchanged() -> None:
    (files,) = generator_files("configMapGenerator").values()
    assert files["config.yaml"].read_text() == (ROOT / "config.yaml").read_text(), \
        "deploy/k8s/config.yaml is out of date: cp config.yaml deploy/k8s/config.yaml"


def test_k8s_pods_are_hardened_and_bounded() -> None:
    for workload, pod in k8s_workloads():
        name = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name


def test_k8s_gateways_scale_out_and_survive_disruption() -> None:
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in k8s_objects()}
    gateway = objects[("Deployment", "gateway")]
    labels = gateway["spec"]["selector"]["matchLabels"]
    assert gateway["spec"]["replicas"] >= 3
    hpa = objects[("HorizontalPodAutoscaler", "gateway")]
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert objects[("PodDisruptionBudget", "gateway")]["spec"]["selector"]["matchLabels"] == labels
    assert objects[("Service", "gateway-headless")]["spec"]["clusterIP"] == "None"
    redis = objects[("StatefulSet", "redis")]
    assert redis["spec"]["volumeClaimTemplates"] and objects[("Service", "redis")]["spec"]["clusterIP"] == "None"


def test_k8s_presence_and_history_run_as_balanced_replicas() -> None:
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for obj in k8s_objects()}
    for name in ("presence", "history"):
        deployment = objects[("Deployment", name)]
        labels = deployment["spec"]["selector"]["matchLabels"]
        assert deployment["spec"]["replicas"] >= 2, name
        # Headless: the name resolves to every ready pod, which the gateways balance over.
        assert objects[("Service", name)]["spec"]["clusterIP"] == "None", name
        assert objects[("PodDisruptionBudget", name)]["spec"] == {"minAvailable": 1, "selector": {"matchLabels": labels}}
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["grpc"]["service"] == f"spartan.v1.{name.capitalize()}", name
        address = k8s_env(container)[f"SPARTAN_SERVICES__{name.upper()}"]
        assert address == f"{name}:{objects[('Service', name)]['spec']['ports'][0]['port']}", name


# --- trust between services, enrolment ----------------------------------------------------

SERVICE_SECRET_FILE = "/var/lib/spartan/service-secret/service_secret"


def test_compose_gives_every_service_the_service_secret_and_requires_enrolment() -> None:
    service = compose()["services"]["service-secret"]
    assert service["command"][1:] == ["gen-secret", "--file", SERVICE_SECRET_FILE] and service["restart"] == "no"
    assert "service-secret" in compose()["volumes"]
    for name, svc in spartan_compose_services().items():
        config = load_config(ROOT / "config.yaml", env=compose_env(svc))
        assert config.auth.service_secret_file == SERVICE_SECRET_FILE, name
        assert f"service-secret:{Path(SERVICE_SECRET_FILE).parent}:ro" in svc["volumes"], name
        assert svc["depends_on"]["service-secret"]["condition"] == "service_completed_successfully", name
        if svc["command"][0] == "spartan-gateway":
            assert enrolment_required(config.auth.enrolment, config.gateway.host), name


def test_k8s_gives_every_service_the_service_secret_and_requires_enrolment() -> None:
    for workload, _, container in spartan_containers():
        name = workload["metadata"]["name"]
        refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]
                if "secretKeyRef" in item.get("valueFrom", {})}
        assert refs["SPARTAN_AUTH__SERVICE_SECRET"] == {"name": "spartan-auth", "key": "service-secret"}, name
        config = load_config(ROOT / "config.yaml", env=k8s_env(container))
        if container["command"][0] == "spartan-gateway":
            assert enrolment_required(config.auth.enrolment, config.gateway.host), name
