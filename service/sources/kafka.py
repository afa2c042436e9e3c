"""Kafka source: self-managed Apache Kafka and Amazon MSK, through aiokafka.

A mapping's KafkaSource runs a PollerPool of KafkaPollers; each poller is one consumer of the
mapping's group, so Kafka itself spreads the partitions over them (and over other esmd
processes and replicas in the same group). A LagScaler sizes the pool: between MinimumPollers
and MaximumPollers in provisioned mode, by AWS's one-minute lag rule on demand, never above
the topic's partitions.

Authentication (SourceAccessConfigurations) comes from service/sources/kafka_auth.py: the
source probes one broker with it before any consumer starts, so refused credentials show as
the mapping's EVENT_SOURCE_AUTHN_ERROR. Pollers up to the pool's minimum join with a static
group.instance.id (``kafka`` config section): a restarted replica gets its partitions back
without a rebalance.

Each assigned partition gets a Lane, so partitions are invoked concurrently and each in
order. Offsets are committed, never automatically, from the lanes' ``done_upto`` positions:
only records delivered, filtered out or given up on are ever committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pybase64
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from service.config import StartPosition
from service.context import MappingContext
from service.filters import parse_payload
from service.invoke import Backoff
from service.lane import Codec, Kept, Lane
from service.scaling import LagScaler, Load, PollerPool, PoolBounds
from service.sources.kafka_auth import PLAINTEXT, KafkaAuth, kafka_connection, probe
from service.sources.kafka_lag import GroupLag
from service.sources.kinds import SourceKind

if TYPE_CHECKING:
    from service.config import MappingConfig
    from service.filters import FilterCriteria, Screen
    from service.sources.kafka_schemas import RecordDecoder

_TIMESTAMP_TYPES = ("CREATE_TIME", "LOG_APPEND_TIME")
#: bytes of a record's JSON besides key, value and headers (field names, numbers, quotes)
_RECORD_OVERHEAD = 160
#: base64 straight to str, SIMD-accelerated: 5x binascii's speed on a 1 KB value
_b64 = pybase64.b64encode_as_string
#: a fetched record's value bytes, read in C: the poll loop sums it over every record
value_size = operator.attrgetter("serialized_value_size")
#: records of a chunk whose screening decides whether screening the rest pays
_SCREEN_SAMPLE = 16


def _signed(data: bytes) -> list[int]:
    """Header values as AWS sends them: Java's signed bytes."""
    return [b - 256 if b > 127 else b for b in data]


def lambda_record(raw: ConsumerRecord[bytes, bytes]) -> tuple[dict[str, Any], int]:
    """An aiokafka record as Lambda delivers it (key, value base64; headers as signed
    bytes), with its size in the event's JSON. Called once per record kept: no work here
    that a record without key or headers does not need."""
    record: dict[str, Any] = {
        "topic": raw.topic,
        "partition": raw.partition,
        "offset": raw.offset,
        "timestamp": raw.timestamp,
        "timestampType": _TIMESTAMP_TYPES[raw.timestamp_type],
    }
    size = _RECORD_OVERHEAD + len(raw.topic)
    key, value, headers = raw.key, raw.value, raw.headers
    if key is not None:
        record["key"] = encoded = _b64(key)
        size += len(encoded)
    if value is not None:
        record["value"] = encoded = _b64(value)
        size += len(encoded)
    record["headers"] = [{name: _signed(data)} for name, data in headers] if headers else []
    if headers:
        size += sum(len(name) + 8 + 5 * len(data) for name, data in headers)
    return record, size


def _kept(raw: ConsumerRecord[bytes, bytes]) -> Kept:
    """The lane's (record, size, offset) for ``raw``: the hot path. A record with a value
    and neither key nor headers (the usual one) is one dict display, the rest goes through
    :func:`lambda_record`; both give the same record, keys in the same order."""
    value = raw.value
    if raw.key is None and not raw.headers and value is not None:
        encoded = _b64(value)
        record = {
            "topic": raw.topic,
            "partition": raw.partition,
            "offset": raw.offset,
            "timestamp": raw.timestamp,
            "timestampType": _TIMESTAMP_TYPES[raw.timestamp_type],
            "value": encoded,
            "headers": [],
        }
        return record, _RECORD_OVERHEAD + len(raw.topic) + len(encoded), raw.offset
    record, size = lambda_record(raw)
    return record, size, raw.offset


