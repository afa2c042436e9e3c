"""Schema-registry payloads: Confluent's wire format and the three schema types' decoders.

A producer using a Confluent-compatible serializer (Confluent's, Apicurio's in ccompat mode)
writes ``0x00`` (the magic byte), the schema's 4-byte big-endian id, then the payload:

- **AVRO**: Avro binary, read with fastavro against the registered schema;
- **PROTOBUF**: the message indexes (a zigzag varint count, then that many zigzag varints;
  a single ``0`` means the file's first message) naming the message type inside the
  registered ``.proto``, then the message, parsed with the protobuf runtime from a
  descriptor that ``protoc`` (grpcio-tools, in process) builds from the ``.proto`` text;
- **JSON** (JSON Schema): UTF-8 JSON, validated with jsonschema against the schema.

A :class:`Schema` is compiled once per id (the registry client caches it): decoding a
record is then one call. Every decoding problem raises :class:`UndecodableRecord`, which
the Kafka source gives up to the OnFailure destination; the registry being unreachable is
another matter (``service.sources.schema_registry``).
"""

from __future__ import annotations

import base64
import decimal
import io
import struct
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MAGIC = 0
HEADER = 5  # magic byte + schema id
#: the registry's schemaType values, and the dataFormat names AWS puts in schema metadata
DATA_FORMATS = {"AVRO": "AVRO", "PROTOBUF": "PROTOBUF", "JSON": "JSON"}


class UndecodableRecord(ValueError):
    """The bytes do not fit the wire format or the schema they name."""


@dataclass(slots=True)
class Decoded:
    """One decoded key or value: the object (filters see it; JSON delivers it), the bytes
    of the payload without the schema header (SOURCE delivers them) and its schema."""

    value: Any
    source: bytes
    data_format: str
    schema_id: int
    #: ``value`` holds JSON's types only (dict, list, str, int, float, bool, None): filters
    #: may read it as it is, without a round trip through JSON text
    json_native: bool = True
    _json: bytes | None = None

    def json_bytes(self) -> bytes:
        """The object as JSON, made once (a filter and the event both need it)."""
        if self._json is None:
            self._json = orjson.dumps(self.value, default=_json_default)
        return self._json


def schema_id(data: bytes) -> int:
    """The schema id in the Confluent header; UndecodableRecord when there is none."""
    if len(data) < HEADER or data[0] != MAGIC:
        raise UndecodableRecord("no schema registry header (magic byte 0 and a schema id)")
    (found,) = struct.unpack_from(">I", data, 1)
    return int(found)


class Schema:
    """A registered schema, compiled for decoding."""

    data_format: str
    json_native = True  # its decoded values hold JSON's types only

    def decode(self, data: bytes, schema_id: int) -> Decoded:
        raise NotImplementedError


def compile_schema(schema_type: str, text: str) -> Schema:
    """Compile the registry's schema text by its schemaType (AVRO when the registry omits
    it, as Confluent's API does); UndecodableRecord when it cannot be compiled."""
    factories: dict[str, Callable[[str], Schema]] = {
        "AVRO": AvroSchema,
        "PROTOBUF": ProtobufSchema,
        "JSON": JsonSchema,
    }
    factory = factories.get(schema_type)
    if factory is None:
        raise UndecodableRecord(f"schema type {schema_type!r} is not AVRO, PROTOBUF or JSON")
    try:
        return factory(text)
    except UndecodableRecord:
        raise
    except Exception as exc:  # each library has its own error types for a bad schema
        raise UndecodableRecord(f"the {schema_type} schema cannot be compiled: {exc}") from exc


# --- Avro -----------------------------------------------------------------------------------


class AvroSchema(Schema):
    data_format = "AVRO"

    def __init__(self, text: str) -> None:
        import fastavro

        self._parsed = fastavro.parse_schema(orjson.loads(text))
        self._read = fastavro.schemaless_reader
        # bytes, fixed and logical types (dates, decimals, UUIDs) read as other Python types
        self.json_native = not any(t in text for t in ('"bytes"', '"fixed"', "logicalType"))

    def decode(self, data: bytes, schema_id: int) -> Decoded:
        body = data[HEADER:]
        stream = io.BytesIO(body)
        try:
            value = self._read(stream, self._parsed, None)
        except Exception as exc:  # fastavro raises EOFError, ValueError, IndexError...
            raise UndecodableRecord(f"not Avro of schema {schema_id}: {exc!r}") from exc
        if stream.tell() != len(body):
            raise UndecodableRecord(f"bytes left over after the Avro record of schema {schema_id}")
        return Decoded(value, body, self.data_format, schema_id, self.json_native)


