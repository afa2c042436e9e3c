"""Schema registry helpers for the integration tests: register schemas, frame payloads.

Registration uses Confluent's REST API (``POST /subjects/<subject>/versions``), which
Apicurio's ``/apis/ccompat/v7`` and every Confluent-compatible registry answer, so the same
tests run against any of them: the ``schema_registry`` fixture (tests/conftest.py) names one.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import aiohttp
import fastavro
import orjson
from google.protobuf import message_factory

from service.sources.schema_formats import ProtobufSchema, compile_schema

ORDER_AVRO = orjson.dumps(
    {
        "type": "record",
        "name": "Order",
        "namespace": "shop",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "int"},
            {"name": "status", "type": "string"},
        ],
    }
).decode()
ORDER_PROTO = """syntax = "proto3";
package shop;
message Ping { int32 n = 1; }
message Order {
  string id = 1;
  int32 amount = 2;
  string status = 3;
}
"""
ORDER_JSON = orjson.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "amount": {"type": "integer"},
            "status": {"type": "string"},
        },
        "required": ["id", "amount", "status"],
    }
).decode()
SCHEMAS = {"AVRO": ORDER_AVRO, "PROTOBUF": ORDER_PROTO, "JSON": ORDER_JSON}


async def register(registry: str, subject: str, schema_type: str) -> int:
    """Register the Order schema of ``schema_type`` under ``subject``; its global id."""
    body: dict[str, Any] = {"schema": SCHEMAS[schema_type]}
    if schema_type != "AVRO":
        body["schemaType"] = schema_type
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{registry}/subjects/{subject}/versions",
            data=orjson.dumps(body),
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return int((await resp.json(content_type=None))["id"])


def encode(schema_type: str, schema_id: int, order: dict[str, Any]) -> tuple[bytes, bytes]:
    """(the framed record, its payload without the header) as a Confluent serializer writes
    them: magic byte, schema id, Protobuf's message indexes, the payload."""
    header = b"\x00" + struct.pack(">I", schema_id)
    if schema_type == "AVRO":
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(orjson.loads(ORDER_AVRO)), order)
        body = out.getvalue()
    elif schema_type == "PROTOBUF":
        schema = compile_schema("PROTOBUF", ORDER_PROTO)
        assert isinstance(schema, ProtobufSchema)
        order_type = schema._top[1]  # the second message: indexes [1]
        body = message_factory.GetMessageClass(order_type)(**order).SerializeToString()
        header += b"\x02\x02"  # zigzag varints: one index, 1
    else:
        body = orjson.dumps(order)
    return header + body, body
