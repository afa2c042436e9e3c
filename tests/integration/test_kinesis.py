"""The Kinesis source against moto_server: delivery, order, filters, failures, leases."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser.models import KinesisDataStreamModel

from tests.integration import stream_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import (
    client,
    in_key_order,
    make_stream,
    put_json,
    stream_config,
)

pytestmark = pytest.mark.integration


async def test_three_shards_every_record_in_key_order(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """20,000 records over 200 partition keys, ParallelizationFactor 4: all delivered once,
    each key in order; the events validate against Powertools' Kinesis model."""
    name = f"k3-{unique}"
    async with client("kinesis", moto_endpoint) as kinesis:
        arn = await make_stream(kinesis, name, 3)
        items = [(f"key-{i % 200}", {"key": f"key-{i % 200}", "n": i}) for i in range(20_000)]
        await put_json(kinesis, name, items)
    cfg = stream_config(
        moto_endpoint,
        name,
        arn,
        "collect",
        str(tmp_path / "state.db"),
        ParallelizationFactor=4,
        BatchSize=500,
    )
    async with running_daemon(cfg) as daemon:
        await wait_for(lambda: len(stream_handlers.payloads[name]) >= 20_000, 120, "20,000 records")
        labels = {"mapping": name, "source": "kinesis"}
        sample = daemon.metrics.registry.get_sample_value
        assert sample("esm_pollers", {**labels, "kind": "current"}) == 3  # a loop per shard
        batches = sum(
            sample("esm_batch_size_count", {**labels, "reason": reason}) or 0
            for reason in ("size", "bytes", "window")
        )
        assert batches == len(stream_handlers.events[name])
    got = stream_handlers.payloads[name]
    assert sorted(p["n"] for p in got) == list(range(20_000))
    assert in_key_order(got)
    event = stream_handlers.events[name][0]
    KinesisDataStreamModel.model_validate(copy.deepcopy(event))
    record = event["Records"][0]
    assert list(record) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    assert (
        record["eventID"]
        == record["eventID"].split(":")[0] + ":" + record["kinesis"]["sequenceNumber"]
    )
    assert record["eventSourceARN"] == arn
    assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)


async def test_poison_record_bisected_to_the_failure_queue(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """One poison record among 1,000, BisectBatchOnFunctionError and MaximumRetryAttempts 2:
    only it reaches the SQS destination, as AWS's invocation record; the rest is delivered
    and the shard goes on with records put afterwards."""
    name = f"poison-{unique}"
    async with client("kinesis", moto_endpoint) as kinesis, client("sqs", moto_endpoint) as sqs:
        arn = await make_stream(kinesis, name, 1)
        queue = (await sqs.create_queue(QueueName=f"{name}-failures"))["QueueUrl"]
        queue_arn = (await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        items = [("k", {"key": "k", "n": i, "poison": i == 500}) for i in range(1000)]
        await put_json(kinesis, name, items)
        cfg = stream_config(
            moto_endpoint,
            name,
            arn,
            "poison",
            str(tmp_path / "state.db"),
            BatchSize=100,
            BisectBatchOnFunctionError=True,
            MaximumRetryAttempts=2,
            DestinationConfig={"OnFailure": {"Destination": queue_arn}},
        )
        cfg["retry"] = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
        async with running_daemon(cfg) as daemon:
            await wait_for(lambda: len(stream_handlers.payloads[name]) >= 999, 60, "999 records")
            await put_json(kinesis, name, [("k", {"key": "k", "n": i}) for i in range(1000, 1100)])
            await wait_for(lambda: len(stream_handlers.payloads[name]) >= 1099, 30, "the rest")
            messages = (
                await sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=5)
            ).get("Messages", [])
            labels = {"mapping": name, "source": "kinesis"}
            delivered_metric = daemon.metrics.registry.get_sample_value(
                "esm_on_failure_destination_delivered_events_total", labels
            )
    got = [p["n"] for p in stream_handlers.payloads[name]]
    assert got == [i for i in range(1100) if i != 500]
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert set(body) == {
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    }
    assert body["version"] == "1.0"
    ctx = body["requestContext"]
    assert set(ctx) == {"requestId", "functionArn", "condition", "approximateInvokeCount"}
    assert ctx["condition"] == "RetryAttemptsExhausted"
    # every invocation that held record 500: its batch of 100, the halves of 50, 25, 12, 6
    # and 3 that held it, then the record alone, and its two retries (one rule for all sources)
    assert ctx["approximateInvokeCount"] == 9
    assert ctx["functionArn"].startswith("arn:aws:lambda:us-east-1:")
    assert body["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    info = body["KinesisBatchInfo"]
    assert info["shardId"] == "shardId-000000000000"
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["batchSize"] == 1
    assert info["streamArn"] == arn
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", info["approximateArrivalOfFirstRecord"]
    )
    assert info["approximateArrivalOfFirstRecord"] == info["approximateArrivalOfLastRecord"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp"])
    assert delivered_metric == 1
