"""Kafka error handling against real servers: throttling by a Lambda endpoint (429
TooManyRequestsException) in front of the Runtime Interface Emulator, a destination that is
down, and a raising handler under the emulator seen as a function error by both targets."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web

from service.config import FunctionConfig
from service.targets.http import HttpTarget
from service.targets.lambda_ import LambdaTarget
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    scrape,
    wait_for,
)
from tests.integration.rie import running_rie

pytestmark = pytest.mark.integration
INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"


class ThrottlingProxy:
    """The Lambda Invoke API in front of the emulator: answers 429 TooManyRequestsException
    (as the Lambda service does when concurrency is exhausted) for its first ``seconds``,
    then forwards to the emulator. Keeps the time of every throttled request."""

    def __init__(self, upstream: str, seconds: float) -> None:
        self.upstream = upstream
        self.until = time.monotonic() + seconds
        self.throttled_at: list[float] = []
        self.forwarded = 0

    async def invoke(self, request: web.Request) -> web.Response:
        body = await request.read()
        if time.monotonic() < self.until:
            self.throttled_at.append(time.monotonic())
            return web.json_response(
                {
                    "Type": "User",
                    "message": "Rate Exceeded.",
                    "Reason": "ConcurrentInvocationLimitExceeded",
                },
                status=429,
                headers={"x-amzn-ErrorType": "TooManyRequestsException"},
            )
        self.forwarded += 1
        url = self.upstream + request.path
        async with aiohttp.ClientSession() as http, http.post(url, data=body) as resp:
            return web.Response(body=await resp.read(), status=resp.status)


@pytest.fixture
async def rie(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    out = tmp_path / "invocations.jsonl"
    with running_rie("tests.integration.lambda_fn.handle", out) as endpoint:
        yield endpoint, out


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def metrics_of(daemon: Any, name: str) -> dict[str, float]:
    host, port = daemon.address
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/metrics") as r:
        return scrape(await r.text(), name)


async def test_throttling_backs_off_counts_no_failure_and_loses_nothing(
    kafka_bootstrap: str, unique: str, rie: tuple[str, Path]
) -> None:
    endpoint, out = rie
    proxy = ThrottlingProxy(endpoint, seconds=1.5)
    app = web.Application()
    app.router.add_post(INVOKE_PATH, proxy.invoke)
    runner, url = await serve(app)
    topic, group, n = f"throttle-{unique}", f"g-{unique}", 40
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(n)])
    config = {
        "retry": {"throttle_backoff_seconds": 0.05, "max_backoff_seconds": 0.4},
        "functions": {"fn": {"lambda": "function", "endpoint_url": url}},
        "mappings": [
            kafka_mapping(
                "throttle",
                kafka_bootstrap,
                topic,
                group,
                FunctionName="fn",
                BatchSize=10,
                MaximumRetryAttempts=0,  # a throttle counted as a failure would drop records
                MaximumBatchingWindowInSeconds=0,
            )
        ],
    }
    try:
        async with running_daemon(config) as daemon:

            async def committed() -> bool:
                done, ends = await offsets(kafka_bootstrap, topic, group, 1)
                return done == ends == {0: n}

            await wait_for(committed, 60, "every offset committed after the throttling")
            metrics = await metrics_of(daemon, "throttle")
    finally:
        await runner.cleanup()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(o for line in lines for o in line["offsets"]) == list(range(n))
    assert metrics.get("esm_failed_invoke_events_total", 0) == 0
    assert metrics.get("esm_dropped_events_total", 0) == 0
    # backoff: a handful of throttled calls in 1.5 s, further apart as they go on
    times = proxy.throttled_at
    assert 3 <= len(times) <= 25, len(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps[-2:]) > 2 * sum(gaps[:2]), gaps


async def test_destination_down_holds_the_offset_until_it_accepts(
    kafka_bootstrap: str, moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """With ``retry.block_on_destination_failure``, a destination that refuses holds the
    mapping: the SQS queue does not exist at first, and the failed record is not committed
    past until the queue appears and takes the invocation record. (By default the records
    are dropped after ``retry.destination_attempts``: tests/integration/test_destinations.)"""
    topic, group, queue = f"down-{unique}", f"g-{unique}", f"esmd-down-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(10)])
    arn = f"arn:aws:sqs:us-east-1:123456789012:{queue}"
    config = {
        "aws": {"endpoint_url": moto_endpoint},
        "retry": {
            "initial_backoff_seconds": 0.05,
            "max_backoff_seconds": 0.2,
            "block_on_destination_failure": True,
        },
        "functions": {"fn": {"python": "tests.integration.test_kafka_errors:fail_on_five"}},
        "mappings": [
            kafka_mapping(
                "down",
                kafka_bootstrap,
                topic,
                group,
                FunctionName="fn",
                BatchSize=1,
                MaximumBatchingWindowInSeconds=0,
                MaximumRetryAttempts=0,
                DestinationConfig={"OnFailure": {"Destination": arn}},
            )
        ],
    }
    session = get_session()
    async with running_daemon(config) as daemon:
        await wait_for(lambda: _errors(daemon) >= 2, 30, "the destination to fail a few times")
        committed, _ = await offsets(kafka_bootstrap, topic, group, 1)
        assert committed[0] <= 5  # not past the record that is still waiting for its queue
        async with session.create_client(
            "sqs", region_name="us-east-1", endpoint_url=moto_endpoint
        ) as sqs:
            url = (await sqs.create_queue(QueueName=queue))["QueueUrl"]

            async def all_committed() -> bool:
                done, ends = await offsets(kafka_bootstrap, topic, group, 1)
                return done == ends == {0: 10}

            await wait_for(all_committed, 30, "the offsets to move on once delivered")
            got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        metrics = await metrics_of(daemon, "down")
    (message,) = got["Messages"]
    record = json.loads(message["Body"])
    assert record["KafkaBatchInfo"]["recordsInfo"][f"{topic}-0"]["firstRecordOffset"] == "5"
    assert metrics["esm_on_failure_destination_delivered_events_total"] == 1


def _errors(daemon: Any) -> float:
    value = daemon.metrics.registry.get_sample_value(
        "esm_errors_total", {"mapping": "down", "source": "kafka", "kind": "on_failure_destination"}
    )
    return value or 0


def fail_on_five(event: dict[str, Any], context: Any) -> None:
    """In-process handler for the destination test: offset 5 always fails."""
    if any(r["offset"] == 5 for rs in event["records"].values() for r in rs):
        raise ValueError("offset 5")


async def test_a_raising_handler_under_the_emulator_is_a_function_error(
    tmp_path: Path,
) -> None:
    """The emulator answers 200 without X-Amz-Function-Error when the handler raises; both
    targets still see an Unhandled function error, and a success stays a success."""
    out = tmp_path / "delivered.jsonl"
    bad = {"records": {"t-0": [{"offset": 1, "value": "eyJmYWlsIjogdHJ1ZX0="}]}}
    good = {"records": {"t-0": [{"offset": 2, "value": "e30="}]}}
    with running_rie("tests.integration.failing_fn.handle", out) as endpoint:
        http = HttpTarget("fn", FunctionConfig(url=endpoint + INVOKE_PATH.format(name="function")))
        lam = LambdaTarget(
            "fn", FunctionConfig.model_validate({"lambda": "function"}), endpoint_url=endpoint
        )
        try:
            for target in (http, lam):
                failed = await target.invoke(bad)
                assert failed.function_error == "Unhandled"
                assert failed.payload["errorType"] == "ValueError"
                ok = await target.invoke(good)
                assert ok.ok and ok.payload == {"processed": 1}
        finally:
            await http.close()
            await lam.close()
    await asyncio.sleep(0)
