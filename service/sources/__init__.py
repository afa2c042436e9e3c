"""Sources: one poller class per source kind, chosen through ``SOURCES``.

A poller reads its source, feeds Lanes (one per partition, shard or message group) that it
gets from its Mapping, and checkpoints the positions the lanes report as done. ``run()``
returns when ``stop()`` was called and everything finished was checkpointed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol

from service.config import SourceKind

if TYPE_CHECKING:
    from service.mapping import Mapping


class Poller(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


#: source kind -> "module:class"; imported lazily, so an unused kind costs no import.
SOURCES: dict[SourceKind, str] = {
    SourceKind.KAFKA: "service.sources.kafka:KafkaSource",
    SourceKind.MSK: "service.sources.kafka:KafkaSource",
    SourceKind.SQS: "service.sources.sqs:SqsPoller",
    SourceKind.KINESIS: "service.sources.kinesis:KinesisPoller",
    SourceKind.DYNAMODB: "service.sources.dynamodb:DynamoDBPoller",
}


def make_poller(mapping: Mapping) -> Poller:
    kind = mapping.config.source_kind
    spec = SOURCES.get(kind)
    if spec is None:
        raise NotImplementedError(
            f"mapping {mapping.config.Name!r}: source {kind} is not available yet"
        )
    module, _, attr = spec.partition(":")
    poller: Poller = getattr(importlib.import_module(module), attr)(mapping)
    return poller
