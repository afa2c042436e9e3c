"""GroupPoller: one consumer that fetches for every mapping of a poller group.

It is a member of the group's coordination group (``esmd-pollers-<PollerGroupName>``),
subscribed to the topics of all the group's mappings, so Kafka spreads their partitions over
the group's pollers (in this process, other workers and replicas). Each assigned partition
gets a Lane of the mapping that reads its topic (that mapping's filters, batching, target and
OnFailure destination), starts from that mapping's own committed offset, and commits to that
mapping's own consumer group (service/sources/kafka_offsets.py), so the mapping's offsets
are where they would be without the group.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from service.config import StartPosition
from service.context import MappingContext
from service.lane import Lane
from service.sources.kafka import (
    KafkaCodec,
    finished_offsets,
    kafka_envelope,
    partition_lags,
    pause_partition,
    raise_lane_failure,
    value_size,
)

if TYPE_CHECKING:
    from service.sources.kafka_groups import PollerGroup

#: a partition's lane and the mapping it belongs to
Owned = tuple[MappingContext, Lane]


def _lanes_of(owned: dict[TopicPartition, Owned]) -> Iterator[tuple[TopicPartition, Lane]]:
    return ((tp, lane) for tp, (_, lane) in owned.items())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, poller: GroupPoller) -> None:
        self._poller = poller

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._poller._rebalancing = True
        await self._poller.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            await self._poller.assign(assigned)
        finally:
            self._poller._rebalancing = False


class GroupPoller:
    commit_interval = 1.0
    #: how long one getmany waits when nothing arrives (records end it at once): bounds
    #: how soon a retired poller notices, and costs one wake-up per call when idle
    fetch_timeout_ms = 1000
    #: how long the broker holds an empty fetch (data ends it at once)
    fetch_max_wait_ms = 2000

    def __init__(self, group: PollerGroup, retire: asyncio.Event) -> None:
        self._group = group
        self._stopping = retire
        self._lanes: dict[TopicPartition, Owned] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._records = 0
        self._bytes = 0
        self._resubscribe = True  # the first subscription
        self._rebalancing = True  # from before the first assignment to the end of each
        self._log = structlog.get_logger("esmd.kafka").bind(poller_group=group.name)

    async def run(self) -> None:
        group = self._group
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=group.bootstrap,
            group_id=group.coordination_group,
            client_id=f"esmd-group-{group.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # only for an offset the broker no longer has
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            **group.auth.client_kwargs(),
        )
        consumer.subscribe(group.topics, listener=_Rebalance(self))
        self._resubscribe = False
        await consumer.start()
        self._log.info("group consumer started", topics=len(group.topics))
        committer = asyncio.create_task(self._commit_loop(), name="kafka group committer")
        try:
            while not self._stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=self.fetch_timeout_ms)
                for tp, raws in fetched.items():
                    owned = self._lanes.get(tp)
                    if owned is None:
                        continue  # its mapping left the group
                    member, lane = owned
                    self._committed.setdefault(tp, raws[0].offset)
                    lane.put(raws)
                    member.metrics.polled.inc(len(raws))
                    self._records += len(raws)
                    self._bytes += sum(map(value_size, raws))
                self._update_lag()
                raise_lane_failure(lane for _, lane in self._lanes.values())
                self._follow_topics()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self.release(list(self._lanes))
            await consumer.stop()
            self._log.info("group consumer stopped")

    def stop(self) -> None:
        self._stopping.set()

    def subscribe(self) -> None:
        """Follow the group's topics (a mapping joined or left); the poll loop applies it
        after its current fetch, so mappings joining together cost one rebalance."""
        self._resubscribe = True

    def _follow_topics(self) -> None:
        """Subscribe again, never while a rebalance listener runs (aiokafka loses track of
        the assignment when the subscription changes under it)."""
        topics = self._group.topics  # none: the group is stopping
        if self._resubscribe and self._consumer and topics and not self._rebalancing:
            self._resubscribe = False
            self._consumer.subscribe(topics, listener=_Rebalance(self))

    async def drop_topic(self, topic: str) -> None:
        """A mapping leaves the group: finish its partitions here, then stop fetching them."""
        await self.release([tp for tp in self._lanes if tp.topic == topic])
        self.subscribe()

    # --- what the group's scaler reads ----------------------------------------------------

    def take_counts(self) -> tuple[int, int]:
        counts = self._records, self._bytes
        self._records = self._bytes = 0
        return counts

    def lag(self) -> int:
        if self._consumer is None:
            return 0
        return sum(lag for _, lag in partition_lags(self._consumer, _lanes_of(self._lanes)))

    def partition_count(self) -> int:
        if self._consumer is None:
            return 0
        return sum(
            len(self._consumer.partitions_for_topic(topic) or ()) for topic in self._group.topics
        )

    def partitions_of(self, topic: str) -> dict[str, Any]:
        return {
            lane.key: {"done_upto": lane.done_upto, "queued": lane.queued}
            for tp, (_, lane) in self._lanes.items()
            if tp.topic == topic
        }

    # --- partitions -----------------------------------------------------------------------

    async def assign(self, partitions: list[TopicPartition]) -> None:
        """Each partition starts where its mapping's consumer group left it, else at the
        mapping's StartingPosition. Only ``seek`` (synchronous) is used here: the
        ``seek_to_*`` calls wait for the fetcher, which waits for this listener, and a
        subscription that changes meanwhile would leave them waiting for ever."""
        assert self._consumer is not None
        by_topic: dict[str, list[TopicPartition]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp)
        members = [(m, by_topic[t]) for t in by_topic if (m := self._group.member_for(t))]
        found = await asyncio.gather(
            *(self._group.offsets.committed(m.config.consumer_group_id, tps) for m, tps in members)
        )
        starts: dict[TopicPartition, int] = {}
        fresh: list[tuple[MappingContext, TopicPartition]] = []
        for (member, tps), committed in zip(members, found, strict=True):
            for tp in tps:
                if tp in committed:
                    starts[tp] = self._committed[tp] = committed[tp]
                else:
                    fresh.append((member, tp))
        starts.update(await self._starting_offsets(fresh))
        assigned = self._consumer.assignment()
        for member, tps in members:
            for tp in tps:
                if tp not in assigned or tp not in starts:
                    continue  # the subscription changed meanwhile: another rebalance comes
                self._consumer.seek(tp, starts[tp])
                lane = member.new_lane(
                    f"{tp.topic}-{tp.partition}",
                    KafkaCodec(
                        kafka_envelope(member.config, self._group.bootstrap), tp.topic, tp.partition
                    ),
                    on_backpressure=functools.partial(self._pause, tp),
                )
                self._lanes[tp] = (member, lane)
                lane.start()
        self._log.info("partitions assigned", partitions=len(partitions))

    async def _starting_offsets(
        self, fresh: list[tuple[MappingContext, TopicPartition]]
    ) -> dict[TopicPartition, int]:
        """Where partitions without a committed offset start: their mapping's
        StartingPosition (TRIM_HORIZON, LATEST, AT_TIMESTAMP), one request per kind."""
        assert self._consumer is not None
        consumer = self._consumer
        by_start: dict[StartPosition | None, list[TopicPartition]] = defaultdict(list)
        stamps: dict[TopicPartition, int] = {}
        for member, tp in fresh:
            start = member.config.StartingPosition
            by_start[start].append(tp)
            if start is StartPosition.AT_TIMESTAMP:
                stamps[tp] = int((member.config.StartingPositionTimestamp or 0) * 1000)
        ends = await consumer.end_offsets([tp for _, tp in fresh]) if fresh else {}
        found: dict[TopicPartition, int] = {}
        if by_start[StartPosition.TRIM_HORIZON]:
            found.update(await consumer.beginning_offsets(by_start[StartPosition.TRIM_HORIZON]))
        for tp in by_start[StartPosition.LATEST]:
            found[tp] = ends[tp]
        if stamps:
            times = await consumer.offsets_for_times(stamps)
            for tp in stamps:
                at = times.get(tp)
                found[tp] = at.offset if at is not None else ends[tp]
        return found

    async def release(self, partitions: list[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions and commit what they finished."""
        owned = {tp: self._lanes.pop(tp) for tp in partitions if tp in self._lanes}
        if not owned:
            return
        grace = self._group.shutdown_grace
        await asyncio.gather(*(lane.stop(grace) for _, lane in owned.values()))
        await self._commit(owned)
        for tp, (member, _) in owned.items():
            self._committed.pop(tp, None)
            member.metrics.offset_lag(str(tp.partition)).set(0)

    def _pause(self, tp: TopicPartition, paused: bool) -> None:
        pause_partition(self._consumer, tp, paused)

    # --- checkpoints ----------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval)
            await self._commit(self._lanes)

    async def _commit(self, lanes: dict[TopicPartition, Owned]) -> None:
        """Commit each mapping's finished offsets to its own consumer group."""
        by_member: dict[str, tuple[MappingContext, dict[TopicPartition, int]]] = {}
        finished = finished_offsets(
            ((tp, lane) for tp, (_, lane) in lanes.items()), self._committed
        )
        for tp, done in finished.items():
            member = lanes[tp][0]
            by_member.setdefault(member.name, (member, {}))[1][tp] = done
        for member, offsets in by_member.values():
            group = member.config.consumer_group_id
            try:
                # shielded: a stop must not cut a commit in half and lose track of what landed
                await asyncio.shield(self._group.offsets.commit(group, offsets))
            except KafkaError as exc:
                member.metrics.error("commit")
                self._log.warning(
                    "commit failed; records will be read again", mapping=member.name, error=str(exc)
                )
                continue
            for tp, offset in offsets.items():
                member.metrics.committed.inc(offset - self._committed.get(tp, offset))
                self._committed[tp] = offset

    def _update_lag(self) -> None:
        assert self._consumer is not None
        for tp, lag in partition_lags(self._consumer, _lanes_of(self._lanes)):
            self._lanes[tp][0].metrics.offset_lag(str(tp.partition)).set(lag)
