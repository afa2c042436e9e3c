"""The sources chaos runs use, each on a real server: Kafka, SQS (ElasticMQ), Kinesis (moto)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

from service.devtools.given_up import kafka_topic_ids, sqs_queue_ids
from tests.chaos.harness import KEEP, Position, payload
from tests.integration.kafka_helpers import create_topic, offsets


class KafkaSource:
    """A topic of ``partitions``; with ``destination`` an OnFailure destination topic and
    MaximumRetryAttempts 1. Static membership (``kafka.instance_id``): a restarted daemon
    gets its partitions back at once instead of after the dead member's session timeout."""

    kind = "kafka"
    redelivery = False

    def __init__(
        self, bootstrap: str, name: str, partitions: int = 4, destination: bool = False
    ) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, name, f"{name}-group"
        self.partitions = partitions
        self.destination = f"{name}-failures" if destination else None
        self._producer: AIOKafkaProducer | None = None

    def config(self) -> dict[str, Any]:
        return {"kafka": {"instance_id": self.topic, "session_timeout_seconds": 30}}

    def mapping(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [self.bootstrap]}},
            "Topics": [self.topic],
            "StartingPosition": "TRIM_HORIZON",
            "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": self.group},
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 0.2,
            "FilterCriteria": {"Filters": [{"Pattern": '{"value": ' + KEEP + "}"}]},
        }
        if self.destination:
            mapping["MaximumRetryAttempts"] = 1
            destination = {"Destination": f"kafka://{self.destination}"}
            mapping["DestinationConfig"] = {"OnFailure": destination}
        return mapping

    async def prepare(self) -> None:
        await create_topic(self.bootstrap, self.topic, self.partitions)
        if self.destination:
            await create_topic(self.bootstrap, self.destination, 1)

    async def produce(self, ids: list[int]) -> dict[int, Position]:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, linger_ms=5, acks="all"
            )
            await self._producer.start()
        send = self._producer.send
        sent = [await send(self.topic, payload(i), partition=i % self.partitions) for i in ids]
        done = [await f for f in sent]
        return {i: (str(m.partition), m.offset) for i, m in zip(ids, done, strict=True)}

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def acknowledged(self) -> dict[str, int]:
        committed, _ = await offsets(self.bootstrap, self.topic, self.group, self.partitions)
        return {str(p): o for p, o in committed.items()}

    async def caught_up(self) -> bool:
        committed, ends = await offsets(self.bootstrap, self.topic, self.group, self.partitions)
        # >=, not ==: a commit past the end is a bug that the loss check then names
        return all(committed[p] >= end for p, end in ends.items())

    async def given_up(self) -> list[int]:
        if self.destination is None:
            return []
        return await kafka_topic_ids(self.bootstrap, self.destination)

    def in_flight(self) -> int:
        return 0


@contextlib.asynccontextmanager
async def aws(service: str, endpoint: str) -> Any:
    async with get_session().create_client(
        service,
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ) as client:
        yield client


