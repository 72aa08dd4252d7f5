"""docker-compose.yml, the Kubernetes manifests, Prometheus and Grafana files stay in step with the service.

No Docker engine or cluster runs here, so what can be checked is checked: every file parses, every
variable is a setting the service reads and loads, ports, probes, selectors and names agree, and
every metric the alerts and the dashboard use is one the service exports.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from unittest.mock import patch

import httpx
import pytest
import yaml

from app.config.settings import Settings, load_settings
from app.database import migrations
from app.factory import create_app

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
SETTINGS = {name.upper() for name in Settings.model_fields}
EXTRA_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR"}  # read by the process, not a Settings field


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[(document["kind"], document.get("metadata", {}).get("name", ""))] = document
    return found


def _substituted(value: str) -> str:
    """Compose's `${VAR:-default}` as compose would fill it with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _load(variables: dict[str, str]) -> Settings:
    """Settings read from exactly these environment variables, as the service reads them."""
    with patch.dict(os.environ, variables, clear=True):
        return load_settings(_env_file=None)


# --- docker-compose.yml


def test_compose_brokers_follow_the_shared_broker_settings() -> None:
    """deploy/kafka/broker.properties is what the local Apache Kafka of the tests runs with; the
    compose brokers set each of its keys (as KAFKA_<KEY> variables) to the same value, and run the
    Kafka version the tests resolve."""
    shared = {}
    for line in (DEPLOY / "kafka" / "broker.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            shared[key.strip()] = value.strip()
    services = _compose()["services"]
    kafka_version = re.search(
        r"<kafka.version>(.+)</kafka.version>", (ROOT / "tests/services/kafka-pom.xml").read_text()
    )
    assert kafka_version is not None
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        environment = services[name]["environment"]
        for key, value in shared.items():
            assert environment.get("KAFKA_" + key.upper().replace(".", "_")) == value, (name, key)
        assert services[name]["image"] == f"apache/kafka:{kafka_version.group(1)}"


def test_compose_has_the_promised_services() -> None:
    services = _compose()["services"]
    assert {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "postgres",
        "migrate",
        "ingest-1",
        "ingest-2",
        "prometheus",
        "grafana",
    } <= set(services)


def test_compose_kafka_is_kraft_with_three_replicas_and_min_isr_two() -> None:
    services = _compose()["services"]
    brokers = [services[f"kafka-{n}"]["environment"] for n in (1, 2, 3)]
    assert {env["KAFKA_NODE_ID"] for env in brokers} == {"1", "2", "3"}
    for env in brokers:
        assert services["kafka-1"]["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"


@pytest.mark.parametrize("name", ["ingest-1", "ingest-2"])
def test_compose_instances_use_only_real_settings_and_the_right_peers(name: str) -> None:
    compose = _compose()
    services = compose["services"]
    service = services[name]
    env = {key: _substituted(str(value)) for key, value in service["environment"].items()}
    assert set(env) - SETTINGS == set(), "variables the service does not read"
    settings = _load(env)  # every value is one the service accepts
    # Brokers: every broker's internal listener, and nothing else.
    internal = {}
    for broker in ("kafka-1", "kafka-2", "kafka-3"):
        listeners = services[broker]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        internal[broker] = re.search(r"INTERNAL://([^,]+)", listeners).group(1)  # type: ignore[union-attr]
    assert sorted(settings.broker_list) == sorted(internal.values())
    assert settings.kafka_topic_replication_factor == 3
    # The published port leads to PORT inside.
    published = {mapping.split(":")[-1] for mapping in service["ports"]}
    assert published == {str(settings.port)}
    # The database is the compose PostgreSQL, with its credentials; idempotency is shared.
    postgres = services["postgres"]["environment"]
    expected_url = f"postgresql+psycopg://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@postgres:5432/{postgres['POSTGRES_DB']}"
    assert settings.database_url == expected_url == services["migrate"]["environment"]["DATABASE_URL"]
    assert settings.idempotency_store == "database"
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert service["command"] == ["event-ingest", "serve"]  # migrations only in `migrate`
    assert f":{settings.port}/readyz" in " ".join(service["healthcheck"]["test"])


def test_prometheus_scrapes_both_instances_and_loads_the_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "event-ingest"  # the alerts' `up{job="event-ingest"}`
    assert job["metrics_path"] == "/metrics/prometheus"
    compose = _compose()["services"]
    targets = set(job["static_configs"][0]["targets"])
    assert targets == {f"{name}:{compose[name]['environment']['PORT']}" for name in ("ingest-1", "ingest-2")}
    mounts = {volume.split(":")[1] for volume in compose["prometheus"]["volumes"]}
    assert set(config["rule_files"]) <= mounts
    assert "deploy/prometheus/alerts.yml" in " ".join(compose["prometheus"]["volumes"])


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    compose = _compose()["services"]["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/event-ingest.yml").read_text())
    dashboards_mount = next(
        v.split(":")[1] for v in compose["volumes"] if "dashboards:" in v and "provisioning" not in v
    )
    assert provider["providers"][0]["options"]["path"] == dashboards_mount
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana/dashboards/event-ingest.json").read_text())
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("ingest rate", "latency", "breaker", "spool depth", "oldest", "dead-letter", "rejections"):
        assert topic in titles


# --- Kubernetes


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes/kustomization.yaml").read_text())
    files = {path.name for path in (DEPLOY / "kubernetes").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_configmap_and_secret_hold_only_settings_that_load() -> None:
    manifests = _manifests()
    config = manifests[("ConfigMap", "event-ingest")]["data"]
    secret = manifests[("Secret", "event-ingest")]["stringData"]
    assert set(config) - SETTINGS == set()
    assert set(secret) - SETTINGS == set()
    assert not set(config) & set(secret)
    for name in ("KAFKA_SASL_PASSWORD", "DATABASE_URL", "API_KEYS"):
        assert name in secret
        assert name not in config
    _load({**config, **secret})


def test_deployment_probes_ports_and_graceful_shutdown() -> None:
    manifests = _manifests()
    deployment = manifests[("Deployment", "event-ingest")]
    config = manifests[("ConfigMap", "event-ingest")]["data"]
    settings = _load({**config, **manifests[("Secret", "event-ingest")]["stringData"]})
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == settings.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["command"] == ["event-ingest", "serve"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = (
        pre_stop
        + settings.shutdown_drain_delay.total_seconds()
        + settings.shutdown_flush_timeout.total_seconds()
    )
    assert pod["spec"]["terminationGracePeriodSeconds"] > needed
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]} == {
        "event-ingest"
    }
    assert {item["name"] for item in container.get("env", [])} <= SETTINGS | EXTRA_VARIABLES
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]
    assert pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]
    assert int(config["WORKERS"]) <= int(container["resources"]["limits"]["cpu"])


