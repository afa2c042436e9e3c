"""Filter views: each source's record in the shape AWS's patterns are written against.

The payload (Kafka value, SQS body, Kinesis data) is decoded once per record and shared by
every filter of the mapping. A payload that is not JSON becomes a :class:`RawPayload`, which
string patterns can match and object patterns never do.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from service.filters.compiler import RawPayload


def parse_payload(raw: bytes | str | None) -> Any:
    """JSON when the payload is JSON, else its text (UTF-8) as a RawPayload."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return RawPayload(text)


def _b64_payload(data: str | None) -> Any:
    if data is None:
        return None
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return RawPayload(data)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return RawPayload(data)  # AWS leaves non-JSON data as the base64 string


def kafka_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda Kafka record with ``value`` base64-decoded, parsed when JSON, else text."""
    value = record.get("value")
    raw = base64.b64decode(value) if value is not None else None
    return {**record, "value": parse_payload(raw)}


def sqs_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda SQS record with ``body`` parsed when it is JSON, else the raw string."""
    return {**record, "body": parse_payload(record.get("body"))}


def kinesis_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of the ``kinesis`` object at the top level, ``data`` decoded when JSON."""
    kinesis = record.get("kinesis", record)
    return {**kinesis, "data": _b64_payload(kinesis.get("data"))}


def dynamodb_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """The Lambda DynamoDB Streams record unchanged: attribute values stay DynamoDB JSON."""
    return record
