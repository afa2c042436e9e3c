"""Schema registries, without servers: the wire format and the three decoders, the config
rules (provisioned mode, Glue ARNs, access configs), and the lane codec's record shape."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from google.protobuf import message_factory

from service.config import ConfigError, parse_config
from service.filters import FilterCriteria
from service.sources.kafka import KafkaCodec, lambda_record
from service.sources.kafka_schemas import SchemaCodec, SchemaRecord
from service.sources.schema_formats import (
    ProtobufSchema,
    UndecodableRecord,
    compile_schema,
    schema_id,
)

AVRO = orjson.dumps(
    {
        "type": "record",
        "name": "Order",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "amount", "type": "int"},
            {"name": "blob", "type": "bytes"},
        ],
    }
).decode()
PROTO = """syntax = "proto3";
package shop;
message Ping { int32 n = 1; }
message Order {
  string id = 1;
  int32 amount = 2;
  message Line { string sku = 1; }
}
"""
JSON_SCHEMA = orjson.dumps(
    {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "required": ["id"],
    }
).decode()


def framed(schema: int, body: bytes, indexes: bytes = b"") -> bytes:
    return b"\x00" + struct.pack(">I", schema) + indexes + body


def avro_bytes(value: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(orjson.loads(AVRO)), value)
    return out.getvalue()


def test_avro_decodes_to_json_and_source() -> None:
    schema = compile_schema("AVRO", AVRO)
    body = avro_bytes({"id": "o-1", "amount": 7, "blob": b"\x01\x02"})
    decoded = schema.decode(framed(12, body), 12)
    assert decoded.value == {"id": "o-1", "amount": 7, "blob": b"\x01\x02"}
    assert decoded.source == body and decoded.data_format == "AVRO"
    assert orjson.loads(decoded.json_bytes()) == {"id": "o-1", "amount": 7, "blob": "AQI="}
    with pytest.raises(UndecodableRecord):
        schema.decode(framed(12, b"\x02"), 12)  # truncated
    with pytest.raises(UndecodableRecord, match="left over"):
        schema.decode(framed(12, body + b"\x00"), 12)


def test_protobuf_message_indexes_pick_the_message_type() -> None:
    schema = compile_schema("PROTOBUF", PROTO)
    assert isinstance(schema, ProtobufSchema)
    ping, order = schema._top
    order_bytes = message_factory.GetMessageClass(order)(id="o", amount=3).SerializeToString()
    ping_bytes = message_factory.GetMessageClass(ping)(n=4).SerializeToString()
    # [1] as count 1, index 1 (zigzag: 2, 2); the first message as a single 0
    assert schema.decode(framed(5, order_bytes, b"\x02\x02"), 5).value == {"id": "o", "amount": 3}
    decoded = schema.decode(framed(5, ping_bytes, b"\x00"), 5)
    assert decoded.value == {"n": 4} and decoded.source == ping_bytes
    with pytest.raises(UndecodableRecord, match="message index"):
        schema.decode(framed(5, ping_bytes, b"\x02\x08"), 5)


def test_json_schema_validates() -> None:
    schema = compile_schema("JSON", JSON_SCHEMA)
    assert schema.decode(framed(3, b'{"id": "a"}'), 3).value == {"id": "a"}
    with pytest.raises(UndecodableRecord, match="required"):
        schema.decode(framed(3, b'{"x": 1}'), 3)
    with pytest.raises(UndecodableRecord, match="not JSON"):
        schema.decode(framed(3, b"{nope"), 3)


def test_bad_headers_and_schemas() -> None:
    with pytest.raises(UndecodableRecord, match="header"):
        schema_id(b'{"plain": "json"}')
    assert schema_id(framed(70000, b"")) == 70000
    with pytest.raises(UndecodableRecord, match="protoc"):
        compile_schema("PROTOBUF", "message {")
    with pytest.raises(UndecodableRecord, match="XML"):
        compile_schema("XML", "<a/>")


# --- config ---------------------------------------------------------------------------------

REGISTRY = {
    "SchemaRegistryURI": "http://127.0.0.1:8080/apis/ccompat/v7",
    "EventRecordFormat": "JSON",
    "SchemaValidationConfigs": [{"Attribute": "VALUE"}],
}


def kafka(registry: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Name": "orders",
        "FunctionName": "f",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:9092"]}},
        "Topics": ["orders"],
        "StartingPosition": "TRIM_HORIZON",
        "SelfManagedKafkaEventSourceConfig": {"SchemaRegistryConfig": registry},
        **extra,
    }


PROVISIONED = {"ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 2}}


def problems(mapping: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [mapping]})
    return [str(p) for p in info.value.problems]


def test_a_registry_needs_provisioned_mode() -> None:
    (found,) = problems(kafka(REGISTRY))
    assert found.startswith(
        "mapping 'orders': SelfManagedKafkaEventSourceConfig.SchemaRegistryConfig: "
    )
    assert "provisioned mode (ProvisionedPollerConfig)" in found
    config = parse_config({"mappings": [kafka(REGISTRY, **PROVISIONED)]})
    registry = config.mappings[0].schema_registry
    assert registry is not None and registry.attributes == {"VALUE"}


def test_a_poller_group_with_a_registry_is_refused_until_the_group_poller_decodes() -> None:
    grouped = {"ProvisionedPollerConfig": {**PROVISIONED["ProvisionedPollerConfig"],
                                           "PollerGroupName": "shop"}}  # fmt: skip
    (found,) = problems(kafka(REGISTRY, **grouped))
    assert found.startswith("mapping 'orders': ProvisionedPollerConfig.PollerGroupName: ")
    assert "SchemaRegistryConfig" in found


def test_glue_arns_pass_validation_and_bad_uris_do_not() -> None:
    glue = {**REGISTRY, "SchemaRegistryURI": "arn:aws:glue:us-east-1:123456789012:registry/shop"}
    parse_config({"mappings": [kafka(glue, **PROVISIONED)]})
    (found,) = problems(kafka({**REGISTRY, "SchemaRegistryURI": "ftp://x"}, **PROVISIONED))
    assert "SchemaRegistryConfig.SchemaRegistryURI: an http:// or https:// URL" in found
    bad_glue = {**REGISTRY, "SchemaRegistryURI": "arn:aws:glue:us-east-1:1:table/x"}
    assert "not a Glue registry ARN" in problems(kafka(bad_glue, **PROVISIONED))[0]


MTLS_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mtls"


def test_access_configs() -> None:
    both = {
        **REGISTRY,
        "AccessConfigs": [
            {"Type": "BASIC_AUTH", "URI": "env:NO_SUCH_VARIABLE_HERE"},
            {"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": MTLS_SECRET},
        ],
    }
    found = problems(kafka(both, **PROVISIONED))
    unset = "AccessConfigs[0].URI: environment variable NO_SUCH_VARIABLE_HERE"
    assert any(unset in p for p in found)
    assert any("AccessConfigs[1].Type: BASIC_AUTH and CLIENT_CERTIFICATE" in p for p in found)
    no_attribute = {**REGISTRY, "SchemaValidationConfigs": []}
    assert "SchemaValidationConfigs" in problems(kafka(no_attribute, **PROVISIONED))[0]


# --- the lane codec -------------------------------------------------------------------------


def consumer_record(offset: int, key: bytes | None, value: bytes | None) -> Any:
    return ConsumerRecord(
        "orders", 0, offset, 1_700_000_000_000, 0, key, value, None, 1, 1, [("h", b"\x01")]
    )


def test_codec_delivers_json_or_source_with_metadata_and_filters_decoded_values() -> None:
    schema = compile_schema("AVRO", AVRO)
    body = avro_bytes({"id": "o-1", "amount": 7, "blob": b""})
    cheap = avro_bytes({"id": "o-2", "amount": 1, "blob": b""})

    def decode(body: bytes) -> Any:
        return schema.decode(framed(9, body), 9)

    records = [
        SchemaRecord(consumer_record(0, b"k", framed(9, body)), value=decode(body)),
        SchemaRecord(consumer_record(1, b"k", b"junk"), failed="no header"),
        SchemaRecord(consumer_record(2, None, framed(9, cheap)), value=decode(cheap)),
    ]
    plain = KafkaCodec({"eventSource": "SelfManagedKafka"}, "orders", 0)
    filters = FilterCriteria.parse({"Filters": [{"Pattern": '{"value": {"amount": [7]}}'}]})

    as_json = SchemaCodec(plain, lambda_record, source_format=False)
    kept, filtered, end = as_json.decode(records, filters)
    assert end == 3 and [r.raw.offset for r in filtered] == [2]  # the undecodable one: skipped
    ((record, size, position),) = kept
    assert position == 0
    assert orjson.loads(base64.b64decode(record["value"])) == {"id": "o-1", "amount": 7, "blob": ""}
    assert record["key"] == base64.b64encode(b"k").decode()  # KEY not configured: as fetched
    assert record["valueSchemaMetadata"] == {"dataFormat": "AVRO", "schemaId": "9"}
    assert "keySchemaMetadata" not in record
    assert size >= len(orjson.dumps(record)) - 20

    as_source = SchemaCodec(plain, lambda_record, source_format=True)
    kept, filtered, _ = as_source.decode(records, None)
    assert [base64.b64decode(k[0]["value"]) for k in kept] == [body, cheap]
    assert as_source.make_event([kept[0][0]])["records"] == {"orders-0": [kept[0][0]]}


# --- the ESM API ----------------------------------------------------------------------------


async def test_the_api_takes_schema_registry_config_and_applies_the_same_rules(
    tmp_path: Path,
) -> None:
    from service.api.control import Control
    from service.api.shapes import ApiError
    from service.api.store import SqliteMappingStore
    from tests.unit.test_api_control import FakeRunner, esmd

    ctl = Control(esmd, FakeRunner(), SqliteMappingStore(str(tmp_path / "api.db")))
    await ctl.open([], sync_seconds=3600)
    request = {**kafka(REGISTRY), "FunctionName": "f"}
    del request["Name"]
    with pytest.raises(ApiError, match="SchemaRegistryConfig") as caught:
        await ctl.create(request)
    assert caught.value.code == "InvalidParameterValueException"
    made = await ctl.create({**request, **PROVISIONED})
    shown = ctl.get(made["UUID"])["SelfManagedKafkaEventSourceConfig"]
    assert shown["SchemaRegistryConfig"]["SchemaRegistryURI"] == REGISTRY["SchemaRegistryURI"]
    await ctl.close()


def test_registry_errors_never_show_credentials_in_the_url() -> None:
    from service.sources.schema_registry import _redacted

    assert _redacted("https://key:s3cret@registry.example.com/x") == (
        "https://***@registry.example.com/x"
    )
    assert _redacted("http://127.0.0.1:8080/apis/ccompat/v7") == (
        "http://127.0.0.1:8080/apis/ccompat/v7"
    )
