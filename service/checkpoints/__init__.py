"""Checkpoints and leases of stream shards (Kinesis, DynamoDB Streams).

A :class:`LeaseStore` keeps, per mapping and shard, the position processing has reached and
who owns the shard. ``sqlite`` is for one replica: it owns every shard. ``dynamodb`` is a
lease table as the Kinesis Client Library keeps one: each lease is taken with a conditional
write, renewed by its owner, taken over when its owner stops renewing, and rebalanced so that
several esmd replicas share a stream without a coordinator of their own.

Positions are strings: a sequence number (processing resumes after it), one of the
iterator types ``TRIM_HORIZON``/``LATEST``/``AT_TIMESTAMP`` for a shard not yet started, or
``SHARD_END`` once a closed shard has been processed entirely (its children may start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from service.config import CheckpointsConfig

SHARD_END = "SHARD_END"
TRIM_HORIZON = "TRIM_HORIZON"


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """A shard as ListShards / DescribeStream describe it."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False  # has an EndingSequenceNumber: no more records will be added


@dataclass(slots=True)
class Lease:
    shard_id: str
    checkpoint: str
    parents: tuple[str, ...] = ()
    owner: str | None = None
    counter: int = 0

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


def initial_position(shard: ShardInfo, first_sync: bool, start: str) -> str:
    """Where a newly seen shard starts.

    Shards present when a mapping first runs start at its StartingPosition (with LATEST a
    closed shard is finished at once: nothing new will come). A shard that appears later is
    a child of resharding and is read from its beginning, since its parents were read to
    their end.
    """
    if not first_sync:
        return TRIM_HORIZON
    if start == "LATEST" and shard.closed:
        return SHARD_END
    return start


def ready_shards(leases: dict[str, Lease], held: set[str]) -> list[str]:
    """Held, unfinished shards whose parents are finished (or unknown: trimmed away)."""
    out = []
    for shard_id in sorted(held):
        lease = leases.get(shard_id)
        if lease is None or lease.finished:
            continue
        if all(p not in leases or leases[p].finished for p in lease.parents):
            out.append(shard_id)
    return out


class LeaseStore(Protocol):
    """What a shard poller needs from its checkpoint store."""

    owner: str

    async def open(self) -> None: ...

    async def sync(self, shards: Sequence[ShardInfo], start: str) -> None:
        """Create the leases of shards not seen before (see :func:`initial_position`)."""
        ...

    async def acquire(self) -> tuple[set[str], dict[str, Lease]]:
        """Renew what is held, take what is free or expired, rebalance; returns the shards
        held now and every lease of the mapping."""
        ...

    async def checkpoint(self, shard_id: str, position: str) -> bool:
        """Record a position; False when the lease was lost (stop processing the shard)."""
        ...

    async def release(self, shard_ids: Sequence[str]) -> None:
        """Give leases up (a clean stop), so another replica takes them at once."""
        ...

    async def close(self) -> None: ...


#: makes an aiobotocore client for a service name (Mapping.aws_client)
ClientFactory = Callable[[str], AbstractAsyncContextManager[Any]]


def make_store(config: CheckpointsConfig, mapping: str, aws_client: ClientFactory) -> LeaseStore:
    """The configured store for one mapping; ``aws_client`` makes the DynamoDB client."""
    if config.store == "dynamodb":
        from service.checkpoints.dynamodb import DynamoLeaseStore

        return DynamoLeaseStore(config, mapping, aws_client)
    from service.checkpoints.sqlite import SqliteStore

    return SqliteStore(config.path, mapping)


__all__ = [
    "SHARD_END",
    "TRIM_HORIZON",
    "ClientFactory",
    "Lease",
    "LeaseStore",
    "ShardInfo",
    "initial_position",
    "make_store",
    "ready_shards",
]
