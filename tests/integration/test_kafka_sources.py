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
    # the producer stamps records with the wall clock's whole milliseconds (rounded or not):
    # a boundary two past now is after every record so far, and records sent once the clock
    # reaches it are at or after it
    boundary_ms = int(time.time() * 1000) + 2
    await wait_for(lambda: time.time() * 1000 >= boundary_ms, 1, "the clock to pass the boundary")
    boundary = (boundary_ms + 0.5) / 1000  # the mapping truncates to ms: no float rounding down
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
    async with running_daemon(config):
        # LATEST is resolved once the consumer has its partition, which the test cannot see:
        # send probes until one reaches the LATEST mapping; what follows must all reach it
        probes = 0

        async def probe_delivered() -> bool:
            nonlocal probes
            if seqs(latest):
                return True
            probes += 1
            await produce_json(kafka_bootstrap, topic, [(0, {"seq": -probes})])
            return False

        await wait_for(probe_delivered, 30, "a probe to reach the LATEST mapping")
        await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(100, 130)])

        async def all_committed() -> bool:
            for group in (f"g-at-{unique}", f"g-latest-{unique}"):
                committed, ends = await offsets(kafka_bootstrap, topic, group, 1)
                if committed != ends:
                    return False
            return True

        # once both groups committed the end, nothing more is due: the lists below are final
        await wait_for(all_committed, 30, "both mappings to commit the end of the topic")
    sent = [-n for n in range(1, probes + 1)]
    assert seqs(at) == list(range(50, 100)) + sent + list(range(100, 130))
    got = seqs(latest)
    assert got[-30:] == list(range(100, 130))
    probed = got[:-30]  # the probes sent once LATEST was resolved: the last few, in order
    assert probed and probed == sent[-len(probed) :], got


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
        # a slow function, not a wait of the test's: each batch takes longer than a daemon
        # needs to act on SIGTERM (its poller notices within one fetch), so the batch in
        # flight at SIGTERM is the last one it starts
        await asyncio.sleep(1.0)
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
    ready = (0, "")

    async def all_ready() -> bool:
        nonlocal ready
        ready = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
        return ready[0] == 200

    try:
        async with asyncio.timeout(60):
            await first_request.wait()
        health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
        # each worker process reports readiness on its own
        await wait_for(all_ready, 10, "/readyz to answer 200")
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
