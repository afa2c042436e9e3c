"""Invocation records against AWS's documented examples, S3 key layout, destination and ARN
parsing, config validation of DestinationConfig, the OnFailureSender's bounded attempts, and
function errors read from an emulator's body."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from service.arns import (
    Arn,
    account_of,
    is_fifo_destination,
    kinesis_consumer_stream,
    parse_arn,
)
from service.config import ConfigError, RetryConfig, parse_config
from service.destinations import DestinationUnavailable, FailedBatch, destination_kind
from service.destinations.records import (
    Failure,
    SourceInfo,
    kafka_batch_record,
    kafka_record_messages,
    s3_key,
    stream_batch_record,
)
from service.destinations.sender import OnFailureSender
from service.destinations.sqs import batch_record
from service.invoke import Backoff
from service.metrics import Metrics
from service.targets import error_in_body
from tests import aws_examples as aws

NOW = 1_573_692_006.021  # 2019-11-14T00:40:06.021Z
FAILURE = Failure("RetryAttemptsExhausted", 3, "Unhandled")
KAFKA = SourceInfo(
    kind="kafka",
    mapping_uuid="0b4e4a9e-6a43-5a7e-9f3e-4b7c8e1f2a3b",
    function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
    bootstrap_servers="b1:9092,b2:9092",
    event_source="SelfManagedKafka",
)
MSK = SourceInfo(
    kind="kafka",
    mapping_uuid=KAFKA.mapping_uuid,
    function_arn=KAFKA.function_arn,
    event_source_arn="arn:aws:kafka:us-east-1:123456789012:cluster/c/abc",
    bootstrap_servers="b1:9098",
    event_source="aws:kafka",
)


def kafka_record(offset: int, ms: int = 1_573_690_684_835) -> dict[str, Any]:
    return {
        "topic": "orders",
        "partition": 3,
        "offset": offset,
        "timestamp": ms,
        "timestampType": "CREATE_TIME",
        "key": "azE=",
        "value": "eyJhIjoxfQ==",
        "headers": [{"h": [1, 2]}],
    }


RECORDS = [kafka_record(41), kafka_record(42, 1_573_690_685_580)]


def test_kafka_record_for_sqs_and_sns_matches_aws_field_by_field() -> None:
    out = kafka_batch_record(RECORDS, FAILURE, MSK, payload=False, now=NOW)
    assert aws.shape(out) == aws.shape(aws.renamed(aws.KAFKA_SQS_SNS, "orders-3"))
    assert out["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert out["requestContext"]["approximateInvokeCount"] == 3
    assert out["responseContext"] == aws.KAFKA_SQS_SNS["responseContext"]
    assert out["timestamp"] == "2019-11-14T00:40:06.021Z"
    info = out["KafkaBatchInfo"]
    assert info["batchSize"] == 2
    assert info["eventSourceArn"] == MSK.event_source_arn
    assert info["recordsInfo"] == {
        "orders-3": {
            "firstRecordOffset": "41",
            "lastRecordOffset": "42",
            "firstRecordTimestamp": "2019-11-14T00:18:04.835Z",
            "lastRecordTimestamp": "2019-11-14T00:18:05.580Z",
        }
    }
    event = {
        "eventSource": "aws:kafka",
        "eventSourceArn": MSK.event_source_arn,
        "bootstrapServers": "b1:9098",
        "records": {"orders-3": RECORDS},
    }
    assert info["payloadSize"] == len(orjson.dumps(event))


def test_kafka_record_for_s3_carries_the_whole_event_as_a_json_string() -> None:
    out = kafka_batch_record(RECORDS, FAILURE, KAFKA, payload=True, now=NOW)
    expected = aws.self_managed(aws.renamed(aws.KAFKA_S3, "orders-3"))
    assert aws.shape(out) == aws.shape(expected)
    assert orjson.loads(out["payload"]) == {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "b1:9092,b2:9092",
        "records": {"orders-3": RECORDS},
    }


def test_kafka_topic_destination_gets_one_message_per_record_with_its_event() -> None:
    records = [{**r, "headers": []} for r in RECORDS]  # as in AWS's example
    messages = kafka_record_messages(records, FAILURE, MSK, now=NOW)
    assert [r["offset"] for r, _ in messages] == [41, 42]
    _, second = messages[1]
    assert aws.shape(second) == aws.shape(aws.renamed(aws.KAFKA_TOPIC, "orders-3"))
    assert second["KafkaBatchInfo"]["batchSize"] == 1
    assert second["KafkaBatchInfo"]["recordInfo"] == {
        "offset": "42",
        "timestamp": "2019-11-14T00:18:05.580Z",
    }
    assert second["payload"]["records"] == {"orders-3": [records[1]]}
    assert second["KafkaBatchInfo"]["payloadSize"] == len(orjson.dumps(second["payload"]))


def test_record_age_and_payload_size_conditions() -> None:
    aged = kafka_batch_record(
        RECORDS, Failure("RecordAgeExceeded", 0), KAFKA, payload=False, now=NOW
    )
    assert aged["requestContext"]["condition"] == "RecordAgeExceeded"
    assert aged["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    too_big = kafka_batch_record(
        RECORDS, Failure("MaximumPayloadSizeExceeded", 0), KAFKA, payload=False, now=NOW
    )
    assert too_big["responseContext"] is None


def test_kinesis_record_matches_aws_field_by_field() -> None:
    info = SourceInfo(
        kind="kinesis",
        mapping_uuid=KAFKA.mapping_uuid,
        function_arn=KAFKA.function_arn,
        event_source_arn="arn:aws:kinesis:us-east-2:123456789012:stream/mystream",
    )
    records = [
        {"kinesis": {"sequenceNumber": "495", "approximateArrivalTimestamp": 1573692004.835}},
        {"kinesis": {"sequenceNumber": "496", "approximateArrivalTimestamp": 1573692005.58}},
    ]
    out = stream_batch_record(
        records, FAILURE, info, "shardId-000000000001", payload=False, now=NOW
    )
    assert aws.shape(out) == aws.shape(aws.KINESIS_SQS_SNS)
    assert out["KinesisBatchInfo"] == {
        "shardId": "shardId-000000000001",
        "startSequenceNumber": "495",
        "endSequenceNumber": "496",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:40:04.835Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:40:05.580Z",
        "batchSize": 2,
        "streamArn": info.event_source_arn,
    }
    s3 = batch_record(FailedBatch(records, FAILURE, info, "shardId-000000000001"), payload=True)
    assert orjson.loads(s3["payload"]) == {"Records": records}


def test_dynamodb_record_names_its_batch_info() -> None:
    info = SourceInfo("dynamodb", KAFKA.mapping_uuid, KAFKA.function_arn, "arn:aws:dynamodb:x")
    records = [{"dynamodb": {"SequenceNumber": "8", "ApproximateCreationDateTime": 1573690399.0}}]
    out = stream_batch_record(records, FAILURE, info, "shardId-1", payload=False, now=NOW)
    assert out["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"] == "2019-11-14T00:13:19Z"


def test_s3_key_follows_aws_layout() -> None:
    key = s3_key("uuid-1", "orders-3", NOW, "5f0c9c1e-0000-4000-8000-000000000000")
    assert key == (
        "aws/lambda/uuid-1/orders-3/2019/11/14/2019-11-14T00.40.06-"
        "5f0c9c1e-0000-4000-8000-000000000000"
    )


@pytest.mark.parametrize(
    ("destination", "kind"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:dlq", "sqs"),
        ("arn:aws:sns:us-east-1:123456789012:failures", "sns"),
        ("arn:aws:s3:::my-bucket", "s3"),
        ("kafka://failed-records", "kafka"),
        ("kafka://", None),
        ("arn:aws:lambda:us-east-1:123456789012:function:f", None),
        ("arn:aws:s3:::bucket/prefix", None),
        ("https://sqs.us-east-1.amazonaws.com/123/q", None),
    ],
)
def test_destination_kinds(destination: str, kind: str | None) -> None:
    assert destination_kind(destination) == kind


def kafka_mapping(**extra: Any) -> dict[str, Any]:
    return {
        "Name": "k",
        "FunctionName": "f",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b:9092"]}},
        "Topics": ["orders"],
        "StartingPosition": "LATEST",
        **extra,
    }


def problems(mapping: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"mappings": [mapping]})
    return [str(p) for p in caught.value.problems]


def on_failure(destination: str) -> dict[str, Any]:
    return {"DestinationConfig": {"OnFailure": {"Destination": destination}}}


def test_sqs_mappings_refuse_an_on_failure_destination_naming_mapping_and_field() -> None:
    found = problems(
        {
            "Name": "orders",
            "FunctionName": "f",
            "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:orders",
            **on_failure("arn:aws:sqs:us-east-1:000000000000:dlq"),
        }
    )
    assert len(found) == 1
    assert found[0].startswith("mapping 'orders': DestinationConfig.OnFailure.Destination: ")
    assert "redrive policy" in found[0]


def test_kafka_destination_rules() -> None:
    assert (
        "cannot be the source topic" in problems(kafka_mapping(**on_failure("kafka://orders")))[0]
    )
    assert "is not an SQS queue" in problems(kafka_mapping(**on_failure("arn:aws:s3:::b/x")))[0]
    kinesis = {
        "Name": "s",
        "FunctionName": "f",
        "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
        "StartingPosition": "LATEST",
        **on_failure("kafka://dlt"),
    }
    assert "Kafka mappings only" in problems(kinesis)[0]
    for ok in ("kafka://dlt", "arn:aws:sns:us-east-1:1:t", "arn:aws:s3:::b"):
        parse_config({"mappings": [kafka_mapping(**on_failure(ok))]})


def test_daemon_runs_kafka_destinations() -> None:
    from service.daemon import unsupported

    config = parse_config({"mappings": [kafka_mapping(**on_failure("arn:aws:s3:::b"))]})
    assert unsupported(config) == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            {"errorMessage": "boom", "errorType": "ValueError", "requestId": "r", "stackTrace": []},
            "Unhandled",
        ),
        ({"errorMessage": "boom", "errorType": "ValueError"}, "Unhandled"),
        ("Task timed out after 3.00 seconds", "Unhandled"),
        ({"errorMessage": "boom", "errorType": "E", "orderId": 7}, None),  # a real return value
        ({"errorType": "E"}, None),
        ({"batchItemFailures": []}, None),
        (None, None),
        ("ok", None),
    ],
)
def test_function_error_read_from_an_emulator_body(body: Any, error: str | None) -> None:
    assert error_in_body(body) == error


def test_iso_timestamps_are_utc_with_milliseconds() -> None:
    from service.destinations.records import iso_ms

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso_ms(NOW))


# --- ARNs -----------------------------------------------------------------------------------


def test_destination_kind_lives_in_arns_and_is_re_exported() -> None:
    import service.arns
    import service.destinations

    assert service.destinations.destination_kind is service.arns.destination_kind
    assert service.destinations.KAFKA_PREFIX == service.arns.KAFKA_PREFIX == "kafka://"


def test_arn_parts_keep_the_colons_of_the_resource() -> None:
    consumer = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000"
    arn = parse_arn(consumer)
    assert arn == Arn(
        "aws", "kinesis", "us-east-1", "123456789012", "stream/s/consumer/c:1700000000"
    )
    assert str(arn) == consumer
    assert parse_arn("arn:aws:s3:::bucket") == Arn("aws", "s3", "", "", "bucket")
    for not_arn in ("arn:aws:sqs:us-east-1", "kafka://t", "urn:aws:sqs:r:a:q", "arn:aws::r:a:q"):
        assert parse_arn(not_arn) is None
    assert account_of("arn:aws:sqs:us-east-1:123456789012:q") == "123456789012"
    assert account_of("arn:aws:s3:::bucket") is None
    assert account_of(None) is None


@pytest.mark.parametrize(
    ("destination", "fifo"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:dlq.fifo", True),
        ("arn:aws:sns:us-east-1:123456789012:failures.fifo", True),
        ("arn:aws:sqs:us-east-1:123456789012:dlq", False),
        ("arn:aws:s3:::bucket.fifo", False),
        ("kafka://topic.fifo", False),
    ],
)
def test_fifo_destinations(destination: str, fifo: bool) -> None:
    assert is_fifo_destination(destination) is fifo


def test_kinesis_consumer_arns_name_their_stream() -> None:
    stream = "arn:aws:kinesis:us-east-1:123456789012:stream/s"
    assert kinesis_consumer_stream(f"{stream}/consumer/c:1700000000") == stream
    assert kinesis_consumer_stream(stream) is None
    assert kinesis_consumer_stream("arn:aws:dynamodb:us-east-1:1:table/t/stream/x") is None


# --- OnFailureSender: bounded attempts, or blocking -----------------------------------------


class Refusing:
    """A destination that refuses the first ``failures`` sends (None: every one)."""

    name = "arn:aws:sqs:us-east-1:123456789012:dlq"

    def __init__(self, failures: int | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.delivered: list[FailedBatch] = []

    async def open(self) -> None: ...

    async def send(self, batch: FailedBatch) -> None:
        self.calls += 1
        if self.failures is None or self.calls <= self.failures:
            raise ConnectionError("destination down")
        self.delivered.append(batch)

    async def close(self) -> None: ...


def sender(
    destination: Refusing, stopping: asyncio.Event | None = None, **options: Any
) -> tuple[OnFailureSender, Callable[..., float]]:
    metrics = Metrics()
    sender = OnFailureSender(
        destination,
        metrics.for_mapping("m", "kafka"),
        stopping or asyncio.Event(),
        Backoff(0.001, 0.002),
        **options,
    )

    def sample(name: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(
            name, {"mapping": "m", "source": "kafka", **labels}
        )
        return value or 0.0

    return sender, sample


BATCH = FailedBatch(RECORDS, FAILURE, KAFKA)


async def test_sender_gives_up_after_its_attempts_and_counts_each_refusal() -> None:
    destination = Refusing()
    send, sample = sender(destination, attempts=3)
    assert await send.send(BATCH) is False
    assert destination.calls == 3
    assert sample("esm_errors_total", kind="on_failure_destination") == 3
    assert sample("esm_on_failure_destination_delivered_events_total") == 0
    # dropping is the caller's count (with the records given up on without a destination)
    assert sample("esm_dropped_events_total") == 0


async def test_sender_delivers_after_refusals_within_its_attempts() -> None:
    destination = Refusing(failures=2)
    send, sample = sender(destination, attempts=3)
    assert await send.send(BATCH) is True
    assert destination.delivered == [BATCH]
    assert sample("esm_errors_total", kind="on_failure_destination") == 2
    assert sample("esm_on_failure_destination_delivered_events_total") == len(RECORDS)


async def test_a_blocking_sender_retries_past_its_attempts_until_delivered() -> None:
    destination = Refusing(failures=25)
    send, _ = sender(destination, attempts=1, block=True)
    assert await send.send(BATCH) is True
    assert destination.calls == 26


@pytest.mark.parametrize("block", [True, False])
async def test_a_stop_while_retrying_leaves_the_records_unacknowledged(block: bool) -> None:
    stopping = asyncio.Event()
    destination = Refusing()
    send, _ = sender(destination, stopping, attempts=1000, block=block)
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    with pytest.raises(DestinationUnavailable):
        await send.send(BATCH)
    assert 1 <= destination.calls < 1000


async def test_default_attempts_follow_the_retry_section() -> None:
    destination = Refusing()
    send, _ = sender(destination)
    assert await send.send(BATCH) is False
    assert destination.calls == RetryConfig().destination_attempts == 10
