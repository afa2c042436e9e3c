"""The Helm chart (deploy/helm/esmd): helm lint, and what helm template renders with the
chart's defaults and with each example values file (KEDA on Kafka lag, KEDA on SQS backlog),
validated strictly against the Kubernetes schemas and the CRDs of KEDA and prometheus-operator.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import (
    CHART,
    EXAMPLES,
    VALUE_SETS,
    HelmError,
    container,
    only,
    pod_environment,
    rendered_config,
    run_helm,
    template,
)
from tests.deploy.schemas import K8S_VERSIONS, CrdValidator, builtin_errors
from tests.deploy.tools import REPO

Docs = list[dict[str, Any]]
#: The first test to need helm builds it (about 3 minutes on a fresh 2-core machine).
pytestmark = pytest.mark.timeout(900)
SECRET_NAME = re.compile(r"(?i)(secret|password|passwd|token|credential|private|api_?key)")


def esmd_config(docs: Docs) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(rendered_config(docs))
    return config


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_strict(helm: Path, values: str) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in VALUE_SETS[values]:
        args += ["-f", str(path)]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_value_sets_include_both_keda_triggers(rendered: dict[str, Docs]) -> None:
    assert {"default", "kafka-keda", "sqs-keda"} <= set(rendered)


@pytest.mark.parametrize("values", VALUE_SETS)
def test_manifests_are_valid_in_strict_mode(
    rendered: dict[str, Docs],
    values: str,
    keda_crd: CrdValidator,
    servicemonitor_crd: CrdValidator,
) -> None:
    custom = {keda_crd.kind: keda_crd, servicemonitor_crd.kind: servicemonitor_crd}
    errors = []
    for doc in rendered[values]:
        if doc["kind"] in custom:
            errors += custom[doc["kind"]].errors(doc)
        else:
            for version in K8S_VERSIONS:
                errors += builtin_errors(doc, version)
    assert not errors, "\n".join(errors)


def test_default_values_render_the_expected_objects(rendered: dict[str, Docs]) -> None:
    kinds = sorted(d["kind"] for d in rendered["default"])
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    assert only(rendered["default"], "Deployment")["spec"]["replicas"] == 1


def test_kafka_scaledobject_scales_the_mapping_on_its_lag(
    rendered: dict[str, Docs], keda_crd: CrdValidator
) -> None:
    docs = rendered["kafka-keda"]
    scaled = only(docs, "ScaledObject")
    assert keda_crd.errors(scaled) == []
    deployment = only(docs, "Deployment")
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(meta)
    assert all(isinstance(v, str) for v in meta.values())
    # The trigger watches the mapping's own consumer group, topic and brokers.
    [mapping] = esmd_config(docs)["mappings"]
    assert meta["consumerGroup"] == mapping["SelfManagedKafkaEventSourceConfig"]["ConsumerGroupId"]
    assert [meta["topic"]] == mapping["Topics"]
    env = pod_environment(docs)
    [servers] = mapping["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert meta["bootstrapServers"] == re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], servers)
    assert meta["offsetResetPolicy"] == "earliest"  # StartingPosition TRIM_HORIZON
    assert int(meta["lagThreshold"]) > 0
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_sqs_scaledobject_scales_on_the_queue_backlog(
    rendered: dict[str, Docs], keda_crd: CrdValidator
) -> None:
    docs = rendered["sqs-keda"]
    scaled = only(docs, "ScaledObject")
    assert keda_crd.errors(scaled) == []
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "aws-sqs-queue"
    meta = trigger["metadata"]
    assert {"queueURL", "queueLength", "awsRegion"} <= set(meta)
    assert trigger["authenticationRef"] == {"name": "keda-aws-uploads"}
    [mapping] = esmd_config(docs)["mappings"]
    _, _, _, region, account, queue = mapping["EventSourceArn"].split(":")
    assert meta["queueURL"] == f"https://sqs.{region}.amazonaws.com/{account}/{queue}"
    assert meta["awsRegion"] == region
    assert "replicas" not in only(docs, "Deployment")["spec"]


def test_keda_needs_a_trigger(helm: Path) -> None:
    with pytest.raises(HelmError, match="at least one trigger"):
        template(helm, sets=["keda.enabled=true"])


def test_keda_metadata_values_become_strings(helm: Path, keda_crd: CrdValidator) -> None:
    docs = template(
        helm,
        sets=[
            "keda.enabled=true",
            "keda.kafka[0].bootstrapServers={b1:9092,b2:9092}",
            "keda.kafka[0].consumerGroup=g",
            "keda.kafka[0].topic=t",
            "keda.kafka[0].activationLagThreshold=0",
            "keda.kafka[0].metadata.allowIdleConsumers=false",
            "keda.triggers[0].type=cpu",
            "keda.triggers[0].metricType=Utilization",
            "keda.triggers[0].metadata.value=80",
        ],
    )
    scaled = only(docs, "ScaledObject")
    assert keda_crd.errors(scaled) == []
    kafka, cpu = scaled["spec"]["triggers"]
    assert kafka["metadata"] == {
        "bootstrapServers": "b1:9092,b2:9092",
        "consumerGroup": "g",
        "topic": "t",
        "lagThreshold": "100",
        "offsetResetPolicy": "earliest",
        "activationLagThreshold": "0",
        "allowIdleConsumers": "false",
    }
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}


@pytest.mark.parametrize("values", VALUE_SETS)
def test_config_is_mounted_where_the_image_reads_it(rendered: dict[str, Docs], values: str) -> None:
    docs = rendered[values]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    main = container(docs)
    assert [*main["command"], *main["args"]] == ["esmd", "run", "-c", "/etc/esmd/esmd.yaml"]
    [mount] = [m for m in main["volumeMounts"] if m["name"] == "config"]
    assert mount == {"name": "config", "mountPath": "/etc/esmd", "readOnly": True}
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == only(docs, "ConfigMap")["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "esmd.yaml", "path": "esmd.yaml"}]
    # The root filesystem is read-only: the state and /tmp are volumes.
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/var/lib/esmd", "/tmp"}
    assert esmd_config(docs)["server"]["listen"] == "0.0.0.0:9464"


@pytest.mark.parametrize("values", VALUE_SETS)
def test_security_context_is_restricted(rendered: dict[str, Docs], values: str) -> None:
    docs = rendered[values]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = container(docs)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "privileged" not in ctx
    resources = container(docs)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_probes_and_metrics_port(rendered: dict[str, Docs], values: str) -> None:
    docs = rendered[values]
    main = container(docs)
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert main["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}
    ]
    deployment = only(docs, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_servicemonitor_scrapes_the_metrics_service(
    rendered: dict[str, Docs], servicemonitor_crd: CrdValidator
) -> None:
    docs = rendered["kafka-keda"]
    monitor = only(docs, "ServiceMonitor")
    assert servicemonitor_crd.errors(monitor) == []
    service = only(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert not [d for d in rendered["default"] if d["kind"] == "ServiceMonitor"]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_termination_grace_outlasts_the_drain(rendered: dict[str, Docs], values: str) -> None:
    docs = rendered[values]
    grace = esmd_config(docs)["server"].get("shutdown_grace_seconds", 30)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace


def test_termination_grace_follows_the_config_and_refuses_a_short_one(helm: Path) -> None:
    docs = template(helm, sets=["config.server.shutdown_grace_seconds=90.5"])
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 121
    docs = template(helm, sets=["terminationGracePeriodSeconds=300"])
    assert (
        only(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 300
    )
    with pytest.raises(HelmError, match="must be longer than"):
        template(helm, sets=["terminationGracePeriodSeconds=30"])


def test_config_change_restarts_the_pods(helm: Path) -> None:
    def checksum(*sets: str) -> str:
        deployment = only(template(helm, sets=list(sets)), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert re.fullmatch(r"[0-9a-f]{64}", checksum())
    assert checksum() == checksum()
    assert checksum() != checksum("config.aws.region=eu-west-1")


def test_listen_must_be_on_every_interface(helm: Path) -> None:
    with pytest.raises(HelmError, match=re.escape("0.0.0.0:9464")):
        template(helm, sets=["config.server.listen=127.0.0.1:9464"])
    with pytest.raises(HelmError, match=re.escape("0.0.0.0:9464")):
        template(helm, sets=["config.server=null"])
    docs = template(helm, sets=["config.server.listen=0.0.0.0:9500", "service.port=9500"])
    assert container(docs)["ports"][0]["containerPort"] == 9500


def test_config_may_be_a_whole_file(helm: Path) -> None:
    path = REPO / "deploy" / "compose" / "esmd.yaml"
    docs = template(helm, set_files=[f"config={path}"])
    assert rendered_config(docs).strip() == path.read_text().strip()
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 20 + 30


@pytest.mark.parametrize("values", VALUE_SETS)
def test_secrets_come_only_from_existing_secrets(rendered: dict[str, Docs], values: str) -> None:
    docs = rendered[values]
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart never creates a Secret"
    main = container(docs)
    for var in main.get("env", []):
        if SECRET_NAME.search(var["name"]):
            assert set(var) == {"name", "valueFrom"}, var
            assert set(var["valueFrom"]) == {"secretKeyRef"}, var
    for source in main.get("envFrom", []):
        assert set(source) <= {"secretRef", "configMapRef"}, source


def test_secret_references_render(helm: Path) -> None:
    docs = template(
        helm,
        sets=[
            "envFromSecrets[0]=esmd-aws-credentials",
            "secretEnv[0].name=ORDERS_HOOK_TOKEN",
            "secretEnv[0].secretName=esmd-secrets",
            "secretEnv[0].key=orders-hook-token",
        ],
    )
    main = container(docs)
    assert main["envFrom"] == [{"secretRef": {"name": "esmd-aws-credentials"}}]
    assert {
        "name": "ORDERS_HOOK_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "esmd-secrets", "key": "orders-hook-token"}},
    } in main["env"]


def test_a_literal_secret_in_values_is_refused(helm: Path) -> None:
    with pytest.raises(HelmError, match="existing Secret"):
        template(helm, sets=["env[0].name=AWS_SECRET_ACCESS_KEY", "env[0].value=abc"])


def test_values_files_hold_no_secret_values() -> None:
    """No key that names a secret has a literal in the chart's values or the examples."""

    references = {"secretName", "secretEnv", "envFromSecrets", "authenticationRef"}

    def walk(node: Any, path: str) -> list[str]:
        found = []
        if isinstance(node, str) and re.search(r"(?i)(secret|password|token)=(?!\$\{)", node):
            found.append(path)  # e.g. a URL with ?token=<literal> instead of ${VAR}
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}"
                literal = isinstance(value, str | int) and value
                if SECRET_NAME.search(str(key)) and key not in references and literal:
                    found.append(here)
                found += walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                found += walk(item, f"{path}[{i}]")
        return found

    for path in [CHART / "values.yaml", *sorted(EXAMPLES.glob("*.yaml"))]:
        assert walk(yaml.safe_load(path.read_text()), path.name) == []


def test_pod_disruption_budget(helm: Path) -> None:
    docs = template(
        helm, sets=["podDisruptionBudget.minAvailable=1", "podDisruptionBudget.maxUnavailable=null"]
    )
    assert only(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    with pytest.raises(HelmError, match="one of maxUnavailable and minAvailable"):
        template(helm, sets=["podDisruptionBudget.minAvailable=1"])
    docs = template(helm, sets=["podDisruptionBudget.enabled=false"])
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def test_chart_runs_this_version_of_esmd() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["apiVersion"] == "v2"