def test_selectors_and_references_agree() -> None:
    manifests = _manifests()
    pod_labels = manifests[("Deployment", "event-ingest")]["spec"]["template"]["metadata"]["labels"]
    service = manifests[("Service", "event-ingest")]
    assert service["spec"]["selector"] == pod_labels
    assert manifests[("PodDisruptionBudget", "event-ingest")]["spec"]["selector"]["matchLabels"] == pod_labels
    target = manifests[("HorizontalPodAutoscaler", "event-ingest")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in manifests
    monitor = manifests[("ServiceMonitor", "event-ingest")]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics/prometheus"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in manifests[("Secret", credentials["name"])]["stringData"]
    job = manifests[("Job", "event-ingest-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["event-ingest", "migrate"]
    assert (
        job["envFrom"]
        == manifests[("Deployment", "event-ingest")]["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    )


def test_dockerfile_exposes_the_default_port() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {Settings.model_fields['port'].default}" in dockerfile


# --- metrics named by the alerts and the dashboard exist


async def test_alerts_and_dashboard_use_only_metrics_the_service_exports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    migrations.upgrade(url)
    app = create_app(
        load_settings(_env_file=None, kafka_brokers="127.0.0.1:1", database_url=url, auth_enabled=False)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            await client.get("/healthz")
            scrape = (await client.get("/metrics/prometheus")).text
    exported = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            exported |= {name} | (
                {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
                if kind in {"histogram", "summary"}
                else set()
            )
    exported.add("up")  # Prometheus's own
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    expressions = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/event-ingest.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {
        name
        for expr in expressions
        for name in re.findall(r"\b(event_ingest_\w+|http_\w+|up)\b(?=[{\[\s)])", expr)
    }
    assert used, "no metric names found"
    assert used - exported == set()


def test_every_alert_has_a_runbook_entry_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    for rule in alerts["groups"][0]["rules"]:
        assert f"#### {rule['alert']}" in readme, f"README lacks a runbook entry for {rule['alert']}"
        assert rule["annotations"]["runbook"] == f"README.md#{rule['alert'].lower()}"
