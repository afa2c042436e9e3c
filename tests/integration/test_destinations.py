"""OnFailure destinations end to end: a handler under the Lambda Runtime Interface Emulator
raises on chosen records of a Kafka topic on the real broker; after bisection and retries
those records reach the destination (moto_server SQS, SNS to an SQS subscription, S3, or a
Kafka topic on the broker) as AWS's invocation record, every other record is delivered, and
the group's committed offsets move past all of them; and a destination that keeps refusing
is given up on after its attempts, the offsets moving on all the same."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from service.config import MappingConfig, RetryConfig
from tests import aws_examples as aws
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

N = 20
FAILING = {3, 11, 17}
#: (destination string, read: every invocation record in it so far, as (Kafka key, record))
Reader = Callable[[], Awaitable[list[tuple[bytes | None, dict[str, Any]]]]]


def aws_client(service: str, endpoint: str) -> Any:
    return get_session().create_client(service, region_name="us-east-1", endpoint_url=endpoint)


async def sqs_destination(endpoint: str, name: str) -> tuple[str, Reader]:
    async with aws_client("sqs", endpoint) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
    return arn, _queue_reader(endpoint, url, lambda body: json.loads(body))


def _queue_reader(endpoint: str, url: str, parse: Callable[[str], dict[str, Any]]) -> Reader:
    seen: list[tuple[bytes | None, dict[str, Any]]] = []

    async def read() -> list[tuple[bytes | None, dict[str, Any]]]:
        async with aws_client("sqs", endpoint) as sqs:
            resp = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
            for m in resp.get("Messages", []):
                seen.append((None, parse(m["Body"])))
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return seen

    return read


async def sns_destination(endpoint: str, name: str) -> tuple[str, Reader]:
    async with aws_client("sns", endpoint) as sns, aws_client("sqs", endpoint) as sqs:
        topic = (await sns.create_topic(Name=name))["TopicArn"]
        url = (await sqs.create_queue(QueueName=f"{name}-sub"))["QueueUrl"]
        queue = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue)

    def parse(body: str) -> dict[str, Any]:
        envelope = json.loads(body)  # the SNS notification the subscription delivers
        assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
        return dict(json.loads(envelope["Message"]))

    return topic, _queue_reader(endpoint, url, parse)


S3_KEYS: dict[str, list[str]] = {}


async def s3_destination(endpoint: str, name: str) -> tuple[str, Reader]:
    async with aws_client("s3", endpoint) as s3:
        await s3.create_bucket(Bucket=name)

    async def read() -> list[tuple[bytes | None, dict[str, Any]]]:
        out = []
        async with aws_client("s3", endpoint) as s3:
            listed = await s3.list_objects_v2(Bucket=name)
            keys = [o["Key"] for o in listed.get("Contents", [])]
            S3_KEYS[name] = keys
            for key in keys:
                obj = await s3.get_object(Bucket=name, Key=key)
                async with obj["Body"] as body:
                    out.append((None, json.loads(await body.read())))
        return out

    return f"arn:aws:s3:::{name}", read


async def kafka_destination(bootstrap: str, topic: str) -> tuple[str, Reader]:
    await create_topic(bootstrap, topic, 1)
    seen: list[tuple[bytes | None, dict[str, Any]]] = []

    async def read() -> list[tuple[bytes | None, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, len(seen))
            fetched = await consumer.getmany(tp, timeout_ms=500)
            seen.extend((m.key, json.loads(m.value)) for m in fetched.get(tp, []))
        finally:
            await consumer.stop()
        return seen

    return f"kafka://{topic}", read


@pytest.fixture
async def handler(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    out = tmp_path / "delivered.jsonl"
    with running_rie("tests.integration.failing_fn.handle", out) as endpoint:
        yield endpoint, out


def delivered(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [o for line in out.read_text().splitlines() for o in json.loads(line)["offsets"]]


@pytest.mark.parametrize("kind", ["sqs", "sns", "s3", "kafka"])
async def test_failed_records_reach_the_destination_and_the_offsets_move_on(
    kind: str,
    kafka_bootstrap: str,
    moto_endpoint: str,
    unique: str,
    handler: tuple[str, Path],
) -> None:
    endpoint, out = handler
    topic, group, name = f"dest-{kind}-{unique}", f"g-{unique}", f"esmd-dest-{kind}-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(
        kafka_bootstrap, topic, [(0, {"seq": i, "fail": i in FAILING}) for i in range(N)]
    )
    if kind == "kafka":
        destination, read = await kafka_destination(kafka_bootstrap, f"{topic}-failures")
    else:
        make = {"sqs": sqs_destination, "sns": sns_destination, "s3": s3_destination}[kind]
        destination, read = await make(moto_endpoint, name)
    mapping = kafka_mapping(
        name,
        kafka_bootstrap,
        topic,
        group,
        FunctionName="fn",
        BatchSize=4,
        MaximumBatchingWindowInSeconds=0,
        MaximumRetryAttempts=1,
        BisectBatchOnFunctionError=True,
        DestinationConfig={"OnFailure": {"Destination": destination}},
    )
    config = {
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        "retry": {"initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.1},
        # the emulator serves one function, under the name "function"
        "functions": {"fn": {"lambda": "function", "endpoint_url": endpoint}},
        "mappings": [mapping],
    }
    async with running_daemon(config) as daemon:

        async def all_committed() -> bool:
            committed, ends = await offsets(kafka_bootstrap, topic, group, 1)
            return committed == ends == {0: N}

        await wait_for(all_committed, 60, "the committed offset to pass every record")
        found = await read()
        await wait_for(lambda: len(found) >= len(FAILING), 10, "every invocation record")
        host, port = daemon.address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            metrics = scrape(await resp.text(), name)

    # every other record was delivered, none of the failing ones
    assert set(delivered(out)) == set(range(N)) - FAILING
    records = [record for _, record in await read()]
    in_destination = sum(r["KafkaBatchInfo"]["batchSize"] for r in records)
    assert in_destination == len(FAILING)
    assert metrics["esm_on_failure_destination_delivered_events_total"] == in_destination
    assert metrics.get("esm_dropped_events_total", 0) == 0

    given_up = check_records(kind, records, topic, kafka_bootstrap)
    assert given_up == FAILING
    if kind == "kafka":  # produced with the failed record's own key
        assert sorted(key for key, _ in found) == sorted(f"k{o}".encode() for o in FAILING)
    if kind == "s3":
        uuid = MappingConfig.model_validate({**mapping}).uuid
        layout = (
            rf"aws/lambda/{uuid}/{re.escape(topic)}-0/\d{{4}}/\d\d/\d\d/"
            r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}"
        )
        assert all(re.fullmatch(layout, key) for key in S3_KEYS[name]), S3_KEYS[name]


async def test_a_destination_that_keeps_refusing_is_given_up_on_and_the_offsets_move_on(
    kafka_bootstrap: str, moto_endpoint: str, unique: str, handler: tuple[str, Path]
) -> None:
    """The destination is an S3 bucket that does not exist: each failed record's invocation
    record is refused retry.destination_attempts times (the default), then the mapping moves
    on, as AWS's does, with every refusal counted in
    esm_errors_total{kind="on_failure_destination"}."""
    endpoint, out = handler
    topic, group, name = f"refused-{unique}", f"g-{unique}", f"esmd-refused-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(
        kafka_bootstrap, topic, [(0, {"seq": i, "fail": i in FAILING}) for i in range(N)]
    )
    mapping = kafka_mapping(
        name,
        kafka_bootstrap,
        topic,
        group,
        FunctionName="fn",
        BatchSize=4,
        MaximumBatchingWindowInSeconds=0,
        MaximumRetryAttempts=1,
        BisectBatchOnFunctionError=True,
        DestinationConfig={"OnFailure": {"Destination": f"arn:aws:s3:::no-such-bucket-{unique}"}},
    )
    config = {
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        "retry": {"initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.1},
        "functions": {"fn": {"lambda": "function", "endpoint_url": endpoint}},
        "mappings": [mapping],
    }
    async with running_daemon(config) as daemon:

        async def all_committed() -> bool:
            committed, ends = await offsets(kafka_bootstrap, topic, group, 1)
            return committed == ends == {0: N}

        await wait_for(all_committed, 60, "the committed offset to pass every record")
        host, port = daemon.address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            page = await resp.text()

    assert set(delivered(out)) == set(range(N)) - FAILING
    metrics = scrape(page, name)
    assert metrics.get("esm_on_failure_destination_delivered_events_total", 0) == 0
    refusals = sum(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "esm_errors_total"
        and s.labels.get("mapping") == name
        and s.labels.get("kind") == "on_failure_destination"
    )
    # bisection isolates each failing record: one invocation record each, refused each time
    assert refusals == RetryConfig().destination_attempts * len(FAILING)


def check_records(kind: str, records: list[dict[str, Any]], topic: str, bootstrap: str) -> set[int]:
    """Compare each invocation record with AWS's documented example, field by field; return
    the offsets it accounts for."""
    partition = f"{topic}-0"
    example = {
        "sqs": aws.KAFKA_SQS_SNS,
        "sns": aws.KAFKA_SQS_SNS,
        "s3": aws.KAFKA_S3,
        "kafka": aws.KAFKA_TOPIC,
    }[kind]
    # self-managed Kafka: AWS's examples are MSK's, with an eventSourceArn esmd has no value for
    expected = aws.shape(aws.self_managed(aws.renamed(example, partition)))
    offsets_seen = set()
    for r in records:
        info = r["KafkaBatchInfo"]
        if kind == "kafka":
            assert info["payloadSize"] == len(orjson.dumps(r["payload"]))
            for rec in r["payload"]["records"][partition]:
                rec["headers"] = []  # AWS's example record has none
        assert aws.shape(r) == expected
        assert r["version"] == "1.0"
        assert r["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert r["requestContext"]["approximateInvokeCount"] >= 2  # first try + 1 retry
        assert r["requestContext"]["functionArn"].endswith(":function:function")
        assert r["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        assert info["bootstrapServers"] == bootstrap
        assert info["batchSize"] == 1  # bisection isolated each failing record
        if kind == "kafka":
            offset = int(info["recordInfo"]["offset"])
            event = r["payload"]
        else:
            ranges = info["recordsInfo"][partition]
            offset = int(ranges["firstRecordOffset"])
            assert ranges["lastRecordOffset"] == str(offset)
            event = json.loads(r["payload"]) if kind == "s3" else None
            if event is not None:
                assert info["payloadSize"] == len(orjson.dumps(event))
        if event is not None:
            assert event["eventSource"] == "SelfManagedKafka"
            (record,) = event["records"][partition]
            assert record["offset"] == offset
            assert json.loads(base64.b64decode(record["value"]))["fail"] is True
        offsets_seen.add(offset)
    return offsets_seen
