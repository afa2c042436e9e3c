"""GroupLag: a consumer group's lag on a topic, read without joining the group.

A worker process whose share of a mapping's MinimumPollers is zero runs no consumer, so it
cannot see lag through one. It reads the lag the way ``kafka-consumer-groups --describe``
does instead: the topic's end offsets (a consumer outside any group) minus the offsets the
group committed (the admin API). The mapping's scaler then grows this worker's pool from
zero when the backlog lasts, as it would from a poller's own view. Both clients are opened
on the first read and closed as soon as the worker runs a poller again.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from service.sources.kafka_auth import KafkaAuth


class GroupLag:
    """Lag of consumer groups on their topics: ``read([(group, topic), ...])``."""

    def __init__(self, bootstrap: list[str], auth: KafkaAuth) -> None:
        self._bootstrap = bootstrap
        self._auth = auth
        self._ends: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self.partitions = 0  # the topics' partitions at the last read

    async def read(self, groups: list[tuple[str, str]]) -> int:
        """Records of each topic that its group has not committed (a partition without a
        committed offset counts from its start), summed."""
        ends, admin = await self._open()
        described = await admin.describe_topics(sorted({topic for _, topic in groups}))
        partitions = {
            t["topic"]: [TopicPartition(t["topic"], p["partition"]) for p in t["partitions"]]
            for t in described
        }
        tps = [tp for found in partitions.values() for tp in found]
        self.partitions = len(tps)
        if not tps:
            return 0
        end_offsets = await ends.end_offsets(tps)
        begin_offsets = await ends.beginning_offsets(tps)
        lag = 0
        for group, topic in groups:
            mine = partitions.get(topic, [])
            committed = await admin.list_consumer_group_offsets(group, partitions=mine)
            for tp in mine:
                done = committed.get(tp)
                start = done.offset if done is not None and done.offset >= 0 else begin_offsets[tp]
                lag += max(0, end_offsets[tp] - start)
        return lag

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
        if ends is not None:
            await ends.stop()
        if admin is not None:
            await admin.close()
