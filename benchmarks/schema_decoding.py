"""What decoding with a schema registry costs per record, against plain JSON and against the
decoding libraries alone, in the same run.

For N order records (8 fields, ~200 bytes as JSON) it times, per format:
  - plain: today's path for a JSON value, KafkaCodec with a filter on the value (baseline);
  - esmd: RecordDecoder.decode (schema id, cached schema, decode) then SchemaCodec.decode with
    the same filter, EventRecordFormat JSON: what a lane does to a fetched chunk;
  - library: the library's own decode loop alone (fastavro.schemaless_reader; protobuf's
    ParseFromString + MessageToDict; orjson.loads + jsonschema's validator), the floor.
No broker and no registry calls (the schema cache is filled first): the figures are this
process's CPU time per record (time.process_time, so other processes on a busy machine
weigh less). Rounds alternate the variants; the median of the rounds is printed.

    python benchmarks/schema_decoding.py --records 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import struct
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import orjson
from aiokafka.structs import ConsumerRecord
from google.protobuf import json_format, message_factory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import KafkaSchemaRegistryConfig, RetryConfig
from service.filters import FilterCriteria
from service.sources.kafka import KafkaCodec, lambda_record
from service.sources.kafka_schemas import RecordDecoder
from service.sources.schema_formats import ProtobufSchema, compile_schema
from service.sources.schema_registry import SchemaRegistry

FIELDS = ("id", "customer", "status", "currency", "sku", "note")
AVRO = orjson.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [{"name": f, "type": "string"} for f in FIELDS]
        + [{"name": "amount", "type": "int"}, {"name": "quantity", "type": "int"}],
    }
).decode()
PROTO = (
    'syntax = "proto3";\nmessage Order {\n'
    + "".join(f"  string {f} = {i + 1};\n" for i, f in enumerate(FIELDS))
    + "  int32 amount = 7;\n  int32 quantity = 8;\n}\n"
)
JSON_SCHEMA = orjson.dumps(
    {
        "type": "object",
        "properties": {**{f: {"type": "string"} for f in FIELDS}, "amount": {"type": "integer"}},
        "required": ["id", "amount"],
    }
).decode()
FILTER = FilterCriteria.parse(
    {"Filters": [{"Pattern": '{"value": {"status": ["PAID"], "amount": [{"numeric": [">", 0]}]}}'}]}
)


def order(i: int) -> dict[str, Any]:
    values = {f: f"{f}-{i % 97:04d}" for f in FIELDS}
    return {**values, "status": "PAID", "amount": 1 + i % 500, "quantity": 1 + i % 7}


def framed(schema_id: int, body: bytes, indexes: bytes = b"") -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + indexes + body


def payloads(n: int) -> dict[str, list[bytes]]:
    """Each format's framed records; ``plain`` is the same orders as bare JSON."""
    avro = fastavro.parse_schema(orjson.loads(AVRO))
    proto = compile_schema("PROTOBUF", PROTO)
    assert isinstance(proto, ProtobufSchema)
    order_class = message_factory.GetMessageClass(proto._top[0])
    out: dict[str, list[bytes]] = {"plain": [], "AVRO": [], "PROTOBUF": [], "JSON": []}
    for i in range(n):
        value = order(i)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, avro, value)
        out["plain"].append(orjson.dumps(value))
        out["AVRO"].append(framed(1, buf.getvalue()))
        out["PROTOBUF"].append(framed(2, order_class(**value).SerializeToString(), b"\x00"))
        out["JSON"].append(framed(3, orjson.dumps(value)))
    return out


def records(values: list[bytes]) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord("orders", 0, i, 1_700_000_000_000, 0, b"k", v, None, 1, len(v), [])
        for i, v in enumerate(values)
    ]


async def decoder() -> RecordDecoder:
    """A RecordDecoder whose registry already holds the three schemas (never called)."""
    import aiohttp

    registry = SchemaRegistry("http://127.0.0.1:9", aiohttp.ClientSession())
    for schema_id, (kind, text) in enumerate(
        (("AVRO", AVRO), ("PROTOBUF", PROTO), ("JSON", JSON_SCHEMA)), start=1
    ):
        registry._schemas[schema_id] = compile_schema(kind, text)
    config = KafkaSchemaRegistryConfig.model_validate(
        {"SchemaRegistryURI": "http://x", "SchemaValidationConfigs": [{"Attribute": "VALUE"}]}
    )
    mapping: Any = SimpleNamespace(
        name="bench", esmd=SimpleNamespace(retry=RetryConfig()), metrics=None, policy=None
    )
    return RecordDecoder(mapping, registry, config, lambda_record)


def library_loop(kind: str, values: list[bytes]) -> None:
    if kind == "AVRO":
        parsed = fastavro.parse_schema(orjson.loads(AVRO))
        for v in values:
            fastavro.schemaless_reader(io.BytesIO(v[5:]), parsed, None)
    elif kind == "PROTOBUF":
        schema = compile_schema("PROTOBUF", PROTO)
        assert isinstance(schema, ProtobufSchema)
        cls = message_factory.GetMessageClass(schema._top[0])
        for v in values:
            json_format.MessageToDict(cls.FromString(v[6:]), preserving_proto_field_name=True)
    else:
        import jsonschema

        validator = jsonschema.Draft202012Validator(orjson.loads(JSON_SCHEMA))
        for v in values:
            validator.validate(orjson.loads(v[5:]))


async def one_round(data: dict[str, list[bytes]], dec: RecordDecoder) -> dict[str, float]:
    n = len(data["plain"])
    rates: dict[str, float] = {}
    plain = KafkaCodec({"eventSource": "SelfManagedKafka"}, "orders", 0)
    raws = records(data["plain"])
    started = time.process_time()
    kept, _, _ = plain.decode(raws, FILTER)
    rates["plain JSON (KafkaCodec)"] = n / (time.process_time() - started)
    assert len(kept) == n
    stopping = asyncio.Event()
    for kind in ("AVRO", "PROTOBUF", "JSON"):
        raws = records(data[kind])
        codec = dec.codec(plain)
        started = time.process_time()
        decoded = await dec.decode(raws, stopping)
        assert decoded is not None
        kept, _, _ = codec.decode(decoded, FILTER)
        rates[f"{kind} esmd"] = n / (time.process_time() - started)
        assert len(kept) == n, kind
        started = time.process_time()
        library_loop(kind, data[kind])
        rates[f"{kind} library alone"] = n / (time.process_time() - started)
    return rates


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = payloads(args.records)
    dec = await decoder()
    rounds = [await one_round(data, dec) for _ in range(args.rounds)]
    print(f"{args.records} records, {args.rounds} rounds; load {os.getloadavg()[0]:.2f}")
    baseline = statistics.median(r["plain JSON (KafkaCodec)"] for r in rounds)
    for name in rounds[0]:
        rate = statistics.median(r[name] for r in rounds)
        low, high = min(r[name] for r in rounds), max(r[name] for r in rounds)
        print(
            f"  {name:26s} {rate / 1000:8.1f} k records/s  ({low / 1000:.1f}-{high / 1000:.1f};"
            f" {rate / baseline:.2f}x plain JSON)"
        )
    await dec.close()


if __name__ == "__main__":
    asyncio.run(main())
