"""What error handling needs to know about one source's Lambda records: their age (for
MaximumRecordAgeInSeconds) and how a ReportBatchItemFailures response names them.

- Kafka: age from the record's ``timestamp`` (ms); ``itemIdentifier`` is
  ``{"partition": "<topic>-<partition>", "offset": <offset>}`` (Powertools' KafkaItemIdentifier).
- Kinesis: ``kinesis.approximateArrivalTimestamp``; ``itemIdentifier`` is the sequence number.
- DynamoDB Streams: ``dynamodb.ApproximateCreationDateTime``; the ``SequenceNumber``.
- SQS: no record age (the queue's retention applies); ``itemIdentifier`` is the ``messageId``.
- Amazon MQ: no record age (the broker's redelivery policy applies) and no
  ReportBatchItemFailures; a message's id (ActiveMQ ``messageID``, RabbitMQ
  ``basicProperties.messageId``) only names it in logs.
- DocumentDB: ``event.clusterTime`` (``{"$timestamp": {"t": seconds, "i": n}}``); Lambda takes
  no ReportBatchItemFailures for DocumentDB, so the resume token ``event._id._data`` only
  names a record in logs.

One parser for every source (:meth:`RecordTraits.failed_indexes`), AWS's rules: no response,
no ``batchItemFailures``, ``null`` or an empty list is complete success; an identifier that is
missing, empty, malformed or not in the batch fails the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


def _no_age(record: dict[str, Any]) -> float:
    return float("inf")


@dataclass(frozen=True, slots=True)
class RecordTraits:
    item_id: Callable[[dict[str, Any]], Hashable]  # a record's identity in a response
    parse_id: Callable[[Any], Hashable | None]  # an itemIdentifier; None: malformed
    created_at: Callable[[dict[str, Any]], float] = _no_age  # seconds since the epoch
    has_age: bool = True

    def failed_indexes(self, payload: Any, records: list[dict[str, Any]]) -> list[int] | None:
        """Indexes of the records a response names as failed, ascending (``[]``: none);
        None: the response is malformed and the whole batch failed."""
        if not isinstance(payload, dict):
            return []
        failures = payload.get("batchItemFailures")
        if failures is None:
            return []
        if not isinstance(failures, list):
            return None
        if not failures:
            return []
        index = {self.item_id(r): i for i, r in enumerate(records)}
        found: set[int] = set()
        for item in failures:
            ident = self.parse_id(item.get("itemIdentifier") if isinstance(item, dict) else None)
            at = index.get(ident) if ident is not None else None
            if at is None:
                return None
            found.add(at)
        return sorted(found)


def _kafka_id(ident: Any) -> Hashable | None:
    if not isinstance(ident, dict):
        return None
    partition, offset = ident.get("partition"), ident.get("offset")
    if not isinstance(partition, str) or not partition:
        return None
    if isinstance(offset, bool) or not isinstance(offset, int):
        return None
    return (partition, offset)


def _string_id(ident: Any) -> Hashable | None:
    return ident if isinstance(ident, str) and ident else None


KAFKA = RecordTraits(
    item_id=lambda r: (f"{r['topic']}-{r['partition']}", r["offset"]),
    parse_id=_kafka_id,
    created_at=lambda r: float(r["timestamp"]) / 1000,
)
KINESIS = RecordTraits(
    item_id=lambda r: r["kinesis"]["sequenceNumber"],
    parse_id=_string_id,
    created_at=lambda r: float(r["kinesis"]["approximateArrivalTimestamp"]),
)
DYNAMODB = RecordTraits(
    item_id=lambda r: r["dynamodb"]["SequenceNumber"],
    parse_id=_string_id,
    created_at=lambda r: float(r["dynamodb"]["ApproximateCreationDateTime"]),
)
SQS = RecordTraits(item_id=lambda r: r["messageId"], parse_id=_string_id, has_age=False)


def _cluster_seconds(record: dict[str, Any]) -> float:
    stamp = record["event"].get("clusterTime")
    if isinstance(stamp, dict) and isinstance(stamp.get("$timestamp"), dict):
        return float(stamp["$timestamp"].get("t", 0))
    return float("inf")  # no clusterTime (not a change event): never too old


DOCUMENTDB = RecordTraits(
    item_id=lambda r: str(r["event"]["_id"].get("_data", r["event"]["_id"])),
    parse_id=_string_id,
    created_at=_cluster_seconds,
)


def _mq_id(record: dict[str, Any]) -> Hashable:
    properties = record.get("basicProperties") or {}
    return str(record.get("messageID") or properties.get("messageId") or "")


MQ = RecordTraits(item_id=_mq_id, parse_id=_string_id, has_age=False)
