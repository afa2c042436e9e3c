"""Sample records for the operator tools, in the form the mapping's own lane codec decodes.

A sample is one raw source record: a JSON line typed by hand (see :meth:`Samples.parse` of
each kind for its shape), or one read from the real source without acknowledging it
(``read_source``). Each kind turns it into exactly what its poller hands its lanes (an
aiokafka ConsumerRecord, a converted SQS record, a converted stream item) and decides it
with the lane codec's own ``decode``: the same conversion and filter view as a running
mapping, no second copy.

Input shapes (one JSON object a line; a payload that is a JSON value other than a string
is sent as its JSON text; with ``base64`` a string payload is base64 of the raw bytes):

- Kafka: ``{"value": ..., "key"?, "headers"?: {name: text} , "topic"?, "partition"?,
  "offset"?, "timestamp"? (epoch ms)}``
- SQS: ``{"body": ..., "messageAttributes"?: {name: {"dataType", "stringValue"}},
  "attributes"?: {name: text}, "messageId"?}``
- Kinesis: ``{"data": ..., "partitionKey"?, "sequenceNumber"?}``
- DynamoDB Streams: a stream record as Lambda shows it:
  ``{"eventName", "dynamodb": {"Keys", "NewImage"?, "OldImage"?, ...}, "eventID"?}``
- Amazon MQ: a message as Lambda shows it, the payload as ``data``: ``{"data": ...,
  "redelivered"?, "basicProperties"? (RabbitMQ), "messageID"? and the like (ActiveMQ)}``;
  read from typed lines only (a queue cannot be read without consuming it)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import time
import uuid
from typing import Any, Protocol

import orjson

from service.config import EsmdConfig, MappingConfig
from service.filters import FilterCriteria
from service.sources.kinds import SourceKind

#: the shard a typed stream sample claims to come from
SAMPLE_SHARD = "shardId-000000000000"


class SampleError(ValueError):
    """A sample line that is not a record of the mapping's source; says what is missing."""


class Samples(Protocol):
    def parse(self, line: dict[str, Any], index: int) -> Any:
        """The raw record a JSON line describes (``index`` numbers it from 0)."""
        ...

    def label(self, raw: Any) -> str: ...

    def decide(self, raw: Any, criteria: FilterCriteria) -> bool:
        """True when the lane codec keeps the record under ``criteria``."""
        ...

    async def read_source(self, count: int) -> list[Any]:
        """Up to the last ``count`` records of the source, acknowledging nothing."""
        ...


def payload(value: Any, b64: bool, field: str) -> bytes | None:
    """A sample's payload as the source's bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        if not b64:
            return value.encode()
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise SampleError(f"{field} is not base64 (--base64)") from None
    return orjson.dumps(value)


def _require(line: dict[str, Any], field: str) -> Any:
    if field not in line:
        raise SampleError(f'needs "{field}"')
    return line[field]


# --- Kafka ----------------------------------------------------------------------------------


class KafkaSamples:
    def __init__(self, cfg: MappingConfig, esmd: EsmdConfig, b64: bool = False) -> None:
        self._cfg, self._esmd, self._b64 = cfg, esmd, b64
        self._topic = (cfg.Topics or ["topic"])[0]

    def parse(self, line: dict[str, Any], index: int) -> Any:
        from aiokafka.structs import ConsumerRecord

        value = payload(_require(line, "value"), self._b64, "value")
        key = payload(line.get("key"), self._b64, "key")
        headers = line.get("headers") or {}
        pairs = headers.items() if isinstance(headers, dict) else headers
        try:
            encoded = [(str(n), payload(v, False, "headers") or b"") for n, v in pairs]
        except (TypeError, ValueError):
            raise SampleError('"headers" must be {name: text} or [[name, text], ...]') from None
        return ConsumerRecord(
            topic=str(line.get("topic", self._topic)),
            partition=int(line.get("partition", 0)),
            offset=int(line.get("offset", index)),
            timestamp=int(line.get("timestamp", time.time() * 1000)),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=encoded,
        )

    def label(self, raw: Any) -> str:
        return f"{raw.topic}-{raw.partition}@{raw.offset}"

    def decide(self, raw: Any, criteria: FilterCriteria) -> bool:
        from service.sources.kafka import KafkaCodec, kafka_envelope

        codec = KafkaCodec(kafka_envelope(self._cfg, []), raw.topic, raw.partition)
        kept, _, _ = codec.decode([raw], criteria)
        return bool(kept)

    async def read_source(self, count: int) -> list[Any]:
        """Assign every partition and seek to ``end - count``: no group, no commit."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from service.sources.kafka_auth import kafka_connection

        servers, auth = await kafka_connection(self._cfg, self._esmd.aws)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"esmd-test-filter-{self._cfg.Name}",
            **auth.client_kwargs(),
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(servers, auth.client_kwargs(), self._topic)
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - count))
            out: list[Any] = []
            pending = {tp for tp in tps if ends[tp] > max(starts[tp], ends[tp] - count)}
            async with asyncio.timeout(30):
                while pending:
                    fetched = await consumer.getmany(*pending, timeout_ms=500)
                    for tp, raws in fetched.items():
                        out.extend(r for r in raws if r.offset < ends[tp])
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        out.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return out[-count:]