def _screen_pays(raws: Sequence[ConsumerRecord[bytes, bytes]], screen: Screen) -> bool:
    """Whether the filters' raw-bytes screen rejects any of the chunk's first records: when
    it rejects none, the chunk is likely all kept, and screening each record would only
    add its cost to the parse every kept record needs anyway."""
    return any(raw.value is not None and not screen(raw.value) for raw in raws[:_SCREEN_SAMPLE])


def kafka_envelope(cfg: MappingConfig, servers: list[str]) -> dict[str, Any]:
    """The fields of a Kafka event besides ``records``: MSK names its cluster ARN."""
    joined = ",".join(servers)
    if cfg.source_kind is SourceKind.MSK:
        return {
            "eventSource": "aws:kafka",
            "eventSourceArn": cfg.EventSourceArn,
            "bootstrapServers": joined,
        }
    return {"eventSource": "SelfManagedKafka", "bootstrapServers": joined}


# --- what both Kafka pollers (a mapping's own, a poller group's) do with their lanes ---------


def raise_lane_failure(lanes: Iterable[Lane]) -> None:
    """A lane that died of a bug takes its consumer down (its owner restarts it)."""
    for lane in lanes:
        error = lane.failure()
        if error is not None:
            raise error


def partition_lags(
    consumer: AIOKafkaConsumer, lanes: Iterable[tuple[TopicPartition, Lane]]
) -> Iterator[tuple[TopicPartition, int]]:
    """Each partition's records past what its lane finished, where both ends are known."""
    for tp, lane in lanes:
        high = consumer.highwater(tp)
        if high is not None and lane.done_upto is not None:
            yield tp, high - lane.done_upto


def finished_offsets(
    lanes: Iterable[tuple[TopicPartition, Lane]], committed: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """The offsets to commit: each lane's finished position, where it moved past the last
    commit."""
    offsets = {}
    for tp, lane in lanes:
        done = lane.done_upto
        if done is not None and done > committed.get(tp, -1):
            offsets[tp] = done
    return offsets


def pause_partition(consumer: AIOKafkaConsumer | None, tp: TopicPartition, paused: bool) -> None:
    """A lane's backpressure: stop (or resume) fetching its partition while it is assigned."""
    if consumer is None or tp not in consumer.assignment():
        return
    if paused:
        consumer.pause(tp)
    else:
        consumer.resume(tp)


class KafkaCodec:
    """Turns aiokafka records of one partition into Lambda Kafka records and events."""

    def __init__(self, envelope: dict[str, Any], topic: str, partition: int) -> None:
        self._envelope = envelope
        self._key = f"{topic}-{partition}"
        self.envelope_bytes = len(orjson.dumps(envelope)) + len(self._key) + 32

    def position(self, raw: ConsumerRecord[bytes, bytes]) -> int:
        return int(raw.offset)

    def decode(
        self, raws: Sequence[ConsumerRecord[bytes, bytes]], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        if filters is None:
            return self._convert(raws), [], raws[-1].offset + 1
        if filters.keys == {"value"}:  # the usual case: the view is the parsed value alone
            kept, filtered = self._filter_values(raws, filters)
        else:
            kept, filtered = self._filter_records(raws, filters)
        return kept, filtered, raws[-1].offset + 1

    @staticmethod
    def _convert(raws: Sequence[ConsumerRecord[bytes, bytes]]) -> list[Kept]:
        return list(map(_kept, raws))

    @staticmethod
    def _filter_values(
        raws: Sequence[ConsumerRecord[bytes, bytes]], filters: FilterCriteria
    ) -> tuple[list[Kept], list[Any]]:
        """Patterns on ``value`` only: decide on the parsed value before converting. A
        value whose raw bytes the filters' screen rejects is not parsed at all."""
        kept: list[Kept] = []
        filtered: list[Any] = []
        keep, drop = kept.append, filtered.append
        match, parse, screen = filters.matcher, parse_payload, filters.payload_screen("value")
        if screen is not None and not _screen_pays(raws, screen):
            screen = None
        for raw in raws:
            value = raw.value
            if value is not None and screen is not None and not screen(value):
                drop(raw)
            elif match({"value": parse(value)}):
                keep(_kept(raw))
            else:
                drop(raw)
        return kept, filtered

    @staticmethod
    def _filter_records(
        raws: Sequence[ConsumerRecord[bytes, bytes]], filters: FilterCriteria
    ) -> tuple[list[Kept], list[Any]]:
        """Patterns on metadata too: the view is the whole record with ``value`` parsed."""
        kept: list[Kept] = []
        filtered: list[Any] = []
        match = filters.matcher
        for raw in raws:
            item = _kept(raw)
            if match({**item[0], "value": parse_payload(raw.value)}):
                kept.append(item)
            else:
                filtered.append(raw)
        return kept, filtered

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._envelope, "records": {self._key: records}}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, poller: KafkaPoller) -> None:
        self._poller = poller

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._poller.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._poller.assign(assigned)