class SqsSource:
    """A queue with a 3 s visibility timeout (messages held by a killed daemon come back
    soon) and a DLQ after 10 receives; MaximumConcurrency 10 with batches of 10 bounds what
    the daemon holds unacknowledged (service/sources/sqs.py: 2 x 10 x 10 = 200 messages)."""

    kind = "sqs"
    redelivery = True

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint, self.name = endpoint, name
        self.url = self.dlq = ""

    def config(self) -> dict[str, Any]:
        return {"aws": {"region": "us-east-1", "endpoints": {"sqs": self.endpoint}}}

    def mapping(self) -> dict[str, Any]:
        return {
            "EventSourceArn": f"arn:aws:sqs:us-east-1:000000000000:{self.name}",
            "BatchSize": 10,
            "ScalingConfig": {"MaximumConcurrency": 10},
            "FilterCriteria": {"Filters": [{"Pattern": '{"body": ' + KEEP + "}"}]},
        }

    async def prepare(self) -> None:
        async with aws("sqs", self.endpoint) as sqs:
            self.dlq = (await sqs.create_queue(QueueName=f"{self.name}-dlq"))["QueueUrl"]
            target = f"arn:aws:sqs:us-east-1:000000000000:{self.name}-dlq"
            redrive = f'{{"deadLetterTargetArn": "{target}", "maxReceiveCount": "10"}}'
            attributes = {"VisibilityTimeout": "3", "RedrivePolicy": redrive}
            created = await sqs.create_queue(QueueName=self.name, Attributes=attributes)
            self.url = created["QueueUrl"]

    async def produce(self, ids: list[int]) -> dict[int, Position]:
        async with aws("sqs", self.endpoint) as sqs:
            for start in range(0, len(ids), 10):
                chunk = ids[start : start + 10]
                entries = [{"Id": str(i), "MessageBody": payload(i).decode()} for i in chunk]
                await sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
        return {}

    async def acknowledged(self) -> None:
        return None

    async def caught_up(self) -> bool:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        async with aws("sqs", self.endpoint) as sqs:
            reply = await sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)
        return all(reply["Attributes"][n] == "0" for n in names)

    async def given_up(self) -> list[int]:
        async with aws("sqs", self.endpoint) as sqs:
            return await sqs_queue_ids(sqs, self.dlq)

    def in_flight(self) -> int:
        return 200

    async def close(self) -> None:
        pass


class KinesisSource:
    """A stream of 2 shards on moto; checkpoints in the daemon's sqlite store."""

    kind = "kinesis"
    redelivery = False

    def __init__(self, endpoint: str, name: str, state: Path) -> None:
        self.endpoint, self.name, self.state = endpoint, name, state
        self.arn = ""

    def config(self) -> dict[str, Any]:
        return {
            "aws": {"region": "us-east-1", "endpoint_url": self.endpoint},
            "checkpoints": {"store": "sqlite", "path": str(self.state)},
        }

    def mapping(self) -> dict[str, Any]:
        return {
            "EventSourceArn": self.arn,
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 10,
            "FilterCriteria": {"Filters": [{"Pattern": '{"data": ' + KEEP + "}"}]},
        }

    async def prepare(self) -> None:
        async with aws("kinesis", self.endpoint) as kinesis:
            await kinesis.create_stream(StreamName=self.name, ShardCount=2)
            waiter = kinesis.get_waiter("stream_exists")
            await waiter.wait(StreamName=self.name, WaiterConfig={"Delay": 0.2})
            summary = await kinesis.describe_stream_summary(StreamName=self.name)
            self.arn = summary["StreamDescriptionSummary"]["StreamARN"]

    async def produce(self, ids: list[int]) -> dict[int, Position]:
        positions: dict[int, Position] = {}
        async with aws("kinesis", self.endpoint) as kinesis:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                entries = [{"Data": payload(i), "PartitionKey": f"k{i % 20}"} for i in chunk]
                reply = await kinesis.put_records(StreamName=self.name, Records=entries)
                for i, r in zip(chunk, reply["Records"], strict=True):
                    positions[i] = (r["ShardId"], int(r["SequenceNumber"]))
        return positions

    def _checkpoints(self) -> dict[str, str]:
        if not self.state.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{self.state}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT shard_id, checkpoint FROM shard_checkpoints").fetchall()
        return {shard: checkpoint for shard, checkpoint in rows}

    async def acknowledged(self) -> dict[str, int]:
        """The record after each shard's checkpoint (the last sequence number done)."""
        return {
            shard: int(checkpoint) + 1
            for shard, checkpoint in self._checkpoints().items()
            if checkpoint[:1].isdigit()
        }

    async def caught_up(self) -> bool:
        checkpoints = self._checkpoints()
        if len(checkpoints) < 2:
            return False
        async with aws("kinesis", self.endpoint) as kinesis:
            for shard, checkpoint in checkpoints.items():
                if not checkpoint[:1].isdigit():
                    return False
                iterator = await kinesis.get_shard_iterator(
                    StreamName=self.name,
                    ShardId=shard,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    StartingSequenceNumber=checkpoint,
                )
                after = await kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=1)
                if after["Records"]:
                    return False
        return True

    async def given_up(self) -> list[int]:
        return []

    def in_flight(self) -> int:
        return 0

    async def close(self) -> None:
        pass