# --- JSON Schema ----------------------------------------------------------------------------


class JsonSchema(Schema):
    data_format = "JSON"

    def __init__(self, text: str) -> None:
        import jsonschema

        schema = orjson.loads(text)
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
        self._validator = validator_class(schema)

    def decode(self, data: bytes, schema_id: int) -> Decoded:
        body = data[HEADER:]
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UndecodableRecord(f"not JSON (schema {schema_id}): {exc}") from exc
        error = next(iter(self._validator.iter_errors(value)), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "<root>"
            raise UndecodableRecord(f"fails JSON schema {schema_id} at {where}: {error.message}")
        return Decoded(value, body, self.data_format, schema_id)


# --- Protobuf -------------------------------------------------------------------------------


class ProtobufSchema(Schema):
    data_format = "PROTOBUF"

    def __init__(self, text: str) -> None:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        files = descriptor_pb2.FileDescriptorSet.FromString(_protoc(text))
        pool = descriptor_pool.DescriptorPool()
        for proto in files.file:  # dependencies first (protoc orders them so)
            pool.Add(proto)
        main = pool.FindFileByName(files.file[-1].name)
        self._top = list(main.message_types_by_name.values())
        self._class_of: Callable[[Any], Any] = message_factory.GetMessageClass

    def decode(self, data: bytes, schema_id: int) -> Decoded:
        from google.protobuf import json_format
        from google.protobuf.message import DecodeError

        indexes, start = _message_indexes(data, HEADER)
        descriptor = self._descriptor(indexes, schema_id)
        body = data[start:]
        message = self._class_of(descriptor)()
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise UndecodableRecord(f"not Protobuf {descriptor.full_name}: {exc}") from exc
        value = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return Decoded(value, body, self.data_format, schema_id)

    def _descriptor(self, indexes: list[int], schema_id: int) -> Any:
        types = self._top
        descriptor = None
        for index in indexes:
            if not 0 <= index < len(types):
                raise UndecodableRecord(f"message index {indexes} not in schema {schema_id}")
            descriptor = types[index]
            types = list(descriptor.nested_types)
        if descriptor is None:
            raise UndecodableRecord(f"schema {schema_id} has no message type")
        return descriptor


def _protoc(text: str) -> bytes:
    """A FileDescriptorSet (with imports, so well-known types resolve) from ``.proto``
    text, by grpcio-tools' protoc in a child process (once per schema id: its messages go
    to our error, not to the daemon's stderr); UndecodableRecord with protoc's message."""
    from grpc_tools import protoc

    includes = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="esmd-proto-") as folder:
        source, out = Path(folder, "schema.proto"), Path(folder, "schema.desc")
        source.write_text(text)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{folder}",
                f"-I{includes}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                str(source),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()
            raise UndecodableRecord(f"protoc refused the .proto: {message.replace(folder, '')}")
        return out.read_bytes()


def _message_indexes(data: bytes, start: int) -> tuple[list[int], int]:
    """Confluent's message indexes after the header: the path to the message type."""
    count, pos = _zigzag(data, start)
    if count == 0:
        return [0], pos
    if count < 0 or count > 100:
        raise UndecodableRecord("malformed Protobuf message indexes")
    indexes = []
    for _ in range(count):
        index, pos = _zigzag(data, pos)
        indexes.append(index)
    return indexes, pos


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise UndecodableRecord("truncated Protobuf message indexes")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def _json_default(value: Any) -> Any:
    """Avro values orjson does not know: bytes and fixed as base64 (Avro's own JSON
    encoding uses ISO-8859-1 text, which few consumers expect), decimals as strings (no
    precision lost), UUIDs as text."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
