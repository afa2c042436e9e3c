"""MSK bootstrap lookup, StartingPosition, and SIGTERM draining, on the real broker."""

from __future__ import annotations

import asyncio
import base64
import copy
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml
from aiohttp import web
from aws_lambda_powertools.utilities.parser.models import KafkaMskEventModel

from tests.integration import collect
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)

pytestmark = pytest.mark.integration


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def seqs(fn: str) -> list[int]:
    return [
        orjson.loads(base64.b64decode(r["value"]))["seq"]
        for e in collect.events[fn]
        for records in e["records"].values()
        for r in records
    ]


async def test_msk_mapping_looks_up_brokers_and_delivers_aws_kafka_events(
    kafka_bootstrap: str, unique: str
) -> None:
    """The MSK control plane is a stand-in HTTP server answering GetBootstrapBrokers with the
    real local broker; everything after the lookup is real."""
    topic, fn = f"msk-{unique}", f"msk-{unique}"
    arn = f"arn:aws:kafka:us-east-1:123456789012:cluster/demo/{unique}-1"
    lookups: list[str] = []

    async def bootstrap_brokers(request: web.Request) -> web.Response:
        lookups.append(request.match_info["arn"])
        return web.json_response({"bootstrapBrokerString": kafka_bootstrap})

    app = web.Application()
    app.router.add_get("/v1/clusters/{arn:.+}/bootstrap-brokers", bootstrap_brokers)
    runner, url = await serve(app)
    await create_topic(kafka_bootstrap, topic, 2)
    await produce_json(kafka_bootstrap, topic, [(i % 2, {"seq": i}) for i in range(20)])
    config = {
        "aws": {"endpoints": {"kafka": url}},
        "functions": {fn: {"python": "tests.integration.collect:handle"}},
        "mappings": [
            {
                "Name": "msk",
                "EventSourceArn": arn,
                "Topics": [topic],
                "FunctionName": fn,
                "StartingPosition": "TRIM_HORIZON",
                "MaximumBatchingWindowInSeconds": 0,
                "AmazonManagedKafkaEventSourceConfig": {"ConsumerGroupId": f"g-{unique}"},
            }
        ],
    }
    try:
        async with running_daemon(config):
            await wait_for(lambda: len(set(seqs(fn))) == 20, 30, "20 records from MSK")
    finally:
        await runner.cleanup()
    assert lookups == [arn]
    event = collect.events[fn][0]
    assert (event["eventSource"], event["eventSourceArn"]) == ("aws:kafka", arn)
    assert list(event) == ["eventSource", "eventSourceArn", "bootstrapServers", "records"]
    KafkaMskEventModel.model_validate(copy.deepcopy(event))


async def test_starting_positions(kafka_bootstrap: str, unique: str) -> None:
    topic = f"pos-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(50)])
    await asyncio.sleep(0.05)
    boundary = time.time()
    await asyncio.sleep(0.05)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(50, 100)])
    at, latest = f"at-{unique}", f"latest-{unique}"
    config = {
        "functions": {
            name: {"python": "tests.integration.collect:handle"} for name in (at, latest)
        },
        "mappings": [
            kafka_mapping(
                "at",
                kafka_bootstrap,
                topic,
                f"g-at-{unique}",
                FunctionName=at,
                StartingPosition="AT_TIMESTAMP",
                StartingPositionTimestamp=boundary,
                MaximumBatchingWindowInSeconds=0,
            ),
            kafka_mapping(
                "latest",
                kafka_bootstrap,
                topic,
                f"g-latest-{unique}",
                FunctionName=latest,
                StartingPosition="LATEST",
                MaximumBatchingWindowInSeconds=0,
            ),
        ],
    }
    async with running_daemon(config) as daemon:
        latest_mapping = daemon.mappings[1]

        def assigned() -> bool:
            status = latest_mapping.status()["poller"]
            return bool(status and status["partitions"])

        await wait_for(assigned, 30, "the LATEST mapping's partition assignment")
        await asyncio.sleep(1.0)  # let the consumer resolve its LATEST position
        await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(100, 130)])
        await wait_for(
            lambda: len(seqs(at)) >= 80 and len(seqs(latest)) >= 30, 30, "both mappings to catch up"
        )
        await asyncio.sleep(0.5)
    assert seqs(at) == list(range(50, 130))
    assert seqs(latest) == list(range(100, 130))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_finishes_the_in_flight_batch_commits_and_exits_0(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    topic, group = f"term-{unique}", f"g-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(500)])
    delivered: list[int] = []
    first_request = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        event = await request.json()
        first_request.set()
        await asyncio.sleep(1.0)  # a batch is in flight when SIGTERM comes
        for records in event["records"].values():
            delivered.extend(r["offset"] for r in records)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/invoke", slow)
    runner, url = await serve(app)
    port = free_port()
    path = tmp_path / "esmd.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"listen": f"127.0.0.1:{port}", "shutdown_grace_seconds": 10},
                "functions": {"slow": {"url": f"{url}/invoke"}},
                "mappings": [
                    kafka_mapping(
                        "term", kafka_bootstrap, topic, group, FunctionName="slow", BatchSize=50
                    )
                ],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "run",
        "-c",
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            await first_request.wait()
        health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
        async with asyncio.timeout(10):  # each worker process reports readiness on its own
            while (ready := await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz"))[
                0
            ] != 200:
                await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
        await runner.cleanup()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert health == (200, "ok\n")
    assert ready[0] == 200 and orjson.loads(ready[1])["ready"] is True
    assert delivered and delivered == list(range(len(delivered)))  # in order, no gap
    committed, _ = await offsets(kafka_bootstrap, topic, group, 1)
    # what was delivered, including the batch in flight at SIGTERM, is committed; no more
    assert committed == {0: len(delivered)}
    assert len(delivered) < 500


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
