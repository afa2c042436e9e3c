"""Sources: the registry of source kinds, one :class:`SourceEntry` each.

An entry says everything the rest of esmd needs to know about a kind: how its records are
identified and aged (:class:`~service.traits.RecordTraits`), how its failures are retried
(redelivered by the source, or retried in place), what happens to a record over the payload
cap, and the poller factory, imported lazily so an unused kind costs no import. Adding a
source means a module in this folder and a line here.

A poller reads its source, feeds Lanes (``context.new_lane``) and acknowledges what they
settle; it never batches or invokes on its own. ``run()`` returns when ``stop()`` was
called and everything settled was acknowledged.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.config import SourceKind
from service.traits import DYNAMODB, KAFKA, KINESIS, SQS, RecordTraits

if TYPE_CHECKING:
    from service.context import MappingContext


class Poller(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SourceEntry:
    poller: str  # "module:factory"; factory(MappingContext) -> Poller
    traits: RecordTraits
    #: failed records go back to the source (SQS visibility, MQ redelivery) instead of
    #: being retried in place, and no OnFailure destination applies
    redelivery: bool = False
    #: one record over the 6 MB cap: "skip" it (counted dropped, as AWS does for Kafka and
    #: MQ) or "give_up" to the OnFailure destination (streams)
    oversize: Literal["skip", "give_up"] = "give_up"
    iterator_age: bool = False  # reports esm_iterator_age_milliseconds
    #: AWS: with an OnFailure destination, MaximumRetryAttempts -1 means this many (Kafka)
    retries_with_destination: int | None = None


SOURCES: dict[SourceKind, SourceEntry] = {
    SourceKind.KAFKA: SourceEntry(
        "service.sources.kafka:KafkaSource", KAFKA, oversize="skip", retries_with_destination=10
    ),
    SourceKind.MSK: SourceEntry(
        "service.sources.kafka:KafkaSource", KAFKA, oversize="skip", retries_with_destination=10
    ),
    SourceKind.SQS: SourceEntry("service.sources.sqs:SqsPoller", SQS, redelivery=True),
    SourceKind.KINESIS: SourceEntry(
        "service.sources.kinesis:KinesisPoller", KINESIS, iterator_age=True
    ),
    SourceKind.DYNAMODB: SourceEntry(
        "service.sources.dynamodb:DynamoDBPoller", DYNAMODB, iterator_age=True
    ),
}


def source_entry(kind: SourceKind, mapping: str) -> SourceEntry:
    entry = SOURCES.get(kind)
    if entry is None:
        raise NotImplementedError(f"mapping {mapping!r}: source {kind} is not available yet")
    return entry


def make_poller(context: MappingContext) -> Poller:
    entry = source_entry(context.config.source_kind, context.name)
    module, _, attr = entry.poller.partition(":")
    poller: Poller = getattr(importlib.import_module(module), attr)(context)
    return poller
