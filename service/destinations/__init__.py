"""OnFailure destinations: where records given up on go, as AWS's invocation record.

``DestinationConfig.OnFailure.Destination`` names one of:

- ``arn:aws:sqs:<region>:<account>:<queue>``  -> :mod:`service.destinations.sqs`
- ``arn:aws:sns:<region>:<account>:<topic>``  -> :mod:`service.destinations.sns`
- ``arn:aws:s3:::<bucket>``                   -> :mod:`service.destinations.s3`
- ``kafka://<topic>`` (Kafka mappings only, the source's own cluster) -> ``.kafka``

A destination sends one :class:`FailedBatch` or raises; retrying is the
:class:`~service.destinations.sender.OnFailureSender`'s business, so a destination stays a
thin client of its service.
"""

from __future__ import annotations

import importlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.arns import KAFKA_PREFIX, destination_kind
from service.config import AwsConfig
from service.destinations.records import Failure, SourceInfo


class DestinationUnavailable(Exception):
    """The mapping stopped before the destination accepted the records: the caller must not
    move past them (they are read again by whoever next owns the partition or shard)."""


@dataclass(frozen=True)
class FailedBatch:
    """Records given up on, with what the invocation record needs about them."""

    records: list[dict[str, Any]]
    failure: Failure
    source: SourceInfo
    shard_id: str | None = None
    #: when it was given up on, and an id: a retried send writes the same record (S3: the
    #: same object key), not a second one
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class DestinationContext:
    """What a destination needs from the daemon's config and the mapping's source."""

    aws: AwsConfig = field(default_factory=AwsConfig)
    bootstrap_servers: list[str] = field(default_factory=list)  # kafka:// destinations
    #: the mapping's Kafka security (service.sources.kafka_auth.KafkaAuth.client_kwargs):
    #: a kafka:// destination connects with the source's own credentials
    kafka_client: dict[str, Any] = field(default_factory=dict, repr=False)


class Destination(Protocol):
    name: str

    async def open(self) -> None: ...

    async def send(self, batch: FailedBatch) -> None:
        """Deliver or raise; called again with the same batch after a failure."""
        ...

    async def close(self) -> None: ...


#: kind -> "module:class"; imported lazily, so unused kinds cost nothing.
DESTINATIONS = {
    "sqs": "service.destinations.sqs:SqsDestination",
    "sns": "service.destinations.sns:SnsDestination",
    "s3": "service.destinations.s3:S3Destination",
    "kafka": "service.destinations.kafka:KafkaDestination",
}


def make_destination(destination: str, context: DestinationContext) -> Destination:
    kind = destination_kind(destination)
    if kind is None:
        raise ValueError(f"not an OnFailure destination esmd can send to: {destination!r}")
    module, _, attr = DESTINATIONS[kind].partition(":")
    made: Destination = getattr(importlib.import_module(module), attr)(destination, context)
    return made


__all__ = [
    "KAFKA_PREFIX",
    "Destination",
    "DestinationContext",
    "DestinationUnavailable",
    "FailedBatch",
    "Failure",
    "SourceInfo",
    "destination_kind",  # re-exported from service.arns for existing callers
    "make_destination",
]
