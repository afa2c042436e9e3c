"""``esmd redrive``'s pieces that need no server: payloads carried by invocation records,
what a dry run says, and how a Kafka topic's invocation records are marked done."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka import TopicPartition

from service.config import parse_config
from service.ops.failures import Failed, KafkaFailures, open_failures
from service.ops.redrive import Originals, Unreadable, _describe

CONFIG = parse_config(
    {
        "functions": {"fn": {"python": "m:f"}},
        "mappings": [
            {
                "Name": "clicks",
                "SelfManagedEventSource": {
                    "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:1"]}
                },
                "Topics": ["clicks"],
                "StartingPosition": "TRIM_HORIZON",
                "FunctionName": "fn",
            }
        ],
    },
    "test",
)
MAPPING = CONFIG.mappings[0]
RECORD = {"topic": "clicks", "partition": 1, "offset": 7, "value": "e30="}


async def test_the_payload_an_invocation_record_carries() -> None:
    originals = Originals(MAPPING, CONFIG)
    originals._kafka = (["b:9092"], None)  # connected
    event = {"eventSource": "SelfManagedKafka", "records": {"clicks-1": [RECORD]}}
    for payload in (event, json.dumps(event)):  # Kafka topic destination; S3 (a string)
        assert await originals.records({"payload": payload}) == [[RECORD]]
    assert originals.event([RECORD]) == {
        "eventSource": "SelfManagedKafka",
        "bootstrapServers": "b:9092",
        "records": {"clicks-1": [RECORD]},
    }
    with pytest.raises(Unreadable, match="no KafkaBatchInfo"):
        await originals.records({"requestContext": {}})
    with pytest.raises(Unreadable, match="not JSON"):
        await originals.records({"_unreadable": "a message is not JSON"})


def test_describe() -> None:
    batch = {
        "requestContext": {"condition": "RecordAgeExceeded"},
        "KafkaBatchInfo": {
            "recordsInfo": {"clicks-1": {"firstRecordOffset": "3", "lastRecordOffset": "9"}}
        },
    }
    assert _describe(batch) == "Kafka clicks-1 offsets 3..9 (RecordAgeExceeded)"
    stream = {
        "requestContext": {"condition": "RetryAttemptsExhausted"},
        "KinesisBatchInfo": {
            "shardId": "s-0",
            "startSequenceNumber": "1",
            "endSequenceNumber": "5",
        },
    }
    assert _describe(stream) == "s-0 1..5 (RetryAttemptsExhausted)"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[int] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        (mark,) = offsets.values()
        self.commits.append(mark.offset)


async def test_a_kafka_topic_commits_only_the_removed_prefix() -> None:
    reader = KafkaFailures("kafka://clicks-failures", MAPPING, CONFIG)
    consumer = reader._consumer = FakeConsumer()
    tp = TopicPartition("clicks-failures", 0)
    reader._read = {0: [10, 11, 12]}
    failed = {o: Failed(f"p@{o}", {}, (tp, o)) for o in (10, 11, 12)}
    await reader.remove(failed[11])  # 10 not yet: nothing to commit
    assert consumer.commits == []
    await reader.remove(failed[10])
    assert consumer.commits == [12]  # past 10 and 11
    reader.keep(failed[12])
    assert 0 in reader._stopped  # the rest of the partition waits for the next run


def test_destinations_that_cannot_be_read() -> None:
    with pytest.raises(ValueError, match="SNS topic keeps nothing"):
        open_failures("arn:aws:sns:us-east-1:000000000000:t", MAPPING, CONFIG)
    with pytest.raises(ValueError, match="not an OnFailure destination"):
        open_failures("http://x", MAPPING, CONFIG)
