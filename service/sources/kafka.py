"""Kafka source: self-managed Apache Kafka and Amazon MSK, through aiokafka.

One consumer per poller joins the mapping's consumer group. Each assigned partition gets a
Lane, so partitions are invoked concurrently and each in order. Offsets are committed, never
automatically, from the lanes' ``done_upto`` positions: only records delivered, filtered out
or given up on are ever committed.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from service.config import MappingConfig, SourceKind, StartPosition
from service.filters import parse_payload
from service.lane import Kept, Lane

if TYPE_CHECKING:
    from service.filters import FilterCriteria
    from service.mapping import Mapping

_TIMESTAMP_TYPES = ("CREATE_TIME", "LOG_APPEND_TIME")
#: bytes of a record's JSON besides key, value and headers (field names, numbers, quotes)
_RECORD_OVERHEAD = 160
_b64 = binascii.b2a_base64


def _signed(data: bytes) -> list[int]:
    """Header values as AWS sends them: Java's signed bytes."""
    return [b - 256 if b > 127 else b for b in data]


class KafkaCodec:
    """Turns aiokafka records of one partition into Lambda Kafka records and events."""

    def __init__(self, envelope: dict[str, Any], topic: str, partition: int) -> None:
        self._envelope = envelope
        self._key = f"{topic}-{partition}"
        self.envelope_bytes = len(orjson.dumps(envelope)) + len(self._key) + 32

    def decode(
        self, raws: Sequence[ConsumerRecord[bytes, bytes]], filters: FilterCriteria | None
    ) -> tuple[list[Kept], int, int]:
        kept: list[Kept] = []
        to_record = self._record
        if filters is None:
            kept = [(*to_record(raw), raw.offset) for raw in raws]
            return kept, 0, raws[-1].offset + 1
        match = filters.matcher
        value_only = filters.keys == {"value"}  # the usual case: no metadata view needed
        filtered = 0
        for raw in raws:
            if value_only:
                view = {"value": parse_payload(raw.value)}
            else:
                view = {**to_record(raw)[0], "value": parse_payload(raw.value)}
            if match(view):
                kept.append((*to_record(raw), raw.offset))
            else:
                filtered += 1
        return kept, filtered, raws[-1].offset + 1

    def _record(self, raw: ConsumerRecord[bytes, bytes]) -> tuple[dict[str, Any], int]:
        record: dict[str, Any] = {
            "topic": raw.topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "timestamp": raw.timestamp,
            "timestampType": _TIMESTAMP_TYPES[raw.timestamp_type],
        }
        size = _RECORD_OVERHEAD + len(raw.topic)
        if raw.key is not None:
            record["key"] = key = _b64(raw.key, newline=False).decode()
            size += len(key)
        if raw.value is not None:
            record["value"] = value = _b64(raw.value, newline=False).decode()
            size += len(value)
        headers = []
        for name, data in raw.headers:
            headers.append({name: _signed(data)})
            size += len(name) + 8 + 5 * len(data)
        record["headers"] = headers
        return record, size

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._envelope, "records": {self._key: records}}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, poller: KafkaPoller) -> None:
        self._poller = poller

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._poller.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._poller.assign(assigned)


