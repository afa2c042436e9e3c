"""GroupLag: a consumer group's lag on a topic, read without joining the group.

A worker process whose share of a mapping's MinimumPollers is zero runs no consumer, so it
cannot see lag through one. It reads the lag the way ``kafka-consumer-groups --describe``
does instead: the topic's end offsets (a consumer outside any group) minus the offsets the
group committed (the admin API). The mapping's scaler then grows this worker's pool from
zero when the backlog lasts, as it would from a poller's own view. Both clients are opened
on the first read and closed as soon as the worker runs a poller again. A poller group's
zero-share worker reads all its mappings' groups the same way, at the cost of one request
while nothing arrives (see ``GroupLag``).
"""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from service.sources.kafka_auth import KafkaAuth


class GroupLag:
    """Lag of consumer groups on their topics: ``read([(group, topic), ...])``.

    Idle, a read costs one request: the topics' end offsets. A group's committed offsets are
    asked for only when its topic's end moved since the last read, or it still lagged then,
    so a poller group of 100 quiet mappings is not 100 requests a scaling period."""

    #: how long the topics' partition lists are reused before they are described again
    partitions_max_age = 30.0

    def __init__(self, bootstrap: list[str], auth: KafkaAuth) -> None:
        self._bootstrap = bootstrap
        self._auth = auth
        self._ends: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._described_at = -self.partitions_max_age
        self._ends_seen: dict[TopicPartition, int] = {}
        self._lag_of: dict[tuple[str, str], int] = {}
        self.partitions = 0  # the topics' partitions at the last read

    async def read(self, groups: list[tuple[str, str]]) -> int:
        """Records of each topic that its group has not committed (a partition without a
        committed offset counts from its start), summed."""
        ends_client, admin = await self._open()
        partitions = await self._describe(admin, sorted({topic for _, topic in groups}))
        tps = [tp for found in partitions.values() for tp in found]
        self.partitions = len(tps)
        if not tps:
            return 0
        ends = await ends_client.end_offsets(tps)
        lag = 0
        for group, topic in groups:
            mine = partitions.get(topic, [])
            moved = any(ends[tp] != self._ends_seen.get(tp) for tp in mine)
            if moved or self._lag_of.get((group, topic), 0) > 0:
                self._lag_of[(group, topic)] = await self._lag(
                    ends_client, admin, group, mine, ends
                )
            lag += self._lag_of.get((group, topic), 0)
        self._ends_seen = ends
        return lag

    async def _lag(
        self,
        ends_client: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        group: str,
        tps: list[TopicPartition],
        ends: dict[TopicPartition, int],
    ) -> int:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        done = {tp: c.offset for tp, c in committed.items() if c is not None and c.offset >= 0}
        fresh = [tp for tp in tps if tp not in done]
        if fresh:  # never committed: from the partition's start
            done.update(await ends_client.beginning_offsets(fresh))
        return sum(max(0, ends[tp] - done[tp]) for tp in tps)

    async def _describe(
        self, admin: AIOKafkaAdminClient, topics: list[str]
    ) -> dict[str, list[TopicPartition]]:
        now = time.monotonic()
        if (
            set(topics) != set(self._partitions)
            or now - self._described_at > self.partitions_max_age
        ):
            described = await admin.describe_topics(topics)
            self._partitions = {
                t["topic"]: [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
                for t in described
            }
            self._described_at = now
        return self._partitions

    async def _open(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._ends is None or self._admin is None:
            kwargs = self._auth.client_kwargs()
            ends = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap, group_id=None, client_id="esmd-lag", **kwargs
            )
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._bootstrap, client_id="esmd-lag", **kwargs
            )
            try:
                await ends.start()
                await admin.start()
            except BaseException:
                await ends.stop()
                await admin.close()
                raise
            self._ends, self._admin = ends, admin
        return self._ends, self._admin

    async def close(self) -> None:
        ends, admin, self._ends, self._admin = self._ends, self._admin, None, None
        self._ends_seen.clear()
        self._lag_of.clear()
        if ends is not None:
            await ends.stop()
        if admin is not None:
            await admin.close()
