"""GroupOffsets: read and commit a consumer group's offsets without joining the group.

The pollers of a poller group (PollerGroupName) fetch for many mappings at once as members of
one coordination group, yet each mapping keeps its own consumer group and offsets, as on AWS.
Kafka lets a client that is no member commit a group's offsets (OffsetCommit with generation
-1 and no member id: the "simple consumer" commit, accepted while the group has no active
members) and read them (OffsetFetch). This module sends those two requests with aiokafka's
own protocol classes, to the group's coordinator, found and cached per group.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
    for_code,
)
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetFetchRequest

_GROUP = 0  # FindCoordinator's key type for consumer groups
_COORDINATOR_MOVED = (NotCoordinatorForGroupError, GroupCoordinatorNotAvailableError)


class GroupOffsets:
    def __init__(self, client: AIOKafkaClient) -> None:
        self._client = client
        self._coordinators: dict[str, int] = {}

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset of each partition that has one."""
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in tps:
            by_topic[tp.topic].append(tp.partition)
        response = await self._send(group, OffsetFetchRequest(group, list(by_topic.items())))
        found: dict[TopicPartition, int] = {}
        for topic, partitions in response.topics:
            for partition, offset, _metadata, error_code in partitions:
                self._raise(group, error_code)
                if offset >= 0:
                    found[TopicPartition(topic, partition)] = offset
        return found

    async def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next record to read) for ``group``; KafkaError if refused."""
        by_topic: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
        for tp, offset in offsets.items():
            by_topic[tp.topic].append((tp.partition, offset, ""))
        request = OffsetCommitRequest(
            group,
            OffsetCommitRequest.DEFAULT_GENERATION_ID,
            "",  # no member id: a commit from outside the group
            OffsetCommitRequest.DEFAULT_RETENTION_TIME,
            list(by_topic.items()),
        )
        response = await self._send(group, request)
        for _topic, partitions in response.topics:
            for _partition, error_code in partitions:
                self._raise(group, error_code)

    async def _send(self, group: str, request: OffsetFetchRequest | OffsetCommitRequest) -> Any:
        node = self._coordinators.get(group)
        if node is None:
            node = self._coordinators[group] = await self._client.coordinator_lookup(_GROUP, group)
        try:
            return await self._client.send(node, request)
        except KafkaError:
            self._coordinators.pop(group, None)  # look the coordinator up again next time
            raise

    def _raise(self, group: str, error_code: int) -> None:
        if error_code:
            error = for_code(error_code)
            if issubclass(error, _COORDINATOR_MOVED):
                self._coordinators.pop(group, None)
            raise error(f"consumer group {group!r}")