class KafkaSource:
    """A mapping's Kafka pollers: the pool, its scaler, and what they share (the brokers)."""

    def __init__(self, mapping: MappingContext) -> None:
        self._mapping = mapping
        cfg = mapping.config
        self._bootstrap: list[str] = []
        self._auth = PLAINTEXT
        self._members: set[KafkaPoller] = set()
        self._slots: set[int] = set()  # taken poller slots: part of group.instance.id
        self._stopping = asyncio.Event()
        self._pool: PollerPool | None = None
        self._partitions = 0
        self._decoder: RecordDecoder | None = None
        settings = mapping.esmd.scaling
        provisioned = cfg.ProvisionedPollerConfig
        if provisioned is not None:
            bounds = PoolBounds(provisioned.MinimumPollers, provisioned.MaximumPollers)
            self._period, up_after = settings.period_seconds, settings.scale_up_after_seconds
        else:  # AWS's on-demand rule: evaluated every minute, up to one poller a partition
            bounds = PoolBounds(1, 2000)
            self._period = up_after = settings.on_demand_period_seconds
        self.scaler = LagScaler(
            mapping.worker.share(bounds, keep_one=False),
            capacity_bytes=settings.poller_capacity_mb_per_second * 1e6,
            up_after=up_after,
            cooldown=settings.scale_down_cooldown_seconds,
            batch_size=cfg.batch_size,
        )
        self._log = structlog.get_logger("esmd.kafka").bind(mapping=cfg.Name)

    async def run(self) -> None:
        cfg = self._mapping.config
        self._bootstrap, self._auth = await kafka_connection(cfg, self._mapping.esmd.aws)
        await probe(self._bootstrap, self._auth)  # SourceAuthError: the mapping's reason
        self._log.info("brokers answer", security=self._auth.describe())
        await self._open_decoder()
        pool = self._pool = PollerPool(
            self._member, self.scaler.bounds, self._mapping.metrics, "kafka poller"
        )
        pool.start()
        group_lag = GroupLag(self._bootstrap, self._auth)
        try:
            await self._scale_loop(pool, group_lag)
        finally:
            await pool.retire_all()
            await group_lag.close()
            if self._decoder is not None:
                await self._decoder.close()

    async def _open_decoder(self) -> None:
        """The schema registry's decoder, when the mapping has SchemaRegistryConfig."""
        registry = self._mapping.config.schema_registry
        if registry is None:
            return
        from service.sources.kafka_schemas import RecordDecoder
        from service.sources.schema_registry import open_registry

        client = await open_registry(registry, self._mapping.esmd.aws)
        self._decoder = RecordDecoder(self._mapping, client, registry, lambda_record)

    def stop(self) -> None:
        self._stopping.set()
        for member in self._members:
            member.stop()

    async def _member(self, retire: asyncio.Event) -> None:
        """One poller, restarted with backoff when its consumer fails, until retired."""
        slot = min(set(range(len(self._slots) + 1)) - self._slots)
        self._slots.add(slot)
        try:
            await self._run_member(retire, slot)
        finally:
            self._slots.discard(slot)

    async def _run_member(self, retire: asyncio.Event, slot: int) -> None:
        backoff = Backoff(1.0, 30.0)
        failures = 0
        instance = self._instance_id(slot)
        while not (retire.is_set() or self._stopping.is_set()):
            poller = KafkaPoller(
                self._mapping, self._bootstrap, self._auth, retire, instance, self._decoder
            )
            self._members.add(poller)
            try:
                await poller.run()
                return
            except Exception as exc:
                self._mapping.metrics.error("polling")
                wait = backoff.delay(failures)
                failures += 1
                self._log.error("poller failed", error=repr(exc), retry_in=round(wait, 2))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
            finally:
                self._members.discard(poller)

    def _instance_id(self, slot: int) -> str | None:
        """group.instance.id of the poller in ``slot``: replica, mapping, worker, slot. Only
        the slots the pool always has are static; one above the minimum is retired when the
        pool shrinks, and a static member does not leave its group (its partitions would
        wait a session timeout)."""
        settings = self._mapping.esmd.kafka
        if not settings.static_membership or slot >= self.scaler.bounds.minimum:
            return None
        replica = settings.instance_id or os.environ.get("HOSTNAME") or socket.gethostname()
        return f"esmd-{replica}-{self._mapping.name}-w{self._mapping.worker.index}-{slot}"

    async def _scale_loop(self, pool: PollerPool, group_lag: GroupLag) -> None:
        """Measure the pool's load every period and let the scaler resize it."""
        last = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._period):
                    await self._stopping.wait()
            now = time.monotonic()
            load = await self._load(pool, group_lag, now - last)
            last = now
            decision = self.scaler.decide(now, pool.size, load, self._partition_count())
            if decision is not None:
                pool.resize(*decision)

    async def _load(self, pool: PollerPool, group_lag: GroupLag, seconds: float) -> Load:
        """What the pollers measured; with none running (this worker's share of the
        minimum is zero), the group's lag as the broker knows it."""
        if pool.size == 0:
            try:
                cfg = self._mapping.config
                lag = await group_lag.read([(cfg.consumer_group_id, (cfg.Topics or [""])[0])])
            except KafkaError as exc:
                self._log.warning("lag unreadable", error=repr(exc))
                lag = 0
            self._partitions = group_lag.partitions or self._partitions
            return Load(lag, 0.0, 0.0)
        await group_lag.close()
        lag = records = size = 0
        for member in self._members:
            lag += member.lag()
            r, b = member.take_counts()
            records += r
            size += b
        seconds = max(seconds, 1e-3)
        return Load(lag, records / seconds, size / seconds)

    def _partition_count(self) -> int:
        """The topic's partitions, as the pollers' metadata knows them (the pool's ceiling)."""
        for member in self._members:
            found = member.partition_count()
            if found:
                self._partitions = found
                break
        return self._partitions or self.scaler.bounds.maximum

    def status(self) -> dict[str, Any]:
        partitions: dict[str, Any] = {}
        for member in self._members:
            partitions.update(member.status()["partitions"])
        return {
            "pollers": self._pool.size if self._pool else 0,
            "partitions": partitions,
        }


