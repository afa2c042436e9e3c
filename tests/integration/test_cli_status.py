"""``esmd status`` against a running daemon (Kafka, ElasticMQ) behind server.auth_token."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)
from tests.integration.ops_helpers import ROOT, esmd, write_config
from tests.integration.test_sqs import make_queue, send, sqs  # noqa: F401

pytestmark = pytest.mark.integration
TOKEN = "status-test-token"


def block(stdout: str, name: str) -> dict[str, str]:
    """The rows of one mapping's table."""
    lines = stdout.split(f"{name}  (", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return {k: v.strip() for k, _, v in (line.strip().partition("  ") for line in lines)}


async def test_status_tables_from_a_running_daemon(
    sqs: Any,  # noqa: F811
    kafka_bootstrap: str,
    elasticmq_endpoint: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESMD_TEST_OUT", str(tmp_path / "out.jsonl"))
    topic, group = f"st-{unique}", f"g-st-{unique}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce_json(kafka_bootstrap, topic, [(i % 2, {"seq": i}) for i in range(20)])
    url, arn = await make_queue(sqs, f"st-q-{unique}")
    await send(sqs, url, [{"n": i} for i in range(5)])
    fn = {"python": "tests.integration.file_handlers:kafka_records"}
    kafka, paused, missing = f"st-k-{unique}", f"st-q-{unique}", f"st-missing-{unique}"
    config = {
        "server": {"listen": "127.0.0.1:0", "auth_token": TOKEN, "shutdown_grace_seconds": 5},
        "aws": {"endpoints": {"sqs": elasticmq_endpoint}},
        "functions": {"fn": fn},
        "mappings": [
            kafka_mapping(kafka, kafka_bootstrap, topic, group, FunctionName="fn"),
            {"Name": paused, "EventSourceArn": arn, "FunctionName": "fn", "Enabled": False},
            {
                "Name": missing,
                "EventSourceArn": f"arn:aws:sqs:us-east-1:000000000000:nope-{unique}",
                "FunctionName": "fn",
            },
        ],
    }
    path = write_config(tmp_path, config)

    # no daemon: what the config and the sources say
    code, stdout, stderr = await esmd("status", "-c", path)
    assert code == 0, stderr
    assert block(stdout, kafka)["lag"].startswith("20 records (group")
    assert block(stdout, paused)["backlog"] == "5 messages visible, 0 in flight"

    async with running_daemon(config) as daemon:

        async def committed() -> bool:
            done, ends = await offsets(kafka_bootstrap, topic, group, 2)
            return done == ends

        await wait_for(committed, 30, "every record committed")
        status_url = "http://{}:{}".format(*daemon.address)
        code, stdout, stderr = await esmd("status", "-c", path, "--url", status_url)
        assert code == 0, stderr
        k = block(stdout, kafka)
        assert k["state"] == "Enabled (USER_INITIATED)"
        assert k["pollers"] == "1 current / 1 desired"
        assert k["lag"] == "0 records (esm_offset_lag sum)"
        assert k["last result"] == "OK"
        assert k["records"].startswith("polled 0.0/s, invoked 0.0/s")
        assert k["errors"] == "none"
        assert k["last error"] == "-"
        assert block(stdout, paused)["state"].startswith("Disabled")
        m = block(stdout, missing)
        assert m["last result"].startswith("PROBLEM: ")
        assert m["errors"].startswith("polling ")
        assert m["last error"] != "-"

        # a wrong token is refused
        code, _, stderr = await esmd("status", "-c", path, "--url", status_url, "--token", "x")
        assert code == 1 and "401" in stderr

        # --watch redraws until Ctrl-C
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "status",
            "-c",
            path,
            "--url",
            status_url,
            "--interval",
            "0.1",
            "--watch",
            "0.1",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        seen = b""
        async with asyncio.timeout(20):
            while seen.count(b"\x1b[2J") < 2:
                seen += await proc.stdout.read(4096)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await proc.communicate()
        assert proc.returncode == 0
        assert kafka.encode() in seen
