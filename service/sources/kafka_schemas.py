"""Kafka records decoded with the mapping's schema registry, before filtering and delivery.

The poller hands each fetched chunk to a :class:`RecordDecoder` before its lane sees it:

- the KEY and VALUE named by SchemaValidationConfigs are decoded
  (service/sources/schema_formats.py) with schemas from the registry, cached by id;
- EventRecordFormat JSON delivers the decoded object as JSON (base64, as Lambda does),
  SOURCE the original payload without the schema header; filters see the decoded object
  either way; the record gains ``keySchemaMetadata`` / ``valueSchemaMetadata``
  (``{"dataFormat": "AVRO", "schemaId": "42"}``);
- a record that cannot be decoded is given up before the lane gets the chunk (the OnFailure
  destination, else counted dropped and logged); the lane then skips it, so the checkpoint
  only passes it once it was handed over;
- a registry that cannot be reached is retried with backoff, each failure counted in
  ``esm_errors_total{kind="schema_registry"}``; the chunk waits meanwhile, so nothing at or
  after it is committed. A stop during the wait leaves the chunk unread (read again later).

Mappings without a registry never import this module: their hot path is unchanged.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka.structs import ConsumerRecord

from service.destinations.records import SCHEMA_DECODING_FAILED, Failure
from service.filters import parse_payload
from service.invoke import Backoff
from service.lane import Codec, Kept
from service.sources.schema_formats import Decoded, UndecodableRecord, schema_id
from service.sources.schema_registry import RegistryUnavailable, SchemaRegistry

if TYPE_CHECKING:
    from service.config import KafkaSchemaRegistryConfig
    from service.context import MappingContext
    from service.filters import FilterCriteria

_b64 = binascii.b2a_base64
#: a fetched record as Lambda delivers it, with its size (service.sources.kafka's)
ToRecord = Callable[[ConsumerRecord[bytes, bytes]], tuple[dict[str, Any], int]]
#: AWS's requestContext.condition for a record given up because it could not be decoded
#: (esmd's name: AWS's documentation names none)
CONDITION = SCHEMA_DECODING_FAILED


@dataclass(slots=True)
class SchemaRecord:
    """A fetched record with its decoded key and value (None: delivered as fetched)."""

    raw: ConsumerRecord[bytes, bytes]
    key: Decoded | None = None
    value: Decoded | None = None
    failed: str | None = None  # why it could not be decoded: given up, not delivered


class RecordDecoder:
    """Decodes fetched chunks for one mapping (all its pollers and partitions)."""

    def __init__(
        self,
        mapping: MappingContext,
        registry: SchemaRegistry,
        config: KafkaSchemaRegistryConfig,
        to_record: ToRecord,
    ) -> None:
        self._mapping = mapping
        self._to_record = to_record
        self._registry = registry
        self._attributes = config.attributes
        self._source_format = config.EventRecordFormat == "SOURCE"
        self._backoff = Backoff(
            mapping.esmd.retry.initial_backoff_seconds, mapping.esmd.retry.max_backoff_seconds
        )
        self._log = structlog.get_logger("esmd.kafka").bind(mapping=mapping.name)

    def codec(self, plain: Codec) -> SchemaCodec:
        """The codec of one partition's lane for the records this decoder makes, around the
        partition's plain Kafka codec (its envelope and events)."""
        return SchemaCodec(plain, self._to_record, self._source_format)

    async def close(self) -> None:
        await self._registry.close()

    async def decode(
        self, raws: Sequence[ConsumerRecord[bytes, bytes]], stopping: asyncio.Event
    ) -> list[SchemaRecord] | None:
        """The chunk decoded, undecodable records already given up; None when a stop came
        first (nothing of the chunk may be acknowledged)."""
        out = []
        for raw in raws:
            record = await self._decode_one(raw, stopping)
            if record is None:
                return None
            out.append(record)
        for record in out:
            if record.failed is not None and not await self._give_up(record):
                return None
        return out

    async def _decode_one(
        self, raw: ConsumerRecord[bytes, bytes], stopping: asyncio.Event
    ) -> SchemaRecord | None:
        record = SchemaRecord(raw)
        try:
            if "KEY" in self._attributes and raw.key is not None:
                record.key = await self._field(raw.key, stopping)
            if "VALUE" in self._attributes and raw.value is not None:
                record.value = await self._field(raw.value, stopping)
        except UndecodableRecord as exc:
            record.failed = str(exc)
        except _Stopped:
            return None
        return record

    async def _field(self, data: bytes, stopping: asyncio.Event) -> Decoded:
        found = schema_id(data)
        cached = self._registry.cached(found)
        if cached is not None:  # the usual case: no wait, no task
            return cached.decode(data, found)
        failures = 0
        while True:
            try:
                schema = await self._registry.schema(found)
                break
            except RegistryUnavailable as exc:
                self._mapping.metrics.error("schema_registry")
                wait = self._backoff.delay(failures)
                failures += 1
                self._log.warning(
                    "schema registry unavailable", error=str(exc), retry_in=round(wait, 2)
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stopping.wait()
                if stopping.is_set():
                    raise _Stopped from None
        return schema.decode(data, found)

    async def _give_up(self, record: SchemaRecord) -> bool:
        """To the OnFailure destination (or dropped): False when a stop came first."""
        from service.destinations import DestinationUnavailable

        raw = record.raw
        self._log.error(
            "record cannot be decoded",
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            error=record.failed,
        )
        failure = Failure(CONDITION, 0, None, 200, record.failed)
        try:
            await self._mapping.policy.give_up([self._to_record(raw)[0]], failure)
        except DestinationUnavailable:
            return False
        return True


class _Stopped(Exception):
    """The mapping stopped while the registry was being retried."""


class SchemaCodec:
    """The lane codec for SchemaRecords: delivers decoded payloads with their schema
    metadata; filters see the decoded objects; undecodable records (already given up) are
    skipped. Events are the partition's plain Kafka codec's."""

    def __init__(self, plain: Codec, to_record: ToRecord, source_format: bool) -> None:
        self._plain = plain
        self._to_record = to_record
        self._source_format = source_format
        self.envelope_bytes = plain.envelope_bytes

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return self._plain.make_event(records)

    def position(self, raw: Any) -> int:
        return int(raw.raw.offset)

    def decode(
        self, raws: Sequence[Any], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        kept: list[Kept] = []
        filtered: list[Any] = []
        for record in raws:
            if record.failed is not None:
                continue
            if filters is not None and not filters.matcher(self._view(record, filters)):
                filtered.append(record)
                continue
            kept.append((*self._lambda_record(record), record.raw.offset))
        return kept, filtered, raws[-1].raw.offset + 1

    def _view(self, record: SchemaRecord, filters: FilterCriteria) -> dict[str, Any]:
        """The filter view: the decoded value as JSON would deliver it (Avro's dates and
        bytes already turned to JSON), else the payload parsed as for any Kafka record."""
        decoded = record.value
        if decoded is None:
            value = parse_payload(record.raw.value)
        elif decoded.json_native:
            value = decoded.value
        else:  # Avro's bytes, dates, decimals: as the JSON delivered shows them
            value = parse_payload(decoded.json_bytes())
        if filters.keys == {"value"}:
            return {"value": value}
        return {**self._lambda_record(record)[0], "value": value}

    def _lambda_record(self, record: SchemaRecord) -> tuple[dict[str, Any], int]:
        out, size = self._to_record(record.raw)
        for name, decoded in (("key", record.key), ("value", record.value)):
            if decoded is None:
                continue
            data = decoded.source if self._source_format else decoded.json_bytes()
            text = _b64(data, newline=False).decode()
            size += len(text) - len(out[name])
            out[name] = text
            out[f"{name}SchemaMetadata"] = meta = {
                "dataFormat": decoded.data_format,
                "schemaId": str(decoded.schema_id),
            }
            size += 40 + len(meta["schemaId"])
        return out, size


__all__ = ["CONDITION", "RecordDecoder", "SchemaCodec", "SchemaRecord"]
