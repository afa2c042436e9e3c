"""Reading AWS's invocation records back from an OnFailure destination, for ``esmd redrive``.

One reader per destination kind, each yielding every invocation record once per run and
removing one only when told (after its records were delivered):

- SQS queue: ReceiveMessage with a visibility timeout (the records being worked on are
  hidden from other readers); ``remove`` deletes the message; the ones not removed are made
  visible again when the reader closes, so a rerun sees them at once.
- S3 bucket: the objects under ``aws/lambda/<mapping UUID>/``; ``remove`` deletes the object.
- Kafka topic (``kafka://<topic>``, on the source's cluster): read from the committed offsets
  of the group ``esmd-redrive-<mapping UUID>`` up to the end the topic had at the start;
  ``remove`` commits past a record once every record before it in its partition was removed
  (a topic's records cannot be deleted: the group's offset is the mark). A record that
  stays stops its partition for the run: what follows it waits for the next run, which
  would otherwise deliver it a second time.

SNS destinations cannot be read back (a topic keeps nothing): redrive from the queue or
whatever subscribes to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from service.arns import KAFKA_PREFIX, destination_kind, require_arn
from service.aws import aws_client
from service.config import EsmdConfig, MappingConfig

#: seconds an SQS invocation record stays hidden while a run works on it
SQS_VISIBILITY = 300


@dataclass
class Failed:
    """One invocation record and where it is in its destination."""

    id: str  # unique in the destination: a MessageId, an S3 key, topic-partition@offset
    record: dict[str, Any]
    handle: Any = field(default=None, repr=False)


class FailureReader(Protocol):
    def read(self) -> AsyncIterator[Failed]: ...

    async def remove(self, failed: Failed) -> None: ...

    def keep(self, failed: Failed) -> None:
        """It stays in the destination (failed again, or unreadable)."""
        ...

    async def close(self) -> None: ...


def _loads(data: bytes | str, where: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        return {"_unreadable": f"{where} is not an invocation record (not a JSON object)"}
    return value


class SqsFailures:
    def __init__(self, arn: str, esmd: EsmdConfig) -> None:
        parts = require_arn(arn)
        self._account, self._queue, self._region = parts.account, parts.resource, parts.region
        self._esmd = esmd
        self._stack = AsyncExitStack()
        self._sqs: Any = None
        self._url = ""
        self._held: dict[str, str] = {}  # MessageId -> receipt handle, received, not removed

    async def _client(self) -> Any:
        if self._sqs is None:
            client = aws_client(self._esmd.aws, "sqs", region=self._region)
            self._sqs = await self._stack.enter_async_context(client)
            resp = await self._sqs.get_queue_url(
                QueueName=self._queue, QueueOwnerAWSAccountId=self._account
            )
            self._url = resp["QueueUrl"]
        return self._sqs

    async def read(self) -> AsyncIterator[Failed]:
        sqs = await self._client()
        while True:
            resp = await sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=SQS_VISIBILITY,
                WaitTimeSeconds=1,
            )
            fresh = [m for m in resp.get("Messages", []) if m["MessageId"] not in self._held]
            if not fresh:
                return
            for m in fresh:
                self._held[m["MessageId"]] = m["ReceiptHandle"]
                yield Failed(m["MessageId"], _loads(m["Body"], "a message"), m["ReceiptHandle"])

    def keep(self, failed: Failed) -> None:
        """Made visible again when the reader closes."""

    async def remove(self, failed: Failed) -> None:
        sqs = await self._client()
        await sqs.delete_message(QueueUrl=self._url, ReceiptHandle=failed.handle)
        self._held.pop(failed.id, None)

    async def close(self) -> None:
        """Make what was read and not removed visible again."""
        try:
            if self._held and self._sqs is not None:
                handles = list(self._held.values())
                for i in range(0, len(handles), 10):
                    entries = [
                        {"Id": str(n), "ReceiptHandle": h, "VisibilityTimeout": 0}
                        for n, h in enumerate(handles[i : i + 10])
                    ]
                    await self._sqs.change_message_visibility_batch(
                        QueueUrl=self._url, Entries=entries
                    )
        finally:
            await self._stack.aclose()


class S3Failures:
    def __init__(self, arn: str, cfg: MappingConfig, esmd: EsmdConfig) -> None:
        self._bucket = arn.split(":::", 1)[1]
        self._prefix = f"aws/lambda/{cfg.uuid}/"
        self._esmd = esmd
        self._stack = AsyncExitStack()
        self._s3: Any = None

    async def read(self) -> AsyncIterator[Failed]:
        self._s3 = s3 = await self._stack.enter_async_context(aws_client(self._esmd.aws, "s3"))
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": self._prefix}
        keys: list[str] = []
        while True:  # the listing first: objects removed meanwhile do not shift its pages
            page = await s3.list_objects_v2(**kwargs)
            keys.extend(o["Key"] for o in page.get("Contents", []))
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        for key in keys:
            obj = await s3.get_object(Bucket=self._bucket, Key=key)
            async with obj["Body"] as body:
                data = await body.read()
            yield Failed(key, _loads(data, f"s3://{self._bucket}/{key}"), key)

    def keep(self, failed: Failed) -> None:
        """The object stays."""

    async def remove(self, failed: Failed) -> None:
        await self._s3.delete_object(Bucket=self._bucket, Key=failed.handle)

    async def close(self) -> None:
        await self._stack.aclose()


class KafkaFailures:
    def __init__(self, destination: str, cfg: MappingConfig, esmd: EsmdConfig) -> None:
        self._topic = destination.removeprefix(KAFKA_PREFIX)
        self._cfg, self._esmd = cfg, esmd
        self._consumer: Any = None
        #: per partition: offsets read in order, and those removed
        self._read: dict[int, list[int]] = {}
        self._removed: dict[int, set[int]] = {}
        #: partitions where a record stays: the group's offset cannot pass it, so what
        #: follows is left for the next run (redriven now, a rerun would deliver it again)
        self._stopped: set[int] = set()

    async def read(self) -> AsyncIterator[Failed]:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from service.ops.samples import topic_partitions
        from service.sources.kafka_auth import kafka_connection

        servers, auth = await kafka_connection(self._cfg, self._esmd.aws)
        partitions = await topic_partitions(servers, auth.client_kwargs(), self._topic)
        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=f"esmd-redrive-{self._cfg.uuid}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **auth.client_kwargs(),
        )
        await consumer.start()
        tps = [TopicPartition(self._topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, messages in fetched.items():
                for m in messages:
                    if m.offset >= ends[tp] or tp.partition in self._stopped:
                        continue
                    self._read.setdefault(tp.partition, []).append(m.offset)
                    where = f"{self._topic}-{tp.partition}@{m.offset}"
                    yield Failed(where, _loads(m.value, where), (tp, m.offset))
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}

    def keep(self, failed: Failed) -> None:
        tp, _ = failed.handle
        self._stopped.add(tp.partition)

    async def remove(self, failed: Failed) -> None:
        from aiokafka.structs import OffsetAndMetadata

        tp, offset = failed.handle
        removed = self._removed.setdefault(tp.partition, set())
        removed.add(offset)
        upto = None
        for o in self._read.get(tp.partition, []):  # the contiguous removed prefix
            if o not in removed:
                break
            upto = o
        if upto is not None:
            await self._consumer.commit({tp: OffsetAndMetadata(upto + 1, "")})

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


def open_failures(destination: str, cfg: MappingConfig, esmd: EsmdConfig) -> FailureReader:
    """The reader of an OnFailure destination; ValueError for one that cannot be read."""
    kind = destination_kind(destination)
    if kind == "sqs":
        return SqsFailures(destination, esmd)
    if kind == "s3":
        return S3Failures(destination, cfg, esmd)
    if kind == "kafka":
        if not cfg.source_kind.is_kafka:
            raise ValueError("a Kafka topic holds failures of Kafka mappings only")
        return KafkaFailures(destination, cfg, esmd)
    if kind == "sns":
        raise ValueError("an SNS topic keeps nothing to read: redrive from what subscribes to it")
    raise ValueError(f"not an OnFailure destination: {destination!r}")
