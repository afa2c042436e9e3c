"""What error handling needs to know about one source's Lambda records: their age (for
MaximumRecordAgeInSeconds) and how a ReportBatchItemFailures response names them.

- Kafka: age from the record's ``timestamp`` (ms); ``itemIdentifier`` is
  ``{"partition": "<topic>-<partition>", "offset": <offset>}`` (Powertools' KafkaItemIdentifier).
- Kinesis: ``kinesis.approximateArrivalTimestamp``; ``itemIdentifier`` is the sequence number.
- DynamoDB Streams: ``dynamodb.ApproximateCreationDateTime``; the ``SequenceNumber``.

For streams and Kafka AWS retries from the *lowest* failed record: everything before it
succeeded. An identifier that is missing, empty, malformed or not in the batch fails the
whole batch; no ``batchItemFailures`` (or an empty list) is complete success.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from service.config import SourceKind


@dataclass(frozen=True, slots=True)
class RecordTraits:
    created_at: Callable[[dict[str, Any]], float]  # seconds since the epoch
    item_id: Callable[[dict[str, Any]], Hashable]  # a record's identity in a response
    parse_id: Callable[[Any], Hashable | None]  # an itemIdentifier; None: malformed

    def first_failed(self, payload: Any, records: list[dict[str, Any]]) -> int | None:
        """Index of the first record to retry (``len(records)``: none); None: the whole
        batch failed (a malformed response)."""
        if not isinstance(payload, dict):
            return len(records)
        failures = payload.get("batchItemFailures")
        if failures is None:
            return len(records)
        if not isinstance(failures, list):
            return None
        index = {self.item_id(r): i for i, r in enumerate(records)}
        first = len(records)
        for item in failures:
            ident = self.parse_id(item.get("itemIdentifier") if isinstance(item, dict) else None)
            found = index.get(ident) if ident is not None else None
            if found is None:
                return None
            first = min(first, found)
        return first


def _kafka_id(ident: Any) -> Hashable | None:
    if not isinstance(ident, dict):
        return None
    partition, offset = ident.get("partition"), ident.get("offset")
    if not isinstance(partition, str) or not partition:
        return None
    if isinstance(offset, bool) or not isinstance(offset, int):
        return None
    return (partition, offset)


def _sequence_id(ident: Any) -> Hashable | None:
    return ident if isinstance(ident, str) and ident else None


KAFKA = RecordTraits(
    created_at=lambda r: float(r["timestamp"]) / 1000,
    item_id=lambda r: (f"{r['topic']}-{r['partition']}", r["offset"]),
    parse_id=_kafka_id,
)
KINESIS = RecordTraits(
    created_at=lambda r: float(r["kinesis"]["approximateArrivalTimestamp"]),
    item_id=lambda r: r["kinesis"]["sequenceNumber"],
    parse_id=_sequence_id,
)
DYNAMODB = RecordTraits(
    created_at=lambda r: float(r["dynamodb"]["ApproximateCreationDateTime"]),
    item_id=lambda r: r["dynamodb"]["SequenceNumber"],
    parse_id=_sequence_id,
)


def traits_for(kind: SourceKind) -> RecordTraits | None:
    """The traits of an ordered source (Kafka, streams); None for SQS and MQ."""
    if kind.is_kafka:
        return KAFKA
    return {SourceKind.KINESIS: KINESIS, SourceKind.DYNAMODB: DYNAMODB}.get(kind)
