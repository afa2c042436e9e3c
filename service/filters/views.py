"""Filter views: each source's record in the shape AWS's patterns are written against.

A poller builds the view once per record, so the payload (SQS body, Kinesis data, Kafka
value) is decoded once and shared by every filter of the mapping. A payload that is not
JSON becomes a :class:`RawPayload`: string patterns on the payload key match it, object
patterns never do (Lambda drops such a record), as ESM documents.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

import orjson

from service.filters.core import RawPayload


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_payload(raw: bytes | str | None) -> Any:
    """The payload parsed when it is JSON, else its text (UTF-8) as a RawPayload.

    orjson decides nearly every payload; the few JSON texts it refuses (a number beyond
    a double, such as ``1e400``) get a second reading by the standard library. Nesting
    deeper than orjson's 1,024 levels is read as text (the standard library would run out
    of stack on it; event-ruler's JSON reader stops at 1,000 levels).
    """
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return RawPayload(text)


def _base64_payload(data: str | None) -> Any:
    """Kinesis data: decoded and parsed when JSON, else left as the base64 string."""
    if data is None:
        return None
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return RawPayload(data)
    parsed = parse_payload(raw)
    return RawPayload(data) if isinstance(parsed, RawPayload) else parsed


def kafka_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda Kafka record with ``value`` base64-decoded: parsed when JSON, else text."""
    value = record.get("value")
    raw = binascii.a2b_base64(value) if value is not None else None
    return {**record, "value": parse_payload(raw)}


def sqs_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda SQS record with ``body`` parsed when it is JSON, else the raw string."""
    return {**record, "body": parse_payload(record.get("body"))}


def kinesis_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of the record's ``kinesis`` object at the top level (``partitionKey``,
    ``sequenceNumber``, ``data``, ...), ``data`` decoded and parsed when JSON."""
    kinesis = record.get("kinesis", record)
    return {**kinesis, "data": _base64_payload(kinesis.get("data"))}


def mq_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """A Lambda Amazon MQ record (ActiveMQ or RabbitMQ message) with ``data`` decoded and
    parsed when JSON, else left as the base64 string (AWS filters MQ messages on ``data``)."""
    return {**record, "data": _base64_payload(record.get("data"))}


def dynamodb_filter_view(record: dict[str, Any]) -> dict[str, Any]:
    """The Lambda DynamoDB Streams record unchanged: ``dynamodb`` keeps its typed
    attribute values (``{"N": "5"}``), as AWS matches them."""
    return record