async def topic_partitions(servers: list[str], client: dict[str, Any], topic: str) -> list[int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **client)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [p["partition"] for t in described for p in t.get("partitions") or []]


# --- SQS ------------------------------------------------------------------------------------


def _api_attribute(name: str, value: Any) -> dict[str, Any]:
    """A message attribute in the SQS API's shape, from Lambda's (``dataType``,
    ``stringValue``, ``binaryValue`` in base64) or the API's own."""
    if not isinstance(value, dict):
        raise SampleError(f'messageAttributes["{name}"] must be an object')
    if "DataType" in value:
        return value
    out: dict[str, Any] = {"DataType": value.get("dataType", "String")}
    if "stringValue" in value:
        out["StringValue"] = value["stringValue"]
    if "binaryValue" in value:
        out["BinaryValue"] = payload(value["binaryValue"], True, f"{name}.binaryValue")
    return out


class SqsSamples:
    def __init__(self, cfg: MappingConfig, esmd: EsmdConfig, b64: bool = False) -> None:
        from service.sources.sqs import queue_parts

        self._cfg, self._esmd, self._b64 = cfg, esmd, b64
        self._arn = cfg.EventSourceArn or ""
        self._region, self._account, self._queue = queue_parts(self._arn)

    def parse(self, line: dict[str, Any], index: int) -> Any:
        from service.sources.sqs import lambda_record

        body = (payload(_require(line, "body"), self._b64, "body") or b"").decode(
            "utf-8", "replace"
        )
        attributes = line.get("messageAttributes") or {}
        if not isinstance(attributes, dict):
            raise SampleError('"messageAttributes" must be an object')
        message = {
            "MessageId": str(line.get("messageId", uuid.uuid4())),
            "ReceiptHandle": "esmd-test-filter",
            "Body": body,
            "Attributes": {k: str(v) for k, v in (line.get("attributes") or {}).items()},
            "MessageAttributes": {n: _api_attribute(n, v) for n, v in attributes.items()},
            "MD5OfBody": hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        }
        return lambda_record(message, self._arn, self._region)

    def label(self, raw: Any) -> str:
        return str(raw["messageId"])

    def decide(self, raw: Any, criteria: FilterCriteria) -> bool:
        from service.sources.sqs import SqsCodec

        kept, _, _ = SqsCodec().decode([raw], criteria)
        return bool(kept)

    async def read_source(self, count: int) -> list[Any]:
        """Receive with VisibilityTimeout 0 and delete nothing: the messages stay visible,
        but each receive raises their ApproximateReceiveCount (a redrive policy counts it)."""
        from service.aws import aws_client
        from service.sources.sqs import lambda_record

        seen: dict[str, Any] = {}
        async with aws_client(self._esmd.aws, "sqs") as sqs:
            url = (
                await sqs.get_queue_url(QueueName=self._queue, QueueOwnerAWSAccountId=self._account)
            )["QueueUrl"]
            quiet = 0
            while len(seen) < count and quiet < 3:
                resp = await sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(10, count - len(seen)),
                    VisibilityTimeout=0,
                    WaitTimeSeconds=0,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
                fresh = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
                quiet = 0 if fresh else quiet + 1
                for m in fresh:
                    seen[m["MessageId"]] = lambda_record(m, self._arn, self._region)
        return list(seen.values())[:count]


# --- Kinesis and DynamoDB Streams -----------------------------------------------------------