class KafkaPoller:
    """Consumes the mapping's topic in its consumer group and feeds one Lane per partition."""

    commit_interval = 1.0
    fetch_timeout_ms = 200

    def __init__(self, mapping: Mapping, bootstrap_servers: list[str] | None = None) -> None:
        self._mapping = mapping
        cfg = mapping.config
        self._topic = (cfg.Topics or [""])[0]
        self._bootstrap = bootstrap_servers or _self_managed_servers(cfg)
        self._tls = False
        self._lanes: dict[TopicPartition, Lane] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._log = structlog.get_logger("esmd.kafka").bind(mapping=cfg.Name)

    # --- the poll loop --------------------------------------------------------------------

    async def run(self) -> None:
        if not self._bootstrap:
            self._bootstrap, self._tls = await msk_bootstrap_servers(self._mapping)
        consumer = self._consumer = self._make_consumer()
        consumer.subscribe([self._topic], listener=_Rebalance(self))
        await consumer.start()
        self._log.info("consumer started", topic=self._topic, group=self._group_id)
        committer = asyncio.create_task(self._commit_loop(), name="kafka committer")
        try:
            while not self._stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=self.fetch_timeout_ms)
                for tp, raws in fetched.items():
                    lane = self._lanes.get(tp)
                    if lane is not None:
                        self._committed.setdefault(tp, raws[0].offset)
                        lane.put(raws)
                self._update_lag()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self.release(list(self._lanes))
            await consumer.stop()
            self._log.info("consumer stopped")

    def stop(self) -> None:
        self._stopping.set()

    @property
    def _group_id(self) -> str:
        return self._mapping.config.consumer_group_id

    def _make_consumer(self) -> AIOKafkaConsumer:
        start = self._mapping.config.StartingPosition
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"esmd-{self._mapping.config.Name}",
            enable_auto_commit=False,
            auto_offset_reset="latest" if start is StartPosition.LATEST else "earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            security_protocol="SSL" if self._tls else "PLAINTEXT",
            ssl_context=ssl.create_default_context() if self._tls else None,
        )

    # --- partitions -----------------------------------------------------------------------

    async def assign(self, partitions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in partitions:
            lane = self._mapping.new_lane(
                f"{tp.topic}-{tp.partition}",
                KafkaCodec(self._envelope(), tp.topic, tp.partition),
                on_backpressure=functools.partial(self._pause, tp),
            )
            self._lanes[tp] = lane
            lane.start()
        if self._mapping.config.StartingPosition is StartPosition.AT_TIMESTAMP:
            await self._seek_to_timestamp(partitions)
        self._log.info("partitions assigned", partitions=sorted(tp.partition for tp in partitions))

    async def release(self, partitions: list[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions and commit what they finished."""
        lanes = [(tp, self._lanes.pop(tp)) for tp in partitions if tp in self._lanes]
        if not lanes:
            return
        grace = self._mapping.shutdown_grace
        await asyncio.gather(*(lane.stop(grace) for _, lane in lanes))
        await self._commit(dict(lanes))
        for tp, _ in lanes:
            self._committed.pop(tp, None)
            self._mapping.metrics.offset_lag(str(tp.partition)).set(0)
        self._log.info("partitions released", partitions=sorted(tp.partition for tp, _ in lanes))

    def _pause(self, tp: TopicPartition, paused: bool) -> None:
        if self._consumer is None or tp not in self._consumer.assignment():
            return
        if paused:
            self._consumer.pause(tp)
        else:
            self._consumer.resume(tp)

    async def _seek_to_timestamp(self, partitions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        ts_ms = int((self._mapping.config.StartingPositionTimestamp or 0) * 1000)
        fresh = [tp for tp in partitions if await self._consumer.committed(tp) is None]
        if not fresh:
            return
        found = await self._consumer.offsets_for_times({tp: ts_ms for tp in fresh})
        for tp in fresh:
            if found.get(tp) is not None:
                self._consumer.seek(tp, found[tp].offset)
            else:
                await self._consumer.seek_to_end(tp)

    def _envelope(self) -> dict[str, Any]:
        cfg = self._mapping.config
        servers = ",".join(self._bootstrap or [])
        if cfg.source_kind is SourceKind.MSK:
            return {
                "eventSource": "aws:kafka",
                "eventSourceArn": cfg.EventSourceArn,
                "bootstrapServers": servers,
            }
        return {"eventSource": "SelfManagedKafka", "bootstrapServers": servers}

    # --- checkpoints ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(self._lanes)

    async def _commit(self, lanes: dict[TopicPartition, Lane]) -> None:
        assert self._consumer is not None
        offsets = {}
        for tp, lane in lanes.items():
            done = lane.done_upto
            if done is not None and done > self._committed.get(tp, -1):
                offsets[tp] = done
        if not offsets:
            return
        try:
            # shielded: a stop must not cut a commit in half and lose track of what landed
            await asyncio.shield(
                self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            )
        except (CommitFailedError, KafkaError) as exc:
            self._mapping.metrics.errors.inc()
            self._log.warning("commit failed; records will be read again", error=str(exc))
            return
        for tp, offset in offsets.items():
            self._mapping.metrics.committed.inc(offset - self._committed.get(tp, offset))
            self._committed[tp] = offset

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp, lane in self._lanes.items():
            high = self._consumer.highwater(tp)
            if high is not None and lane.done_upto is not None:
                self._mapping.metrics.offset_lag(str(tp.partition)).set(high - lane.done_upto)

    def status(self) -> dict[str, Any]:
        return {
            "partitions": {
                lane.key: {"done_upto": lane.done_upto, "queued": lane.queued}
                for lane in self._lanes.values()
            },
        }


def _self_managed_servers(cfg: MappingConfig) -> list[str] | None:
    source = cfg.SelfManagedEventSource
    return list(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS) if source else None


async def msk_bootstrap_servers(mapping: Mapping) -> tuple[list[str], bool]:
    """An MSK cluster's brokers from the Kafka API (GetBootstrapBrokers): (servers, tls).

    Plaintext brokers are preferred when the cluster has them; else TLS.
    """
    arn = mapping.config.EventSourceArn
    async with mapping.aws_client("kafka") as kafka:
        resp = await kafka.get_bootstrap_brokers(ClusterArn=arn)
    for key, tls in (("BootstrapBrokerString", False), ("BootstrapBrokerStringTls", True)):
        if resp.get(key):
            return str(resp[key]).split(","), tls
    raise ValueError(f"mapping {mapping.config.Name!r}: EventSourceArn: no brokers for {arn}")
