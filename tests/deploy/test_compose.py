"""docker-compose.yml: valid against the Compose specification's JSON Schema, and its parts
fit together (Kafka, the example config, the example target, Prometheus, Grafana). The two
example programs it mounts run here as they run in their containers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from service.filters import FilterCriteria
from tests.deploy.tools import REPO

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_DIR = REPO / "deploy" / "compose"
ESMD_CONFIG = COMPOSE_DIR / "esmd.yaml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARDS = REPO / "deploy" / "grafana"  # another issue's: the dashboard JSON lives there


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def binds(service: dict[str, Any]) -> dict[str, str]:
    """A service's bind mounts (short syntax): container path -> repo-relative source."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            out[target] = source[2:]
    return out


def duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", text))


def test_valid_against_the_compose_specification(compose_schema: dict[str, Any]) -> None:
    validator_class = jsonschema.validators.validator_for(compose_schema)
    validator_class.check_schema(compose_schema)
    errors = sorted(
        validator_class(compose_schema).iter_errors(compose()), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_services_and_images() -> None:
    found = services()
    assert {"kafka", "moto", "target", "esmd", "prometheus", "grafana"} <= set(found)
    assert found["kafka"]["image"].startswith("apache/kafka:")
    assert found["moto"]["image"].startswith("motoserver/moto:")
    for name, service in found.items():
        if "image" in service and name != "esmd":
            repo, _, tag = service["image"].rpartition(":")
            assert repo and tag and tag != "latest", f"{name}: pin the image's tag"
    assert found["esmd"]["build"] == {"context": ".", "dockerfile": "Dockerfile"}


def test_kafka_runs_kraft_and_advertises_the_address_esmd_uses() -> None:
    env = services()["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in key for key in env)
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    esmd_env = services()["esmd"]["environment"]
    assert f"PLAINTEXT://{esmd_env['KAFKA_BOOTSTRAP_SERVERS']}" in advertised


def test_every_dependency_and_mount_exists() -> None:
    found = services()
    for name, service in found.items():
        depends = service.get("depends_on", [])
        assert set(depends) <= set(found), f"{name} depends on an unknown service"
        for target, source in binds(service).items():
            assert (REPO / source).exists(), f"{name}: {source} (mounted at {target})"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: publish on 127.0.0.1 only"
    esmd = found["esmd"]["depends_on"]
    assert esmd["kafka"]["condition"] == "service_healthy"
    assert esmd["kafka-init"]["condition"] == "service_completed_successfully"
    assert esmd["target"]["condition"] == "service_healthy"


def test_esmd_service_runs_the_example_config() -> None:
    esmd = services()["esmd"]
    assert binds(esmd)["/etc/esmd/esmd.yaml"] == str(ESMD_CONFIG.relative_to(REPO))
    assert "9464" in esmd["ports"][0]
    config = yaml.safe_load(ESMD_CONFIG.read_text())
    assert config["server"]["listen"] == "0.0.0.0:9464"
    grace = config["server"]["shutdown_grace_seconds"]
    assert duration_seconds(esmd["stop_grace_period"]) > grace
    assert esmd["read_only"] is True and "/var/lib/esmd" in str(esmd["volumes"])


def test_example_mapping_reads_the_produced_topic_and_calls_the_target() -> None:
    found = services()
    config = yaml.safe_load(ESMD_CONFIG.read_text())
    [mapping] = config["mappings"]
    assert mapping["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"] == [
        "${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"
    ]
    assert mapping["FilterCriteria"]["Filters"], "the example shows a filter"
    init = found["kafka-init"]["command"]
    assert init[init.index("--topic") + 1] == mapping["Topics"][0]
    assert found["producer"]["environment"]["ORDERS_TOPIC"] == mapping["Topics"][0]
    url = urlsplit(config["functions"][mapping["FunctionName"]]["url"])
    assert url.hostname == "target"
    assert url.port == int(found["target"]["environment"]["TARGET_PORT"])


def test_prometheus_scrapes_esmd() -> None:
    prometheus = services()["prometheus"]
    assert binds(prometheus)["/etc/prometheus/prometheus.yml"] == "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load(PROMETHEUS.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "esmd"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["esmd:9464"]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard_folder() -> None:
    grafana = services()["grafana"]
    mounts = binds(grafana)
    sources = {source: target for target, source in mounts.items()}
    datasources = COMPOSE_DIR / "grafana" / "datasources"
    providers = COMPOSE_DIR / "grafana" / "dashboards"
    assert sources[str(datasources.relative_to(REPO))] == "/etc/grafana/provisioning/datasources"
    assert sources[str(providers.relative_to(REPO))] == "/etc/grafana/provisioning/dashboards"
    [datasource] = yaml.safe_load((datasources / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((providers / "esmd.yml").read_text())["providers"]
    dashboards_in_container = sources[str(DASHBOARDS.relative_to(REPO))]
    assert provider["options"]["path"] == dashboards_in_container
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/esmd-dashboard.json"


# --- the example programs ------------------------------------------------------------------


def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_target_answers_posts_and_logs_record_counts() -> None:
    env = {**os.environ, "TARGET_HOST": "127.0.0.1", "TARGET_PORT": "0"}
    with subprocess.Popen(
        [sys.executable, str(COMPOSE_DIR / "target.py")],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            _exercise_target(proc)
        finally:
            if proc.poll() is None:
                proc.kill()


def _exercise_target(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    listening = json.loads(proc.stdout.readline())["listening"]
    base = f"http://{listening}"
    kafka_event = {
        "eventSource": "SelfManagedKafka",
        "records": {"orders-0": [{"offset": 0}, {"offset": 1}], "orders-3": [{"offset": 7}]},
    }
    path = "/2015-03-31/functions/function/invocations"
    assert post(base + path, json.dumps(kafka_event).encode()) == (200, {"processed": 3})
    assert json.loads(proc.stdout.readline()) == {
        "path": path, "records": 3, "invocations": 1, "records_total": 3
    }  # fmt: skip
    assert post(base + "/", json.dumps({"Records": [{}]}).encode()) == (200, {"processed": 1})
    assert json.loads(proc.stdout.readline()) == {
        "path": "/", "records": 1, "invocations": 2, "records_total": 4
    }  # fmt: skip
    assert post(base + "/", b"not json")[0] == 400
    with urllib.request.urlopen(base + "/", timeout=5) as response:
        assert response.status == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_producer_orders_are_what_the_filter_keeps() -> None:
    env = {
        **os.environ,
        "PRODUCER": "cat",
        "ORDER_COUNT": "9",
        "ORDER_INTERVAL": "0",
    }
    script = COMPOSE_DIR / "produce-orders.sh"
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=10)
    out = subprocess.run(
        ["sh", str(script)], env=env, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    orders = [json.loads(line) for line in out.splitlines()]
    assert [o["id"] for o in orders] == list(range(1, 10))
    [mapping] = yaml.safe_load(ESMD_CONFIG.read_text())["mappings"]
    criteria = FilterCriteria.parse(mapping["FilterCriteria"])
    kept = [
        o["id"]
        for i, o in enumerate(orders)
        if criteria.matches({"topic": "orders", "partition": 0, "offset": i, "value": o})
    ]
    assert kept == [3, 6, 9]


@pytest.mark.parametrize("name", ["esmd.yml", "prometheus.yml"])
def test_grafana_provisioning_files_are_yaml(name: str) -> None:
    path = next((COMPOSE_DIR / "grafana").rglob(name))
    assert yaml.safe_load(path.read_text())["apiVersion"] == 1


def test_dashboard_loads_from_file_provisioning() -> None:
    """File provisioning must be able to load deploy/grafana/esmd-dashboard.json: plain JSON,
    without the ``__inputs`` and ``${DS_...}`` placeholders of an export "for sharing
    externally", which provisioning does not resolve (the compose datasource has the uid
    ``prometheus``)."""
    dashboard = DASHBOARDS / "esmd-dashboard.json"
    text = dashboard.read_text()
    assert "__inputs" not in json.loads(text)
    assert "${DS_" not in text
