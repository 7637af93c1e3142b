"""deploy/ checked without docker or a cluster (neither runs here): the compose file, the Dockerfile and every
Kubernetes manifest parsed with PyYAML and held against the code they start (Settings fields, the click commands
and their options, the ports they listen on); Prometheus' config and rules through promtool (Debian's prometheus
package, installed when missing, as tests/scaled_env.py does); every metric the dashboards and alerts name
against a real scrape of an API app and a stream worker's registry; and `tally dashboards push` against a small
HTTP server on 127.0.0.1 standing in for Grafana's `POST /api/dashboards/db`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from test_api_client import Client

from api import cli
from api.cli_scaled import EXIT_FAILED
from api.dashboards import load_dashboards
from schemas import limits
from schemas.settings import Settings, from_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

SETTING_NAMES = frozenset(f"TALLY_{f.name.upper()}" for f in fields(Settings)) | {"TALLY_SETTINGS_FILE"}
TALLY_SERVICES = {"topics-create", "views-create", "writer", "relay", "stream-1", "stream-2", "api-1", "api-2"}
BACKING_SERVICES = {"kafka", "clickhouse", "postgres", "prometheus", "grafana"}
METRIC_RE = re.compile(r"\btally_[a-z0-9_]+\b")
# Grafana's own variables, given values PromQL accepts, so that promtool can parse the dashboards' expressions.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


# ------------------------------------------------------------------------------------------------- loading


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every document of every YAML file of deploy/k8s, by file name."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text("utf-8")) if d is not None]
            for p in sorted(K8S.glob("*.yaml"))}


def k8s_objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for docs in manifests().values() for d in docs if d["kind"] == kind}


def interpolate(value: str) -> str:
    """Compose's `${NAME:-default}` with nothing set (the defaults a laptop gets); `${NAME}` alone is refused."""
    def one(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{match.group(0)} has no default: compose would need it set"
        return match.group(2)

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}", one, value)


