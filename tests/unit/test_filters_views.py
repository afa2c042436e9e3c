"""Each source's filter view, and the payload rules Lambda documents for it.

Lambda compares the payload's format with the pattern's: a payload that is not JSON never
meets a pattern that treats it as an object (even ``exists: false``), and a JSON payload
never meets a plain pattern on the payload key; plain patterns do apply to a plain payload.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from service.filters import (
    FilterCriteria,
    RawPayload,
    dynamodb_filter_view,
    kafka_filter_view,
    kinesis_filter_view,
    parse_payload,
    sqs_filter_view,
)


def matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    return FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(pattern)}]}).matches(record)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- SQS -------------------------------------------------------------------------------------

SQS_RECORD = {
    "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
    "body": '{"RecordNumber": 1234, "RequestCode": "AAAA", "tags": ["x", "y"]}',
    "attributes": {"ApproximateReceiveCount": "1", "SenderId": "AIDAIENQZJOLO23YVJ4VO"},
    "messageAttributes": {"Team": {"stringValue": "ops", "dataType": "String"}},
    "eventSource": "aws:sqs",
}


def test_sqs_json_body_is_parsed() -> None:
    view = sqs_filter_view(SQS_RECORD)
    assert view["body"] == {"RecordNumber": 1234, "RequestCode": "AAAA", "tags": ["x", "y"]}
    assert matches({"body": {"RequestCode": ["AAAA"]}}, view)
    assert matches({"body": {"RecordNumber": [{"numeric": [">", 1000]}]}}, view)
    assert matches({"body": {"tags": ["y"]}}, view)
    assert not matches({"body": {"RequestCode": ["BBBB"]}}, view)
    assert matches({"body": {"Missing": [{"exists": False}]}}, view)


def test_sqs_metadata_beside_the_body() -> None:
    view = sqs_filter_view(SQS_RECORD)
    assert matches({"attributes": {"ApproximateReceiveCount": ["1"]}}, view)
    assert matches({"messageAttributes": {"Team": {"stringValue": ["ops"]}}}, view)
    assert not matches({"messageAttributes": {"Team": {"stringValue": ["dev"]}}}, view)
    assert matches({"eventSource": ["aws:sqs"], "body": {"RequestCode": ["AAAA"]}}, view)


def test_sqs_body_that_is_not_json() -> None:
    view = sqs_filter_view({**SQS_RECORD, "body": "status DONE"})
    assert view["body"] == "status DONE" and isinstance(view["body"], RawPayload)
    # a plain pattern on the body applies to the text
    assert matches({"body": [{"prefix": "status"}]}, view)
    assert matches({"body": ["status DONE"]}, view)
    assert matches({"body": [{"exists": True}]}, view)
    assert not matches({"body": [{"suffix": "FAILED"}]}, view)
    # an object pattern never matches it, not even exists: false
    assert not matches({"body": {"status": ["DONE"]}}, view)
    assert not matches({"body": {"status": [{"exists": False}]}}, view)
    # a pattern without the body filters on metadata only
    assert matches({"attributes": {"ApproximateReceiveCount": ["1"]}}, view)


def test_sqs_json_body_never_meets_a_plain_pattern() -> None:
    view = sqs_filter_view(SQS_RECORD)
    assert not matches({"body": [{"prefix": "{"}]}, view)
    assert not matches({"body": [{"exists": True}]}, view)
    assert not matches({"body": [{"exists": False}]}, view)
    scalar = sqs_filter_view({**SQS_RECORD, "body": "123"})
    assert scalar["body"] == 123
    assert not matches({"body": [123]}, scalar)
    assert not matches({"body": ["123"]}, scalar)


def test_sqs_body_with_a_number_beyond_doubles_is_still_json() -> None:
    view = sqs_filter_view({**SQS_RECORD, "body": '{"big": 1e400, "kind": "x"}'})
    assert matches({"body": {"kind": ["x"]}}, view)


@pytest.mark.parametrize("body", ["NaN", "{'single': 'quotes'}", "", "[1,"])
def test_sqs_bodies_that_are_not_json(body: str) -> None:
    assert isinstance(sqs_filter_view({"body": body})["body"], RawPayload)


# --- Kinesis ---------------------------------------------------------------------------------

KINESIS_RECORD = {
    "kinesis": {
        "kinesisSchemaVersion": "1.0",
        "partitionKey": "1",
        "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "data": b64(b'{"City": "Seattle", "Temperature": 46}'),
        "approximateArrivalTimestamp": 1545084650.987,
    },
    "eventSource": "aws:kinesis",
    "eventName": "aws:kinesis:record",
}


def test_kinesis_metadata_at_the_top_and_json_data_decoded() -> None:
    view = kinesis_filter_view(KINESIS_RECORD)
    assert view["data"] == {"City": "Seattle", "Temperature": 46}
    assert matches({"partitionKey": ["1"], "data": {"City": ["Seattle"]}}, view)
    assert matches({"data": {"Temperature": [{"numeric": [">", 40, "<=", 50]}]}}, view)
    assert not matches({"data": {"Temperature": [{"numeric": [">", 50]}]}}, view)
    assert matches({"approximateArrivalTimestamp": [{"numeric": [">", 1545084650]}]}, view)


def test_kinesis_data_that_is_not_json_stays_base64() -> None:
    encoded = b64(b"not json at all")
    view = kinesis_filter_view({"kinesis": {**KINESIS_RECORD["kinesis"], "data": encoded}})
    assert view["data"] == encoded and isinstance(view["data"], RawPayload)
    assert not matches({"data": {"City": [{"exists": False}]}}, view)
    assert matches({"partitionKey": ["1"]}, view)
    assert matches({"data": [encoded]}, view)


def test_kinesis_data_that_is_not_base64() -> None:
    view = kinesis_filter_view({"kinesis": {"partitionKey": "1", "data": "%%%"}})
    assert view["data"] == "%%%" and isinstance(view["data"], RawPayload)


# --- DynamoDB --------------------------------------------------------------------------------

DYNAMODB_RECORD = {
    "eventID": "1",
    "eventName": "INSERT",
    "eventSource": "aws:dynamodb",
    "dynamodb": {
        "Keys": {"Id": {"N": "101"}},
        "NewImage": {
            "Message": {"S": "New item!"},
            "Id": {"N": "101"},
            "Tags": {"L": [{"S": "a"}, {"S": "b"}]},
            "Active": {"BOOL": True},
        },
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}


def test_dynamodb_typed_attributes() -> None:
    view = dynamodb_filter_view(DYNAMODB_RECORD)
    assert view is DYNAMODB_RECORD
    assert matches({"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}, view)
    # numbers in DynamoDB JSON are strings: a number pattern does not meet them
    assert not matches({"dynamodb": {"Keys": {"Id": {"N": [101]}}}}, view)
    assert matches(
        {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"Active": {"BOOL": [True]}}}}, view
    )
    assert matches({"dynamodb": {"NewImage": {"Tags": {"L": {"S": ["b"]}}}}}, view)
    assert matches({"dynamodb": {"NewImage": {"Message": {"S": [{"prefix": "New"}]}}}}, view)
    assert matches({"dynamodb": {"OldImage": [{"exists": False}]}}, view)
    assert not matches({"eventName": ["REMOVE"]}, view)


def test_dynamodb_payload_is_always_an_object() -> None:
    assert not matches({"dynamodb": [{"exists": True}]}, dynamodb_filter_view(DYNAMODB_RECORD))


# --- Kafka -----------------------------------------------------------------------------------


def kafka_record(value: bytes | None) -> dict[str, Any]:
    return {
        "topic": "orders",
        "partition": 0,
        "offset": 15,
        "timestamp": 1545084650987,
        "timestampType": "CREATE_TIME",
        "key": b64(b"k1"),
        "value": None if value is None else b64(value),
        "headers": [{"h": [104, 105]}],
    }


def test_kafka_json_value() -> None:
    view = kafka_filter_view(kafka_record(b'{"kind": "keep", "n": 3}'))
    assert view["value"] == {"kind": "keep", "n": 3}
    assert matches({"value": {"kind": ["keep"]}, "topic": ["orders"]}, view)
    assert matches({"partition": [0], "offset": [{"numeric": [">=", 10]}]}, view)
    assert not matches({"value": {"kind": ["drop"]}}, view)


def test_kafka_value_that_is_not_json_is_its_text() -> None:
    view = kafka_filter_view(kafka_record(b"hello world"))
    assert view["value"] == "hello world" and isinstance(view["value"], RawPayload)
    assert matches({"value": [{"prefix": "hello"}]}, view)
    assert matches({"value": [{"wildcard": "* world"}]}, view)
    assert not matches({"value": {"k": [{"exists": False}]}}, view)


def test_kafka_value_that_is_not_utf8() -> None:
    view = kafka_filter_view(kafka_record(b"\xff\xfeoops"))
    assert view["value"] == "\ufffd\ufffdoops"
    assert matches({"value": [{"suffix": "oops"}]}, view)


def test_kafka_tombstone() -> None:
    view = kafka_filter_view(kafka_record(None))
    assert view["value"] is None
    assert matches({"value": [None]}, view)
    assert not matches({"value": {"kind": ["keep"]}}, view)


def test_parse_payload() -> None:
    assert parse_payload(b'{"a": 1}') == {"a": 1}
    assert parse_payload('{"a": 1}') == {"a": 1}
    assert parse_payload(None) is None
    assert type(parse_payload(b"plain")) is RawPayload
    assert type(parse_payload("Infinity")) is RawPayload