class KafkaPoller:
    """One consumer of the mapping's group; feeds one Lane per partition it is assigned."""

    commit_interval = 1.0
    fetch_timeout_ms = 1000
    fetch_max_wait_ms = 2000

    def __init__(
        self,
        mapping: MappingContext,
        bootstrap_servers: list[str],
        auth: KafkaAuth = PLAINTEXT,
        retire: asyncio.Event | None = None,
        instance_id: str | None = None,
        decoder: RecordDecoder | None = None,
    ) -> None:
        self._mapping = mapping
        self._decoder = decoder  # the schema registry's, if the mapping has one
        cfg = mapping.config
        self._topic = (cfg.Topics or [""])[0]
        self._bootstrap = bootstrap_servers
        self._auth = auth
        self._instance_id = instance_id
        self._lanes: dict[TopicPartition, Lane] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = retire or asyncio.Event()
        # what the scaler reads and resets each period
        self._records = 0
        self._bytes = 0
        self._polled = mapping.metrics.polled
        self._log = structlog.get_logger("esmd.kafka").bind(mapping=cfg.Name)

    # --- the poll loop --------------------------------------------------------------------

    async def run(self) -> None:
        consumer = self._consumer = self._make_consumer()
        consumer.subscribe([self._topic], listener=_Rebalance(self))
        await consumer.start()
        self._mapping.connected()
        self._log.info(
            "consumer started", topic=self._topic, group=self._group_id, instance=self._instance_id
        )
        committer = asyncio.create_task(self._commit_loop(), name="kafka committer")
        try:
            while not self._stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=self.fetch_timeout_ms)
                for tp, raws in fetched.items():
                    lane = self._lanes.get(tp)
                    if lane is not None:
                        self._committed.setdefault(tp, raws[0].offset)
                        decoded = await self._decode(raws)
                        if decoded is None:
                            break  # stopping: the chunk stays unacknowledged
                        lane.put(decoded)
                        self._polled.inc(len(raws))
                        self._records += len(raws)
                        self._bytes += sum(map(value_size, raws))
                self._update_lag()
                raise_lane_failure(self._lanes.values())
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self.release(list(self._lanes))
            await consumer.stop()
            self._log.info("consumer stopped")

    def stop(self) -> None:
        self._stopping.set()

    async def _decode(self, raws: list[ConsumerRecord[bytes, bytes]]) -> Sequence[Any] | None:
        """The chunk as the lane takes it: as fetched, or decoded with the schema registry
        (undecodable records given up first); None when a stop came first."""
        if self._decoder is None:
            return raws
        return await self._decoder.decode(raws, self._stopping)

    def take_counts(self) -> tuple[int, int]:
        """Records and bytes fetched since the last call."""
        counts = self._records, self._bytes
        self._records = self._bytes = 0
        return counts

    def lag(self) -> int:
        """Records of this poller's partitions not yet processed."""
        if self._consumer is None:
            return 0
        return sum(lag for _, lag in partition_lags(self._consumer, self._lanes.items()))

    def partition_count(self) -> int:
        if self._consumer is None:
            return 0
        return len(self._consumer.partitions_for_topic(self._topic) or ())

    @property
    def _group_id(self) -> str:
        return self._mapping.config.consumer_group_id

    def _make_consumer(self) -> AIOKafkaConsumer:
        start = self._mapping.config.StartingPosition
        static: dict[str, Any] = {}
        if self._instance_id is not None:
            timeout_ms = int(self._mapping.esmd.kafka.session_timeout_seconds * 1000)
            static = {"group_instance_id": self._instance_id, "session_timeout_ms": timeout_ms}
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            client_id=f"esmd-{self._mapping.config.Name}",
            enable_auto_commit=False,
            auto_offset_reset="latest" if start is StartPosition.LATEST else "earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            **static,
            **self._auth.client_kwargs(),
        )

    # --- partitions -----------------------------------------------------------------------

    async def assign(self, partitions: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in partitions:
            lane = self._mapping.new_lane(
                f"{tp.topic}-{tp.partition}",
                self._codec(tp),
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

    def _codec(self, tp: TopicPartition) -> Codec:
        plain = KafkaCodec(self._envelope(), tp.topic, tp.partition)
        return plain if self._decoder is None else self._decoder.codec(plain)

    def _envelope(self) -> dict[str, Any]:
        return kafka_envelope(self._mapping.config, self._bootstrap or [])

    def _pause(self, tp: TopicPartition, paused: bool) -> None:
        pause_partition(self._consumer, tp, paused)

    # --- checkpoints ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(self._lanes)

    async def _commit(self, lanes: dict[TopicPartition, Lane]) -> None:
        assert self._consumer is not None
        offsets = finished_offsets(lanes.items(), self._committed)
        if not offsets:
            return
        try:
            # shielded: a stop must not cut a commit in half and lose track of what landed
            await asyncio.shield(
                self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
            )
        except (CommitFailedError, KafkaError) as exc:
            self._mapping.metrics.error("commit")
            self._log.warning("commit failed; records will be read again", error=str(exc))
            return
        for tp, offset in offsets.items():
            self._mapping.metrics.committed.inc(offset - self._committed.get(tp, offset))
            self._committed[tp] = offset

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp, lag in partition_lags(self._consumer, self._lanes.items()):
            self._mapping.metrics.offset_lag(str(tp.partition)).set(lag)

    def status(self) -> dict[str, Any]:
        return {
            "partitions": {
                lane.key: {"done_upto": lane.done_upto, "queued": lane.queued}
                for lane in self._lanes.values()
            },
        }
