"""`esmd run` with two worker processes and the ESM API: the supervisor serves the API and
writes the store; both workers follow it (create, update, delete) within seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config

from tests.integration.test_workers import ROOT, free_port, handled, wait

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
KEY, SECRET = "AKIDESMDWORKERS", "esmd-workers-secret"


def workers_running(port: int, uuid: str) -> dict[int, float]:
    """The workers whose status lists the mapping as Enabled, with the revision they run."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/mappings", timeout=5) as reply:
            listed = json.loads(reply.read())["mappings"]
    except OSError:
        return {}
    return {
        m["worker"]: m["revision"] for m in listed if m["uuid"] == uuid and m["state"] == "Enabled"
    }


def test_two_workers_follow_the_api(elasticmq_endpoint: str, unique: str, tmp_path: Path) -> None:
    fn = f"api-workers-{unique}"
    sqs = boto3.client("sqs", endpoint_url=elasticmq_endpoint, region_name="us-east-1")
    url = sqs.create_queue(QueueName=fn, Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2, "shutdown_grace_seconds": 5},
        "aws": {"endpoints": {"sqs": elasticmq_endpoint}},
        "checkpoints": {"path": str(tmp_path / "state.db")},
        "api": {"credentials": [{"access_key_id": KEY, "secret_access_key": SECRET}]},
        "functions": {fn: {"python": "tests.integration.file_handlers:sqs_bodies"}},
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "ESMD_TEST_OUT": str(out), "PYTHONPATH": str(ROOT)}
    lam: Any = boto3.client(
        "lambda",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1}),
    )
    argv = [sys.executable, "-m", "service", "run", "-c", str(path)]
    with subprocess.Popen(argv, cwd=ROOT, env=env) as proc:
        try:
            wait(lambda: listening(port), 20, "the supervisor's server")
            uuid = lam.create_event_source_mapping(
                EventSourceArn=f"arn:aws:sqs:us-east-1:000000000000:{fn}", FunctionName=fn
            )["UUID"]
            wait(lambda: set(workers_running(port, uuid)) == {0, 1}, 20, "both workers polling")
            (first,) = set(workers_running(port, uuid).values())
            wait(lambda: state(lam, uuid) == "Enabled", 10, "Enabled through the API")
            for i in range(20):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
            wait(lambda: len({r["body"]["n"] for r in handled(out)}) == 20, 20, "delivery")

            lam.update_event_source_mapping(UUID=uuid, BatchSize=1)
            assert state(lam, uuid) == "Updating"
            wait(lambda: state(lam, uuid) == "Enabled", 20, "the update applied")

            def both_updated() -> bool:
                running = workers_running(port, uuid)
                return set(running) == {0, 1} and first not in running.values()

            wait(both_updated, 20, "both workers running the update")
            before = len(handled(out))
            for i in range(20, 26):
                sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"n": i}))
            wait(lambda: len({r["body"]["n"] for r in handled(out)}) == 26, 20, "delivery")
            assert {r["batch"] for r in handled(out)[before:]} == {1}

            lam.delete_event_source_mapping(UUID=uuid)
            wait(lambda: not workers_running(port, uuid), 20, "both workers stopped it")
            with pytest.raises(lam.exceptions.ResourceNotFoundException):
                lam.get_event_source_mapping(UUID=uuid)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            return True
    except OSError:
        return False


def state(lam: Any, uuid: str) -> str | None:
    try:
        return str(lam.get_event_source_mapping(UUID=uuid)["State"])
    except lam.exceptions.ResourceNotFoundException:
        return None
