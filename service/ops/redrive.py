"""``esmd redrive``: deliver again the records an OnFailure destination holds.

For each invocation record (:mod:`service.ops.failures`) it finds the records it points to:

- the ``payload`` the record carries (S3 destinations, Kafka topic destinations);
- else Kafka: ``KafkaBatchInfo.recordsInfo``'s offset ranges, read again from the source
  cluster by assign + seek (no group, nothing committed) and put through the mapping's own
  lane codec and filters (a range may hold records the mapping filtered out);
- else Kinesis ``KinesisBatchInfo`` / DynamoDB Streams ``DDBStreamBatchInfo``: the shard from
  ``startSequenceNumber`` (GetShardIterator AT_SEQUENCE_NUMBER) to ``endSequenceNumber``,
  converted and filtered the same way;

then invokes the mapping's target with Lambda's event for them through the one Invoker (the
mapping's partial batch responses and bisection apply; retries: ``--retries``, record age:
none), and removes the invocation record only once every record was delivered. Records
that fail again stay in the destination. Each invocation record is handled once per run;
an interrupted run leaves the unfinished ones in place, so rerunning is safe (a record
delivered just before the interruption may be delivered once more: at-least-once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from service.batching import Batch
from service.config import EsmdConfig, MappingConfig
from service.destinations.records import Failure
from service.invoke import Invoker
from service.mapping import Mapping
from service.metrics import Metrics
from service.ops.failures import Failed, FailureReader, open_failures
from service.targets import Target, make_target

Records = list[dict[str, Any]]


class Unreadable(Exception):
    """An invocation record whose records cannot be found; the message says why."""


@dataclass
class Summary:
    read: int = 0
    redriven: int = 0
    records: int = 0
    failed: int = 0
    unreadable: int = 0

    def line(self, dry_run: bool) -> str:
        if dry_run:
            return (
                f"dry run: {self.read} invocation record(s), {self.records} record(s) would be "
                f"redriven, {self.unreadable} unreadable; nothing invoked or removed"
            )
        return (
            f"redrive: {self.read} invocation record(s): {self.redriven} redriven "
            f"({self.records} records) and removed, {self.failed} failed again (kept), "
            f"{self.unreadable} unreadable (kept)"
        )


@dataclass
class Redrive:
    cfg: MappingConfig
    esmd: EsmdConfig
    destination: str
    dry_run: bool = False
    limit: int | None = None
    retries: int = 0
    out: TextIO | None = None  # per invocation record: what was done
    progress: Callable[[Summary], None] = lambda summary: None

    def __post_init__(self) -> None:
        self._fetch = Originals(self.cfg, self.esmd)
        self._invoker: Invoker | None = None
        self._target: Target | None = None
        self._gave_up: list[Failure] = []

    async def run(self) -> Summary:
        cfg = self.cfg
        if not (cfg.source_kind.is_kafka or cfg.source_kind.is_stream):
            raise ValueError(f"{cfg.source_kind.value} mappings have no OnFailure destination")
        reader = open_failures(self.destination, cfg, self.esmd)
        summary = Summary()
        seen: set[str] = set()
        try:
            async for failed in reader.read():
                if failed.id in seen:
                    continue
                seen.add(failed.id)
                summary.read += 1
                await self._one(failed, reader, summary)
                self.progress(summary)
                if self.limit is not None and summary.read >= self.limit:
                    break
        finally:
            await reader.close()
            await self._fetch.close()
            if self._target is not None:
                await self._target.close()
        return summary

    async def _one(self, failed: Failed, reader: FailureReader, summary: Summary) -> None:
        try:
            groups = await self._fetch.records(failed.record)
        except Unreadable as exc:
            summary.unreadable += 1
            reader.keep(failed)
            self._say(f"{failed.id}: unreadable, kept: {exc}")
            return
        count = sum(len(g) for g in groups)
        if self.dry_run:
            summary.records += count
            self._say(f"{failed.id}: would redrive {count} record(s): {_describe(failed.record)}")
            return
        for records in groups:
            if records and not await self._deliver(records):
                reader.keep(failed)
                summary.failed += 1
                why = (self._gave_up[-1].error_message or "")[:160]
                self._say(f"{failed.id}: failed again, kept: {why}")
                return
        await reader.remove(failed)
        summary.redriven += 1
        summary.records += count
        self._say(f"{failed.id}: redriven {count} record(s), removed")

    async def _deliver(self, records: Records) -> bool:
        """One invocation through the mapping's Invoker; True when nothing was given up."""
        invoker = self._make_invoker()
        event = self._fetch.event(records)
        size = len(orjson.dumps(event))
        batch = Batch(records, 0, len(records) - 1, size, "size", positions=[])
        given_up = len(self._gave_up)
        await invoker.process(batch)
        return len(self._gave_up) == given_up

    def _make_invoker(self) -> Invoker:
        if self._invoker is None:
            cfg, esmd = self.cfg, self.esmd
            mapping = Mapping(cfg, esmd, Metrics())
            self._target = make_target(
                cfg.FunctionName,
                esmd.function_for(cfg),
                region=esmd.aws.region,
                endpoint_url=esmd.aws.endpoint_for("lambda"),
                function_arn=esmd.function_arn(cfg),
            )
            policy = dataclasses.replace(
                mapping.error_policy(),
                give_up=self._give_up,
                max_retries=self.retries,
                max_record_age=None,
                oversize="give_up",  # a record over 6 MB stays in the destination, not skipped
            )
            self._invoker = Invoker(
                self._target,
                self._fetch.event,
                mapping.metrics,
                esmd.retry,
                policy,
                asyncio.Event(),
            )
        return self._invoker

    async def _give_up(
        self, records: Records, failure: Failure, shard_id: str | None = None
    ) -> None:
        self._gave_up.append(failure)

    def _say(self, text: str) -> None:
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()


