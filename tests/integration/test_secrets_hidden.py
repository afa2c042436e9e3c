"""Secrets stay secret: an `esmd run` (two workers) with SCRAM, mTLS and a refused password
never shows a password, a private key or the admin token in its logs, /mappings or
/metrics; the admin token guards everything but the probes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from service.devtools.servers import AUTH_PASSWORD, AUTH_USER, auth_address, auth_tls_dir
from tests.integration.kafka_helpers import create_topic, kafka_mapping, produce_json
from tests.integration.test_workers import (
    ROOT,
    free_port,
    handled,
    stable_with_two_members,
    wait,
)
from tests.tls_material import broker_ca, client_secret

pytestmark = pytest.mark.integration
TOKEN = "admin-token-0123456789abcdef"
WRONG = "wrong-password-5f1c"
KEY_PASSWORD = "key-password-9a7e"


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


def test_no_secret_in_logs_mappings_or_metrics_and_the_token_is_enforced(
    kafka_auth_internal: str, unique: str, tmp_path: Path
) -> None:
    topic = f"hidden-{unique}"
    asyncio.run(create_topic(kafka_auth_internal, topic, 2))
    asyncio.run(produce_json(kafka_auth_internal, topic, [(i % 2, {"i": i}) for i in range(10)]))
    mtls = client_secret(broker_ca(), KEY_PASSWORD)
    (tmp_path / "mtls.json").write_text(json.dumps(mtls))
    ca = {"certificate": (auth_tls_dir() / "ca.pem").read_text()}
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ESMD_TEST_OUT": str(tmp_path / "out.jsonl"),
        "ESMD_ADMIN_TOKEN": TOKEN,
        "SCRAM_SECRET": json.dumps({"username": AUTH_USER, "password": AUTH_PASSWORD}),
        "WRONG_SECRET": json.dumps({"username": AUTH_USER, "password": WRONG}),
        "CA_SECRET": json.dumps(ca),
    }

    def mapping(name: str, listener: str, access: list[tuple[str, str]]) -> dict[str, object]:
        made = kafka_mapping(
            name,
            auth_address(listener),
            topic,
            f"g-{name}-{unique}",
            FunctionName="records",
            SourceAccessConfigurations=[{"Type": t, "URI": u} for t, u in access],
            # a poller in each worker, so both workers' logs carry the credentials' paths
            ProvisionedPollerConfig={"MinimumPollers": 2, "MaximumPollers": 2},
        )
        if listener == "SASL_PLAINTEXT":
            made["KafkaTls"] = False
        return made

    port = free_port()
    config = {
        "server": {
            "listen": f"127.0.0.1:{port}",
            "workers": 2,
            "auth_token": "env:ESMD_ADMIN_TOKEN",
        },
        "functions": {"records": {"python": "tests.integration.file_handlers:kafka_records"}},
        "mappings": [
            mapping("scram", "SASL_PLAINTEXT", [("SASL_SCRAM_512_AUTH", "env:SCRAM_SECRET")]),
            mapping(
                "mtls",
                "SSL",
                [
                    ("CLIENT_CERTIFICATE_TLS_AUTH", f"file:{tmp_path / 'mtls.json'}"),
                    ("SERVER_ROOT_CA_CERTIFICATE", "env:CA_SECRET"),
                ],
            ),
            mapping("refused", "SASL_PLAINTEXT", [("BASIC_AUTH", "env:WRONG_SECRET")]),
        ],
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "service", "run", "-c", str(path), "--log-level", "DEBUG"]
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as proc:
        try:
            out = tmp_path / "out.jsonl"
            wait(lambda: len(handled(out)) >= 20, 60, "both mappings to deliver")

            def refused() -> bool:
                status, body = get(port, "/mappings")
                reasons = [m["state_reason"] for m in json.loads(body)["mappings"]] if body else []
                return status == 200 and "EVENT_SOURCE_AUTHN_ERROR" in reasons

            wait(refused, 30, "the refused mapping's EVENT_SOURCE_AUTHN_ERROR")
            for group in (f"g-scram-{unique}", f"g-mtls-{unique}"):
                # a stop in the middle of a join waits on the static members (README)
                wait(
                    lambda g=group: asyncio.run(stable_with_two_members(kafka_auth_internal, g)),
                    60,
                    f"{group} stable with both workers",
                )
            pages = {p: get(port, p) for p in ("/mappings", "/metrics")}
            assert all(status == 200 for status, _ in pages.values())
            assert "EVENT_SOURCE_AUTHN_ERROR" in pages["/metrics"][1]
            # the token: wanted everywhere but the probes, and a wrong one is refused
            assert get(port, "/mappings", None)[0] == 401
            assert get(port, "/metrics", "not-the-token")[0] == 401
            assert get(port, "/healthz", None)[0] == 200
            assert get(port, "/readyz", None)[0] in (200, 503)
        finally:
            proc.terminate()
            logs, _ = proc.communicate(timeout=60)
    text = logs.decode(errors="replace") + "".join(body for _, body in pages.values())
    key_lines = [line for line in mtls["privateKey"].splitlines() if "-----" not in line]
    secrets = [AUTH_PASSWORD, WRONG, KEY_PASSWORD, TOKEN, *key_lines[:3]]
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"secrets in logs or pages: {leaked}"
    assert "poller failed" in text and "refused" in text  # the logs were captured