def _boto_value(value: dict[str, Any]) -> dict[str, Any]:
    """An attribute value as botocore returns it (B and BS as bytes), from its wire form:
    the inverse of :func:`service.sources.dynamodb.wire_value`."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    if kind == "M":
        return {"M": {k: _boto_value(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_boto_value(v) for v in inner]}
    return value


class StreamSamples:
    def __init__(self, cfg: MappingConfig, esmd: EsmdConfig, b64: bool = False) -> None:
        from service.sources.dynamodb import DynamoDBCodec
        from service.sources.kinesis import KinesisCodec
        from service.sources.shards import ShardLaneCodec

        self._cfg, self._esmd, self._b64 = cfg, esmd, b64
        self._arn = cfg.EventSourceArn or ""
        self._kinesis = cfg.source_kind is SourceKind.KINESIS
        self.codec = KinesisCodec(self._arn, "") if self._kinesis else DynamoDBCodec(self._arn)
        self._lane_codec = ShardLaneCodec(self.codec)

    def parse(self, line: dict[str, Any], index: int) -> Any:
        shard = str(line.get("shardId", SAMPLE_SHARD))
        try:
            raw = self._kinesis_raw(line, index) if self._kinesis else self._ddb_raw(line, index)
            record, size, _, _ = self.codec.convert(raw, shard)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            if isinstance(exc, SampleError):
                raise
            raise SampleError(f"not a {self._kind} record: {exc!r}") from None
        return (record, size, index)

    @property
    def _kind(self) -> str:
        return "Kinesis" if self._kinesis else "DynamoDB Streams"

    def _kinesis_raw(self, line: dict[str, Any], index: int) -> dict[str, Any]:
        return {
            "SequenceNumber": str(line.get("sequenceNumber", index)),
            "PartitionKey": str(line.get("partitionKey", "sample")),
            "Data": payload(_require(line, "data"), self._b64, "data") or b"",
            "ApproximateArrivalTimestamp": dt.datetime.now(dt.UTC),
        }

    def _ddb_raw(self, line: dict[str, Any], index: int) -> dict[str, Any]:
        src = dict(_require(line, "dynamodb"))
        src.setdefault("SequenceNumber", str(index))
        for image in ("Keys", "NewImage", "OldImage"):
            if image in src:
                src[image] = {k: _boto_value(v) for k, v in src[image].items()}
        created = src.get("ApproximateCreationDateTime")
        if created is not None:
            src["ApproximateCreationDateTime"] = dt.datetime.fromtimestamp(float(created), dt.UTC)
        return {
            **line,
            "eventID": str(line.get("eventID", index)),
            "eventName": _require(line, "eventName"),
            "dynamodb": src,
        }

    def label(self, raw: Any) -> str:
        return str(raw[0]["eventID"])

    def decide(self, raw: Any, criteria: FilterCriteria) -> bool:
        kept, _, _ = self._lane_codec.decode([raw], criteria)
        return bool(kept)

    async def read_source(self, count: int) -> list[Any]:
        """Every shard from TRIM_HORIZON with plain iterators (no lease, no checkpoint);
        the last ``count`` records by arrival."""
        from service.aws import aws_client
        from service.sources.dynamodb import DynamoDBStreamsApi
        from service.sources.kinesis import KinesisApi

        service = "kinesis" if self._kinesis else "dynamodbstreams"
        items: list[tuple[Any, ...]] = []
        async with aws_client(self._esmd.aws, service) as client:
            api = (
                KinesisApi(client, self._arn, None)
                if self._kinesis
                else DynamoDBStreamsApi(client, self._arn)
            )
            for shard in await api.list_shards():
                raws = await _read_shard(api, shard.shard_id)
                for raw in raws:
                    record, size, _, _ = self.codec.convert(raw, shard.shard_id)
                    items.append((record, size, len(items)))
        return items[-count:]


async def _read_shard(api: Any, shard_id: str) -> list[dict[str, Any]]:
    """A shard's records from TRIM_HORIZON until a read comes back empty."""
    iterator: str | None = await api.iterator(shard_id, "TRIM_HORIZON")
    out: list[dict[str, Any]] = []
    while iterator:
        raws, iterator = await api.get_records(iterator, api.max_limit)
        if not raws:
            break
        out.extend(raws)
    return out


# --- Amazon MQ ------------------------------------------------------------------------------


class _AsTyped:
    """An MQ engine for samples: a typed line already is Lambda's record."""

    endpoints: tuple[str, ...] = ()

    def consumer(self, endpoint: str) -> Any:
        raise SampleError("samples are not consumed")

    def record(self, delivery: dict[str, Any]) -> dict[str, Any]:
        return delivery

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"messages": records}


class MqSamples:
    def __init__(self, cfg: MappingConfig, esmd: EsmdConfig, b64: bool = False) -> None:
        from service.sources.mq import MqCodec

        self._b64 = b64
        self._codec = MqCodec(_AsTyped(), {})

    def parse(self, line: dict[str, Any], index: int) -> Any:
        data = payload(_require(line, "data"), self._b64, "data") or b""
        record = {**line, "redelivered": bool(line.get("redelivered", False))}
        record["data"] = base64.b64encode(data).decode()
        return record

    def label(self, raw: Any) -> str:
        props = raw.get("basicProperties") or {}
        return str(raw.get("messageID") or props.get("messageId") or raw["data"][:24])

    def decide(self, raw: Any, criteria: FilterCriteria) -> bool:
        from service.sources.mq import Received

        kept, _, _ = self._codec.decode([Received(raw, None)], criteria)  # type: ignore[arg-type]
        return bool(kept)

    async def read_source(self, count: int) -> list[Any]:
        raise SampleError(
            "an Amazon MQ queue cannot be read without consuming it: give sample lines"
        )


def samples_for(cfg: MappingConfig, esmd: EsmdConfig, b64: bool = False) -> Samples:
    kind = cfg.source_kind
    if kind.is_kafka:
        return KafkaSamples(cfg, esmd, b64)
    if kind is SourceKind.SQS:
        return SqsSamples(cfg, esmd, b64)
    if kind.is_stream:
        return StreamSamples(cfg, esmd, b64)
    if kind is SourceKind.MQ:
        return MqSamples(cfg, esmd, b64)
    raise SampleError(f"{kind.value} mappings have no event filtering")


__all__ = ["SampleError", "Samples", "samples_for"]