def dockerfile_env() -> dict[str, str]:
    """The ENV settings of deploy/Dockerfile (KEY=VALUE pairs, continuation lines joined)."""
    text = (DEPLOY / "Dockerfile").read_text("utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def service_env(name: str) -> dict[str, str]:
    """What a compose service's process sees: the image's ENV (tally services), then the compose environment."""
    service = compose()["services"][name]
    env = dockerfile_env() if name in TALLY_SERVICES else {}
    env.update({k: interpolate(str(v)) for k, v in (service.get("environment") or {}).items()})
    return env


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Exactly these TALLY_* (and eventsourcing's POSTGRES_*) variables, for from_env."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("TALLY_", "POSTGRES_")):
                mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        yield


def parse_tally(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """A `tally ...` command line parsed by the real click group: (command path, its parameters). Raises
    click.UsageError (an unknown subcommand or option, a value of the wrong type) as `tally` itself would."""
    assert argv and argv[0] == "tally", argv
    command: click.Command = cli.main
    names, rest = ["tally"], list(argv[1:])
    while isinstance(command, click.Group):
        if not rest or rest[0] not in command.commands:
            raise click.UsageError(f"{' '.join(names)} has no subcommand {rest[:1]}")
        names.append(rest[0])
        command = command.commands[rest.pop(0)]
    ctx = command.make_context(" ".join(names), rest)
    return " ".join(names[1:]), dict(ctx.params)


def listening(command: str, params: dict[str, Any], env: dict[str, str]) -> tuple[str, int] | None:
    """Where a tally command serves HTTP, from its options and settings as the CLI computes them."""
    with environment(env):
        if command == "stream":
            s = from_env(stream_web_port=params["web_port"], stream_web_host=params["web_host"])
            return s.stream_web_host, s.stream_web_port
        if command == "api":
            s = from_env(port=params["port"], host=params["host"])
            return s.host, s.port
        if command == "relay":
            s = from_env(relay_metrics_port=params["metrics_port"], relay_metrics_host=params["metrics_host"])
            return s.relay_metrics_host, s.relay_metrics_port
        if command == "writer":
            s = from_env()
            return s.host, s.port
    return None


def healthcheck_port(service: dict[str, Any]) -> int:
    test = " ".join(service["healthcheck"]["test"])
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", test)
    assert match, test
    return int(match.group(1))


# ---------------------------------------------------------------------------------------------- compose


def test_compose_has_every_part_with_pinned_images() -> None:
    services = compose()["services"]
    assert set(services) == TALLY_SERVICES | BACKING_SERVICES
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert {services[n]["image"] for n in TALLY_SERVICES} == {"tally:0.1.0"}  # one image for every tally service
    for name in TALLY_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"]).resolve() == ROOT and build["dockerfile"] == "deploy/Dockerfile"


def test_the_dockerfile_installs_the_locked_package() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "pip install -c requirements.lock ." in text
    copied = set(re.findall(r"^COPY (\S+)", text, re.M))
    packages = ("schemas", "writes", "projections", "streams", "api", "accelerators")
    assert {"pyproject.toml", *packages} <= copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text("utf-8").split()
    assert all(f"!{name}" in ignore for name in ("pyproject.toml", "requirements.lock", "README.md", *packages))
    assert re.search(r"^USER \d+", text, re.M), "the services run as an unprivileged user"


def test_kafka_runs_in_kraft_mode_and_takes_the_largest_message() -> None:
    env = {k: str(v) for k, v in compose()["services"]["kafka"]["environment"].items()}
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not [k for k in env if "ZOOKEEPER" in k]
    voter_id, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"] and voter == "kafka:9093"
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]] == ":9093"
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) == set(protocols)
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16  # a Kafka Uuid in base64url
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics are the project's (`tally topics create`)
    assert int(env["KAFKA_MESSAGE_MAX_BYTES"]) >= limits.KAFKA_MESSAGE_BYTES_MAX
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 1  # one broker
    advertised = {item.split("://")[1] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name in TALLY_SERVICES:
        with environment(service_env(name)):
            assert from_env().kafka_bootstrap in advertised


def test_compose_runs_one_relay_two_workers_two_replicas_each_on_all_interfaces() -> None:
    services = compose()["services"]
    by_command: dict[str, list[str]] = {}
    for name in sorted(TALLY_SERVICES):
        command, params = parse_tally(services[name]["command"])
        by_command.setdefault(command, []).append(name)
        assert "replicas" not in (services[name].get("deploy") or {}), name
        served = listening(command, params, service_env(name))
        if served is not None:
            host, port = served
            assert host == "0.0.0.0", f"{name} listens on {host}: unreachable from the other containers"
            assert healthcheck_port(services[name]) == port, name
    assert by_command == {
        "topics create": ["topics-create"], "views create": ["views-create"], "writer": ["writer"],
        "relay": ["relay"], "stream": ["stream-1", "stream-2"], "api": ["api-1", "api-2"],
    }
    for name in ("topics-create", "views-create"):
        assert services[name]["restart"] == "no", "a one-shot setup service"


def test_compose_dependencies_wait_for_health_and_setup() -> None:
    services = compose()["services"]
    for name in ("kafka", "clickhouse", "postgres", "prometheus", "grafana", "writer", "stream-1", "stream-2",
                 "api-1", "api-2"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on {target}, which is no service"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health, which has no check"
            else:
                assert condition == "service_completed_successfully", (name, target, condition)
                assert services[target]["restart"] == "no", f"{target} must end for {name} to start"

    def waits_for(name: str, seen: tuple[str, ...] = ()) -> set[str]:
        assert name not in seen, f"dependency cycle {seen + (name,)}"
        direct = set(services[name].get("depends_on") or {})
        return direct.union(*(waits_for(d, seen + (name,)) for d in direct))

    for name in ("relay", "stream-1", "stream-2"):
        assert {"topics-create", "kafka"} <= waits_for(name), name
    for name in ("writer", "stream-1", "stream-2", "api-1", "api-2"):
        assert {"views-create", "clickhouse"} <= waits_for(name), name
    for name in ("writer", "relay", "api-1", "api-2"):
        assert "postgres" in waits_for(name), name
    assert "prometheus" in waits_for("grafana")


def test_compose_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"


# ---------------------------------------------------------------------------------------- settings names


def test_every_tally_variable_is_a_setting_and_parses() -> None:
    """Names: every TALLY_* of compose, the Dockerfile, the ConfigMap, the Secret example and the containers' own
    env is a Settings field. Values: from_env accepts each set as a whole, and they name the right places."""
    configmap = k8s_objects("ConfigMap")["tally-settings"]["data"]
    secret = k8s_objects("Secret")["tally-secrets"]["stringData"]
    container_env = {e["name"]: e["value"] for c in containers() for e in c.get("env") or []}
    sources = {"Dockerfile": dockerfile_env(), "ConfigMap": configmap, "Secret": secret, "containers": container_env}
    sources.update({f"compose {n}": dict(s.get("environment") or {}) for n, s in compose()["services"].items()})
    for source, env in sources.items():
        unknown = sorted(k for k in env if k.startswith("TALLY_") and k not in SETTING_NAMES)
        assert not unknown, f"{source}: {unknown} are no settings of schemas/settings.py"
    services = compose()["services"]
    for name in TALLY_SERVICES:
        with environment(service_env(name)):
            settings = from_env()
        assert settings.event_store == "postgres" and settings.postgres_host in services
        dsn = urlsplit(settings.projection_dsn)
        assert dsn.scheme == "http" and dsn.hostname == "clickhouse" and dsn.port == 8123 and dsn.password
        assert settings.postgres_password == service_env("postgres")["POSTGRES_PASSWORD"]
        assert dsn.password == service_env("clickhouse")["CLICKHOUSE_PASSWORD"]
        assert dsn.username == service_env("clickhouse")["CLICKHOUSE_USER"]
        assert settings.topic_replication == 1 and settings.topic_partitions >= 2  # one broker, two workers
    with environment({**dockerfile_env(), **configmap, **secret, **container_env}):
        settings = from_env()
    assert settings.event_store == "postgres" and settings.topic_replication == 3
    assert urlsplit(settings.projection_dsn).scheme == "http" and settings.postgres_password


# -------------------------------------------------------------------------------------------- commands


def containers() -> list[dict[str, Any]]:
    """Every container and init container of every workload in deploy/k8s."""
    found = []
    for docs in manifests().values():
        for d in docs:
            spec = d.get("spec", {})
            pod = spec.get("template", {}).get("spec") if "template" in spec else None
            if pod:
                found += pod.get("initContainers", []) + pod["containers"]
    return found


def test_every_tally_command_is_a_real_subcommand_with_real_options() -> None:
    commands = [s["command"] for n, s in compose()["services"].items() if n in TALLY_SERVICES]
    commands += [c["command"] + c.get("args", []) for c in containers()]
    commands.append(json.loads(re.search(r"^CMD (.+)$", (DEPLOY / "Dockerfile").read_text("utf-8"), re.M)[1]))
    for argv in commands:
        if argv[1:] == ["--help"]:
            assert argv[0] == "tally"
            continue
        parse_tally(argv)
    # The check itself refuses what `tally` refuses.
    for wrong in (["tally", "stream", "--web-hots", "0.0.0.0"], ["tally", "api", "--port", "http"],
                  ["tally", "topics", "make"], ["tally", "relays"]):
        with pytest.raises(click.UsageError):
            parse_tally(wrong)


# ------------------------------------------------------------------------------------------ kubernetes


def test_manifests_are_namespaced_labelled_and_all_in_the_kustomization() -> None:
    found = manifests()
    kustomization = found.pop("kustomization.yaml")[0]
    assert kustomization["namespace"] == "tally"
    assert sorted(kustomization["resources"]) == sorted(set(found) - {"secret.example.yaml"})
    for name, docs in found.items():
        for d in docs:
            assert d["apiVersion"] and d["metadata"]["name"], name
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == "tally", (name, d["metadata"]["name"])
            assert d["metadata"]["labels"]["app.kubernetes.io/name"] == "tally"
    kinds = sorted(d["kind"] for docs in found.values() for d in docs)
    assert kinds == sorted(["Namespace", "ConfigMap", "Secret", "Job", "PersistentVolumeClaim", "Deployment",
                            "Service", "Deployment", "Deployment", "Service", "Deployment", "Service",
                            "PodDisruptionBudget"])
    # Kafka, ClickHouse and PostgreSQL are external (their operators run them): no workload of theirs here.
    assert {c["image"] for c in containers()} == {"tally:0.1.0"}


def test_deployments_replicas_strategies_probes_and_services() -> None:
    deployments = k8s_objects("Deployment")
    assert set(deployments) == {"tally-api", "tally-stream", "tally-relay", "tally-writer"}
    expected = {"tally-api": ("api", 2), "tally-stream": ("stream", 2), "tally-relay": ("relay", 1),
                "tally-writer": ("writer", 1)}
    env = {**dockerfile_env(), **k8s_objects("ConfigMap")["tally-settings"]["data"]}
    for name, d in deployments.items():
        command_name, replicas = expected[name]
        assert d["spec"]["replicas"] == replicas, name
        pod = d["spec"]["template"]
        assert d["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), name
        (container,) = pod["spec"]["containers"]
        assert {r.get("configMapRef", r.get("secretRef"))["name"] for r in container["envFrom"]} == {
            "tally-settings", "tally-secrets"}
        command, params = parse_tally(container["command"] + container.get("args", []))
        assert command == command_name, name
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        served = listening(command, params, {**env, **{e["name"]: e["value"] for e in container.get("env", [])}})
        if served is None:
            assert not ports and "readinessProbe" not in container, f"{name} serves no HTTP"
            continue
        host, port = served
        assert host == "0.0.0.0" and list(ports.values()) == [port], name
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (name, probe)
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    api = deployments["tally-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for name in ("tally-relay", "tally-writer"):  # exactly one at any time: the old pod ends before the new starts
        assert deployments[name]["spec"]["strategy"]["type"] == "Recreate", name
    for service in k8s_objects("Service").values():
        selected = [d for d in deployments.values()
                    if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, service["metadata"]["name"]
        (container,) = selected[0]["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert all(p["targetPort"] in names for p in service["spec"]["ports"]), service["metadata"]["name"]


def test_the_setup_job_creates_topics_then_views() -> None:
    job = k8s_objects("Job")["tally-setup"]["spec"]["template"]["spec"]
    steps = [parse_tally(c["command"])[0] for c in job["initContainers"] + job["containers"]]
    assert steps == ["topics create", "views create"]  # init containers run first, in order
    assert job["restartPolicy"] in ("OnFailure", "Never")


def test_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are checked by the parser only")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert docs[0]["kind"] == "Namespace" and len(docs) == 12
    assert all(d["metadata"].get("namespace", "tally") == "tally" for d in docs)


# ------------------------------------------------------------------------------------------- prometheus


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    from tests.scaled_env import prometheus_binary

    prometheus_binary()  # Debian's prometheus package brings promtool
    return shutil.which("promtool") or "/usr/bin/promtool"


def run_promtool(*args: str) -> str:
    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_prometheus_config_and_rules_pass_promtool() -> None:
    assert "SUCCESS" in run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS" in run_promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    # The alerts fire on the series that should fire them and stay quiet otherwise.
    assert "SUCCESS" in run_promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))


def scrape_jobs() -> dict[str, list[str]]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    return {job["job_name"]: [t for s in job["static_configs"] for t in s["targets"]]
            for job in config["scrape_configs"]}


def test_prometheus_scrapes_every_tally_server_of_compose() -> None:
    services = compose()["services"]
    scraped: dict[str, str] = {}
    for job, targets in scrape_jobs().items():
        for target in targets:
            host, _, port = target.partition(":")
            if job != "prometheus":
                command, params = parse_tally(services[host]["command"])
                assert listening(command, params, service_env(host))[1] == int(port), target  # type: ignore[index]
                scraped[host] = job
    servers = {n for n in TALLY_SERVICES if listening(*parse_tally(services[n]["command"]), service_env(n))}
    assert set(scraped) == servers
    assert {job for job in scraped.values()} == {"tally-api", "tally-writer", "tally-stream", "tally-relay"}
    mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"] if v.startswith("."))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text("utf-8"))
    target_dir = Path(mounts["./prometheus/prometheus.yml"]).parent
    for rule_file in config["rule_files"]:
        assert mounts[f"./prometheus/{rule_file}"] == str(target_dir / rule_file)  # found where Prometheus looks


# ---------------------------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, chdb_dsn: str) -> set[str]:
    """Every sample name the code exports: a real scrape of a read replica's app (tally api: the views' read
    model and the replica's log), a stream worker's registry (tally stream's /metrics) and the relay's."""
    import uuid

    from prometheus_client import generate_latest

    from api.app import create_app
    from api.cli_scaled import ReplicaLog
    from projections.queries import ReadModel
    from projections.store import ProjectionStore
    from streams.faust_app import Projector, ledger_mapper
    from streams.relay import relay_registry

    store = ProjectionStore(chdb_dsn, database=f"deploy_{uuid.uuid4().hex[:12]}")
    replica = ReplicaLog(Settings(data_dir=tmp_path_factory.mktemp("replica")))
    projector = Projector(store, {"tally.blocks": 2, "tally.votes": 1}, ledger_mapper(), "test-deploy")
    try:
        response = Client(create_app(ReadModel(store), replica)).get("/metrics")  # type: ignore[arg-type]
        assert response.status_code == 200
        # The relay's figures come from its loop's attributes: a relay that has published nothing yet.
        idle_relay = SimpleNamespace(position=0, log_position_seen=0, events_published=0, batches=0,
                                     watermarks_published=0)
        texts = [response.text, projector.metrics_text().decode(),
                 generate_latest(relay_registry(idle_relay)).decode()]  # type: ignore[arg-type]
    finally:
        projector.close()
        replica.close()
        store.drop()
        store.close()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("", "_count", "_sum", "_created")}
    names = {family.name + suffix for text in texts for family in text_string_to_metric_families(text)
             for suffix in suffixes.get(family.type, ("",))}
    assert {"tally_log_position", "tally_reserves_ratio", "tally_stream_consumer_lag_messages"} <= names
    return names


def dashboard_expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboards (panels' targets and query variables), by where it is."""
    found = {}
    for board in load_dashboards(DASHBOARDS):
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found[f"{board['uid']}: {panel['title']} {target['refId']}"] = target["expr"]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                found[f"{board['uid']}: variable {variable['name']}"] = variable["query"]["query"]
    return found


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text("utf-8"))["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_every_metric_the_dashboards_and_alerts_name_is_exported(exported: set[str]) -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text("utf-8"))["tests"]
    series = {f"alerts_test: {t['name']}": s["series"] for t in tests for s in t["input_series"]}
    everything = {**dashboard_expressions(), **alert_expressions(), **series}
    for where, expr in everything.items():
        named = set(METRIC_RE.findall(expr))
        assert named or re.search(r"\bup\b", expr), f"{where}: no metric in {expr!r}"
        assert named <= exported, f"{where}: {sorted(named - exported)} are exported by no code"
    used = set().union(*(METRIC_RE.findall(e) for e in dashboard_expressions().values()))
    # The panels: ingest and projection throughput, consumer lag, finality delay, slashes, reserves ratio.
    assert {"tally_events_appended_total", "tally_stream_events_total", "tally_stream_consumer_lag_messages",
            "tally_finality_delay_blocks", "tally_finality_delay_ms", "tally_slashes_total",
            "tally_reserves_ratio"} <= used
    alerted = set().union(*(METRIC_RE.findall(e) for e in alert_expressions().values()))
    assert {"tally_stream_consumer_lag_messages", "tally_projection_lag_events", "tally_reserves_ratio"} <= alerted
    assert any(re.search(r"\bup\{", e) for e in alert_expressions().values())  # a target down


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression, as a recording rule (Grafana's variables given PromQL values)."""
    rules = []
    for i, expr in enumerate(dashboard_expressions().values()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if not expr.startswith("label_values("):  # a Grafana variable query, not PromQL
            rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in run_promtool("check", "rules", str(path))


# ---------------------------------------------------------------------------------------------- grafana


def test_dashboards_load_and_pick_their_data_source() -> None:
    boards = load_dashboards(DASHBOARDS)
    assert len({b["uid"] for b in boards}) == len(boards) == len(list(DASHBOARDS.glob("*.json")))
    for board in boards:
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, (board["uid"], panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_grafana_provisioning_matches_compose() -> None:
    services = compose()["services"]
    (source,) = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text("utf-8"))["datasources"]
    url = urlsplit(source["url"])
    assert source["type"] == "prometheus" and url.hostname == "prometheus" and url.hostname in services
    assert url.port == 9090 and "9090:9090" in services["prometheus"]["ports"][0]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "tally.yml").read_text("utf-8"))["providers"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("."))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


class _Grafana(BaseHTTPRequestHandler):
    """Grafana's `POST /api/dashboards/db`, as far as grafana-api uses it: records each request and answers
    `refusal` (status, body) when set."""

    received: list[dict[str, Any]]
    refusal: tuple[int, dict[str, Any]] | None

    def do_POST(self) -> None:  # noqa: N802 (the http.server hook)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
        status, answer = self.refusal or (200, {"status": "success", "uid": body["dashboard"]["uid"], "version": 1})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def grafana() -> Iterator[tuple[str, type[_Grafana]]]:
    handler = type("Handler", (_Grafana,), {"received": [], "refusal": None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def push(url: str, *options: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, ["dashboards", "push", "--url", url, *options], env=env)


def test_dashboards_push_sends_every_dashboard_with_the_bearer_key(grafana: tuple[str, type[_Grafana]]) -> None:
    url, handler = grafana
    boards = {b["uid"]: b for b in load_dashboards(DASHBOARDS)}
    result = push(url, "--api-key", "glsa_test-key")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in handler.received] == ["/api/dashboards/db"] * len(boards)
    assert {r["authorization"] for r in handler.received} == {"Bearer glsa_test-key"}
    for request in handler.received:
        body = request["body"]
        assert body["overwrite"] is True and body["folderId"] == 0
        assert body["dashboard"] == {**boards[body["dashboard"]["uid"]], "id": None}  # the file, as it is
    assert sorted(r["body"]["dashboard"]["uid"] for r in handler.received) == sorted(boards)
    assert sorted(result.output.splitlines()) == sorted(f"{b['title']}: success" for b in boards.values())
    # Grafana under a sub-path, the key from the environment, another folder.
    handler.received.clear()
    result = push(f"{url}/grafana/", "--folder-id", "7", env={"GRAFANA_API_KEY": "from-env"})
    assert result.exit_code == 0, result.output
    assert {r["path"] for r in handler.received} == {"/grafana/api/dashboards/db"}
    assert {r["authorization"] for r in handler.received} == {"Bearer from-env"}
    assert {r["body"]["folderId"] for r in handler.received} == {7}


def test_dashboards_push_reports_a_refusal(grafana: tuple[str, type[_Grafana]]) -> None:
    url, handler = grafana
    handler.refusal = (401, {"message": "invalid API key"})
    result = push(url, "--api-key", "wrong")
    first = load_dashboards(DASHBOARDS)[0]["title"]
    assert result.exit_code == EXIT_FAILED
    assert f"tally: {first}: Grafana at {url} refused it" in result.output
    assert len(handler.received) == 1  # it stops at the first refusal
    handler.received.clear()
    handler.refusal = (412, {"status": "version-mismatch", "message": "The dashboard has been changed by someone"})
    result = push(url, "--api-key", "k")
    assert result.exit_code == EXIT_FAILED and "412" in result.output, result.output
    result = push("grafana:3000", "--api-key", "k")
    assert result.exit_code == EXIT_FAILED and "is not an http(s) URL" in result.output


def test_dashboards_push_from_another_folder(grafana: tuple[str, type[_Grafana]], tmp_path: Path) -> None:
    """Outside a checkout (the image), `--dir` names the dashboards' folder; a missing one is refused by name."""
    url, handler = grafana
    board = {"uid": "only-one", "title": "Only one", "panels": []}
    (tmp_path / "one.json").write_text(json.dumps(board), "utf-8")
    result = push(url, "--api-key", "k", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [r["body"]["dashboard"] for r in handler.received] == [{**board, "id": None}]
    result = push(url, "--api-key", "k", "--dir", str(tmp_path / "missing"))
    assert result.exit_code == EXIT_FAILED and "missing: no such folder" in result.output, result.output