def _describe(record: dict[str, Any]) -> str:
    condition = record.get("requestContext", {}).get("condition", "?")
    if "KafkaBatchInfo" in record:
        info = record["KafkaBatchInfo"]
        ranges = info.get("recordsInfo") or {}
        if "recordInfo" in info:
            where = f"offset {info['recordInfo'].get('offset')}"
        else:
            where = ", ".join(
                f"{tp} offsets {r.get('firstRecordOffset')}..{r.get('lastRecordOffset')}"
                for tp, r in ranges.items()
            )
        return f"Kafka {where} ({condition})"
    for field in ("KinesisBatchInfo", "DDBStreamBatchInfo"):
        if field in record:
            info = record[field]
            return (
                f"{info.get('shardId')} {info.get('startSequenceNumber')}.."
                f"{info.get('endSequenceNumber')} ({condition})"
            )
    return f"({condition})"


class Originals:
    """The records an invocation record points to, grouped by invocation (one group per
    Kafka partition; one per stream batch), as Lambda records."""

    def __init__(self, cfg: MappingConfig, esmd: EsmdConfig) -> None:
        self._cfg, self._esmd = cfg, esmd
        self._kafka: tuple[list[str], Any] | None = None
        self._stream_client: Any = None
        self._stack: Any = None

    async def records(self, record: dict[str, Any]) -> list[Records]:
        if "_unreadable" in record:
            raise Unreadable(record["_unreadable"])
        if self._cfg.source_kind.is_kafka and self._kafka is None:
            from service.sources.kafka_auth import kafka_connection

            # the brokers (an MSK cluster's are looked up) name the event's bootstrapServers
            self._kafka = await kafka_connection(self._cfg, self._esmd.aws)
        if "payload" in record:
            return self._from_payload(record["payload"])
        if "KafkaBatchInfo" in record:
            return await self._from_kafka(record["KafkaBatchInfo"])
        for field in ("KinesisBatchInfo", "DDBStreamBatchInfo"):
            if field in record:
                return [await self._from_stream(record[field])]
        raise Unreadable("no KafkaBatchInfo, KinesisBatchInfo, DDBStreamBatchInfo or payload")

    def event(self, records: Records) -> dict[str, Any]:
        """Lambda's event for records of one invocation."""
        if not self._cfg.source_kind.is_kafka:
            return {"Records": records}
        from service.sources.kafka import kafka_envelope

        servers = self._kafka[0] if self._kafka else []
        grouped: dict[str, Records] = {}
        for r in records:
            grouped.setdefault(f"{r['topic']}-{r['partition']}", []).append(r)
        return {**kafka_envelope(self._cfg, servers), "records": grouped}

    def _from_payload(self, payload: Any) -> list[Records]:
        event = orjson.loads(payload) if isinstance(payload, str) else payload
        if not isinstance(event, dict):
            raise Unreadable("its payload is not an event")
        if "records" in event:  # Kafka: one group per topic-partition
            return [list(rs) for rs in event["records"].values()]
        return [list(event.get("Records") or [])]

    async def _from_kafka(self, info: dict[str, Any]) -> list[Records]:
        ranges = info.get("recordsInfo")
        if not isinstance(ranges, dict) or not ranges:
            raise Unreadable("KafkaBatchInfo has no recordsInfo and there is no payload")
        groups = []
        for key, r in ranges.items():
            topic, _, partition = key.rpartition("-")
            first, last = int(r["firstRecordOffset"]), int(r["lastRecordOffset"])
            groups.append(await self._kafka_range(topic, int(partition), first, last))
        return groups

    async def _kafka_range(self, topic: str, partition: int, first: int, last: int) -> Records:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from service.sources.kafka import KafkaCodec, kafka_envelope

        assert self._kafka is not None, "records() connects first"
        servers, auth = self._kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=None,
            enable_auto_commit=False,
            **auth.client_kwargs(),
        )
        await consumer.start()
        raws: list[Any] = []
        try:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            start = (await consumer.beginning_offsets([tp]))[tp]
            if start > first:
                raise Unreadable(f"{topic}-{partition} offset {first} is gone (retention)")
            consumer.seek(tp, first)
            async with asyncio.timeout(30):
                while await consumer.position(tp) <= last:
                    fetched = await consumer.getmany(tp, timeout_ms=1000)
                    raws.extend(m for m in fetched.get(tp, []) if m.offset <= last)
        except TimeoutError:
            raise Unreadable(f"{topic}-{partition} offsets {first}..{last}: not read") from None
        finally:
            await consumer.stop()
        codec = KafkaCodec(kafka_envelope(self._cfg, servers), topic, partition)
        kept, _, _ = codec.decode(raws, self._filters())
        return [record for record, _, _ in kept]

    def _filters(self) -> Any:
        from service.filters import FilterCriteria

        criteria = self._cfg.FilterCriteria
        if criteria is None or not criteria.Filters:
            return None
        return FilterCriteria.parse(criteria.model_dump())

    async def _from_stream(self, info: dict[str, Any]) -> Records:
        from contextlib import AsyncExitStack

        from service.aws import aws_client
        from service.sources.dynamodb import DynamoDBCodec
        from service.sources.kinds import SourceKind
        from service.sources.kinesis import KinesisCodec
        from service.sources.shards import ShardLaneCodec

        kinesis = self._cfg.source_kind is SourceKind.KINESIS
        arn = info.get("streamArn") or self._cfg.EventSourceArn or ""
        shard, start, end = info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"]
        if self._stream_client is None:
            self._stack = AsyncExitStack()
            service = "kinesis" if kinesis else "dynamodbstreams"
            client = aws_client(self._esmd.aws, service)
            self._stream_client = await self._stack.enter_async_context(client)
        client = self._stream_client
        if kinesis:
            resp = await client.get_shard_iterator(
                StreamARN=arn,
                ShardId=shard,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=start,
            )
        else:
            resp = await client.get_shard_iterator(
                StreamArn=arn,
                ShardId=shard,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=start,
            )
        codec = KinesisCodec(arn, "") if kinesis else DynamoDBCodec(arn)
        iterator = resp.get("ShardIterator")
        items: list[Any] = []
        done = False
        while iterator and not done:
            kwargs: dict[str, Any] = {"ShardIterator": iterator, "Limit": 1000}
            if kinesis:
                kwargs["StreamARN"] = arn
            page = await client.get_records(**kwargs)
            raws = page.get("Records", [])
            if not raws:
                break
            for raw in raws:
                record, size, _, seq = codec.convert(raw, shard)
                if int(seq) > int(end):
                    done = True
                    break
                items.append((record, size, len(items)))
            iterator = page.get("NextShardIterator")
        if not items:
            raise Unreadable(f"{shard} {start}..{end}: no records (trimmed?)")
        kept, _, _ = ShardLaneCodec(codec).decode(items, self._filters())
        return [record for record, _, _ in kept]

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()


def stderr_progress(summary: Summary) -> None:
    """One self-overwriting line on a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(
            f"\rredrive: {summary.read} read, {summary.redriven} redriven, "
            f"{summary.failed} failed, {summary.unreadable} unreadable "
        )
        sys.stderr.flush()
