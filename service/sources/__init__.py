"""Sources: the registry of source kinds, one :class:`SourceEntry` each.

An entry says everything the rest of esmd needs to know about a kind: its config defaults
and limits (BatchSize, the batching window, which optional properties and StartingPosition
values it takes, which OnFailure destinations, its own rules), how its records are
identified and aged (:class:`~service.traits.RecordTraits`), how its failures are retried
(redelivered by the source, or retried in place), what happens to a record over the payload
cap, and the poller factory, imported lazily so an unused kind costs no import. Adding a
source means a module in this folder and an entry here; the config reads the entry, so it
needs no if/elif of its own.

This module imports nothing of esmd but leaf modules (kinds, traits), so ``service.config``
can use it.

A poller reads its source, feeds Lanes (``context.new_lane``) and acknowledges what they
settle; it never batches or invokes on its own. ``run()`` returns when ``stop()`` was
called and everything settled was acknowledged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.sources.kinds import SourceKind
from service.traits import DOCUMENTDB, DYNAMODB, KAFKA, KINESIS, MQ, SQS, RecordTraits

if TYPE_CHECKING:
    from service.config import MappingConfig
    from service.context import MappingContext

#: a kind's own config rules: (field, message) for each problem
Rules = Callable[["MappingConfig"], Iterator[tuple[str, str]]]


class Poller(Protocol):
    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def _no_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    return iter(())


@dataclass(frozen=True)
class SourceEntry:
    title: str  # in messages: "only Kafka mappings have Topics"
    poller: str  # "module:factory"; factory(MappingContext) -> Poller
    traits: RecordTraits
    # --- config: AWS's defaults and limits for the kind -----------------------------------
    batch_size: int = 100  # BatchSize default
    window_seconds: float = 0.0  # MaximumBatchingWindowInSeconds default
    #: StartingPosition values it requires; () means it takes none
    starting_positions: tuple[str, ...] = ()
    #: optional CloudFormation properties only some kinds have, that this one has
    properties: frozenset[str] = frozenset()
    #: OnFailure destination kinds it may send to (see service.arns.destination_kind)
    destinations: frozenset[str] = frozenset()
    rules: Rules = _no_rules  # the kind's own rules
    #: SourceAccessConfigurations types it can authenticate with (a secret URI each), checked
    #: by the config; a kind whose rules check them all themselves (Kafka) says
    #: ``authenticates`` instead. Other types are refused, but the VPC ones.
    access: frozenset[str] = frozenset()
    authenticates: bool = False
    # --- delivery ---------------------------------------------------------------------------
    #: failed records go back to the source (SQS visibility, MQ redelivery) instead of
    #: being retried in place, and no OnFailure destination applies
    redelivery: bool = False
    #: one record over the 6 MB cap: "skip" it (counted dropped, as AWS does for Kafka and
    #: MQ) or "give_up" to the OnFailure destination (streams)
    oversize: Literal["skip", "give_up"] = "give_up"
    iterator_age: bool = False  # reports esm_iterator_age_milliseconds
    #: AWS: with an OnFailure destination, MaximumRetryAttempts -1 means this many (Kafka)
    retries_with_destination: int | None = None


def _kafka_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    from service.sources.kafka_access import access_errors
    from service.sources.schema_rules import schema_registry_errors

    if not m.Topics:
        yield "Topics", "a Kafka mapping needs exactly one topic"
    msk = m.SelfManagedEventSource is None
    pollers = m.ProvisionedPollerConfig
    if pollers is not None and pollers.MaximumPollers > 2000:
        yield "ProvisionedPollerConfig.MaximumPollers", "Kafka mappings allow at most 2,000 (AWS)"
    if msk and m.KafkaTls is not None:
        yield "KafkaTls", "for self-managed Kafka only: MSK's broker string decides"
    yield from access_errors(m, msk)
    yield from schema_registry_errors(m)
    if m.poller_group is not None and m.schema_registry is not None:
        # a group's shared poller builds plain records; decoding there is not built yet
        yield (
            "ProvisionedPollerConfig.PollerGroupName",
            "esmd does not yet decode schema-registry records in a poller group: leave out "
            "PollerGroupName or SchemaRegistryConfig",
        )
    dest = m.on_failure_destination or ""
    if dest.startswith("kafka://") and dest.removeprefix("kafka://") in (m.Topics or []):
        yield (
            "DestinationConfig.OnFailure.Destination",
            ("the Kafka destination topic cannot be the source topic"),
        )


def _sqs_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    if (m.BatchSize or 0) > 10 and (m.MaximumBatchingWindowInSeconds or 0) < 1:
        yield "BatchSize", "above 10 an SQS mapping needs MaximumBatchingWindowInSeconds >= 1"
    if (m.EventSourceArn or "").endswith(".fifo") and (m.BatchSize or 0) > 10:
        yield "BatchSize", "a FIFO queue allows at most 10"
    yield from _sqs_scaling_rules(m)
    if m.poller_group is not None:
        yield "ProvisionedPollerConfig.PollerGroupName", "poller groups are for Kafka (AWS)"
    if m.on_failure_destination is not None:
        why = "failed messages return to the queue and its redrive policy (a DLQ) applies"
        yield (
            "DestinationConfig.OnFailure.Destination",
            (f"SQS mappings have no OnFailure destination: {why}"),
        )


def _sqs_scaling_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """AWS's SQS provisioned mode: 2 to 200 minimum pollers, 2 to 10,000 maximum (the API
    reference's ProvisionedPollerConfig), and never with ScalingConfig (they are the two
    exclusive ways to size an SQS mapping). ``{}`` is on demand."""
    pollers = m.ProvisionedPollerConfig
    if pollers is None or not pollers.model_fields_set:
        return
    given = pollers.model_fields_set
    if "MinimumPollers" in given and pollers.MinimumPollers < 2:
        yield "ProvisionedPollerConfig.MinimumPollers", "SQS mappings need at least 2 (AWS)"
    if pollers.MaximumPollers < max(2, pollers.MinimumPollers):
        yield (
            "ProvisionedPollerConfig.MaximumPollers",
            "must be at least 2 and at least MinimumPollers (SQS's MinimumPollers default is 2)",
        )
    if m.ScalingConfig is not None:
        yield (
            "ScalingConfig",
            "an SQS mapping takes ScalingConfig (on demand) or ProvisionedPollerConfig "
            "(provisioned mode), not both, as AWS requires",
        )


def _documentdb_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """AWS's DocumentDB mappings: a cluster ARN, a database; no filtering, and the batch is
    retried until it succeeds (no retry limit, record age, bisection, partial batch
    responses or OnFailure destination: the API reference lists those for other sources)."""
    arn = m.EventSourceArn or ""
    if not arn.split(":", 5)[-1].startswith("cluster:"):
        yield "EventSourceArn", "not a DocumentDB cluster: arn:aws:rds:<region>:<acct>:cluster:<id>"
    if m.DocumentDBEventSourceConfig is None:
        yield "DocumentDBEventSourceConfig", "required for DocumentDB (DatabaseName at least)"
    if m.FilterCriteria is not None:
        yield "FilterCriteria", "Lambda does not filter DocumentDB events; nor does esmd"
    retried = "DocumentDB batches are retried until they succeed (AWS)"
    if m.MaximumRetryAttempts != -1:
        yield "MaximumRetryAttempts", f"not for DocumentDB: {retried}"
    if m.MaximumRecordAgeInSeconds != -1:
        yield "MaximumRecordAgeInSeconds", f"not for DocumentDB: {retried}"
    if m.BisectBatchOnFunctionError:
        yield "BisectBatchOnFunctionError", f"not for DocumentDB: {retried}"
    if m.FunctionResponseTypes:
        yield "FunctionResponseTypes", "DocumentDB mappings take no partial batch responses"
    if m.on_failure_destination is not None:
        yield "DestinationConfig.OnFailure.Destination", f"DocumentDB has none: {retried}"


def _mq_rules(m: MappingConfig) -> Iterator[tuple[str, str]]:
    """AWS's Amazon MQ mappings (the API reference and "Using Lambda with Amazon MQ"): a broker
    ARN, exactly one queue, BASIC_AUTH required (VIRTUAL_HOST: RabbitMQ's), no
    StartingPosition; a failed batch goes back to the broker, whose redelivery policy and
    dead-letter queue apply, so there are no retries in place, record age, bisection, partial
    batch responses or OnFailure destination (DestinationConfig is for streams and Kafka)."""
    from service.sources.mq_access import access_errors

    arn = m.EventSourceArn or ""
    if not arn.split(":", 5)[-1].startswith("broker:") or len(arn.split(":")) != 8:
        yield "EventSourceArn", "not an MQ broker: arn:aws:mq:<region>:<acct>:broker:<name>:<id>"
    if not m.Queues or len(m.Queues) != 1:
        yield "Queues", "an Amazon MQ mapping needs exactly one queue"
    elif not 1 <= len(m.Queues[0]) <= 1000:
        yield "Queues", "a queue name has 1 to 1000 characters"
    yield from access_errors(m)
    redelivered = "a failed batch goes back to the broker, whose redelivery policy applies"
    if m.MaximumRetryAttempts != -1:
        yield "MaximumRetryAttempts", f"not for Amazon MQ: {redelivered}"
    if m.MaximumRecordAgeInSeconds != -1:
        yield "MaximumRecordAgeInSeconds", f"not for Amazon MQ: {redelivered}"
    if m.BisectBatchOnFunctionError:
        yield "BisectBatchOnFunctionError", f"not for Amazon MQ: {redelivered}"
    if m.FunctionResponseTypes:
        yield "FunctionResponseTypes", "Amazon MQ mappings take no partial batch responses"
    if m.on_failure_destination is not None:
        yield (
            "DestinationConfig.OnFailure.Destination",
            f"Amazon MQ mappings have none: {redelivered} and its dead-letter queue",
        )


_KAFKA_PROPERTIES = frozenset(
    {
        "Topics",
        "ProvisionedPollerConfig",
        "LoggingConfig",
        "MetricsConfig.ErrorCount",
        "MetricsConfig.KafkaMetrics",
        "KafkaTls",
    }
)
_STREAM_PROPERTIES = frozenset({"ParallelizationFactor", "TumblingWindowInSeconds"})
_KAFKA = {
    "title": "Kafka",
    "poller": "service.sources.kafka_groups:kafka_source",
    "traits": KAFKA,
    "window_seconds": 0.5,
    "starting_positions": ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
    "properties": _KAFKA_PROPERTIES,
    "destinations": frozenset({"sqs", "sns", "s3", "kafka"}),
    "rules": _kafka_rules,
    "authenticates": True,
    "oversize": "skip",
    "retries_with_destination": 10,
}
SOURCES: dict[SourceKind, SourceEntry] = {
    SourceKind.KAFKA: SourceEntry(**_KAFKA),  # type: ignore[arg-type]
    SourceKind.MSK: SourceEntry(**_KAFKA),  # type: ignore[arg-type]
    SourceKind.SQS: SourceEntry(
        "SQS",
        "service.sources.sqs:SqsPoller",
        SQS,
        batch_size=10,
        properties=frozenset({"ScalingConfig", "ProvisionedPollerConfig"}),
        rules=_sqs_rules,
        redelivery=True,
    ),
    SourceKind.KINESIS: SourceEntry(
        "Kinesis",
        "service.sources.kinesis:KinesisPoller",
        KINESIS,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        properties=_STREAM_PROPERTIES,
        destinations=frozenset({"sqs", "sns", "s3"}),
        iterator_age=True,
    ),
    SourceKind.DYNAMODB: SourceEntry(
        "DynamoDB Streams",
        "service.sources.dynamodb:DynamoDBPoller",
        DYNAMODB,
        starting_positions=("TRIM_HORIZON", "LATEST"),
        properties=_STREAM_PROPERTIES,
        destinations=frozenset({"sqs", "sns", "s3"}),
        iterator_age=True,
    ),
    SourceKind.DOCUMENTDB: SourceEntry(
        "DocumentDB",
        "service.sources.documentdb:DocumentDBPoller",
        DOCUMENTDB,
        window_seconds=0.5,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        properties=frozenset({"DocumentDBEventSourceConfig"}),
        rules=_documentdb_rules,
        access=frozenset({"BASIC_AUTH"}),
        oversize="skip",  # AWS drops it and counts OversizedRecordCount
        # IteratorAge: the poller sets it as batches settle (the event has no "Records")
    ),
    SourceKind.MQ: SourceEntry(
        "Amazon MQ",
        "service.sources.mq:MqPoller",
        MQ,
        batch_size=100,  # at most 10,000 (the model's bound)
        window_seconds=0.5,
        properties=frozenset({"Queues", "ScalingConfig"}),  # ScalingConfig: esmd's own
        rules=_mq_rules,
        authenticates=True,  # BASIC_AUTH and VIRTUAL_HOST: checked by _mq_rules
        redelivery=True,  # the whole batch goes back to the broker on a function error
        oversize="skip",  # AWS drops a record over 6 MB
    ),
}
#: kinds AWS has and esmd does not yet: refused by validation, with this name
PLANNED: dict[SourceKind, str] = {}


def owners(prop: str) -> str:
    """The kinds that have an optional property (or, ``destination:<kind>``, may send to an
    OnFailure destination of that kind), for messages: "Kinesis and DynamoDB Streams"; "no"
    when none esmd runs has it."""
    destination = prop.removeprefix("destination:")
    titles = list(
        dict.fromkeys(
            e.title
            for e in SOURCES.values()
            if prop in e.properties or (destination != prop and destination in e.destinations)
        )
    )
    if not titles:
        return "no"
    return " and ".join([", ".join(titles[:-1]), titles[-1]] if len(titles) > 1 else titles)


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
