"""Every operator's match and non-match, the rejections, and each source's filter view."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from service.filters import (
    FilterCriteria,
    InvalidPatternError,
    dynamodb_filter_view,
    kafka_filter_view,
    kinesis_filter_view,
    sqs_filter_view,
)


def matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    return FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(pattern)}]}).matches(record)


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("exact string", {"a": ["x"]}, {"a": "x"}, True),
    ("exact string miss", {"a": ["x"]}, {"a": "y"}, False),
    ("exact number", {"a": [5]}, {"a": 5.0}, True),
    ("number is not a string", {"a": [5]}, {"a": "5"}, False),
    ("string is not a number", {"a": ["5"]}, {"a": 5}, False),
    ("boolean", {"a": [True]}, {"a": True}, True),
    ("boolean is not 1", {"a": [True]}, {"a": 1}, False),
    ("1 is not true", {"a": [1]}, {"a": True}, False),
    ("null", {"a": [None]}, {"a": None}, True),
    ("null is not missing", {"a": [None]}, {}, False),
    ("empty string", {"a": [""]}, {"a": ""}, True),
    ("OR across values", {"a": ["x", "y"]}, {"a": "y"}, True),
    ("AND across keys", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ("nested", {"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),
    ("nested miss", {"a": {"b": ["x"]}}, {"a": {"c": "x"}}, False),
    ("array element", {"a": ["x"]}, {"a": ["w", "x"]}, True),
    ("array no element", {"a": ["x"]}, {"a": ["w", "v"]}, False),
    ("array of objects", {"a": {"b": [2]}}, {"a": [{"b": 1}, {"b": 2}]}, True),
    ("prefix", {"a": [{"prefix": "ab"}]}, {"a": "abc"}, True),
    ("prefix miss", {"a": [{"prefix": "ab"}]}, {"a": "cab"}, False),
    ("prefix not on numbers", {"a": [{"prefix": "1"}]}, {"a": 12}, False),
    ("prefix ignore case", {"a": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"a": "abc"}, True),
    ("suffix", {"a": [{"suffix": ".png"}]}, {"a": "x.png"}, True),
    ("suffix miss", {"a": [{"suffix": ".png"}]}, {"a": "x.jpg"}, False),
    (
        "suffix ignore case",
        {"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
        {"a": "x.png"},
        True,
    ),
    ("equals-ignore-case", {"a": [{"equals-ignore-case": "HeLLo"}]}, {"a": "hello"}, True),
    ("equals-ignore-case miss", {"a": [{"equals-ignore-case": "hello"}]}, {"a": "hell"}, False),
    ("wildcard", {"a": [{"wildcard": "*.png"}]}, {"a": "dir/x.png"}, True),
    ("wildcard middle", {"a": [{"wildcard": "a*c"}]}, {"a": "abbc"}, True),
    ("wildcard miss", {"a": [{"wildcard": "a*c"}]}, {"a": "abcd"}, False),
    ("wildcard escaped star", {"a": [{"wildcard": "a\\*c"}]}, {"a": "a*c"}, True),
    ("wildcard escaped star miss", {"a": [{"wildcard": "a\\*c"}]}, {"a": "abc"}, False),
    ("numeric >", {"a": [{"numeric": [">", 10]}]}, {"a": 11}, True),
    ("numeric > miss", {"a": [{"numeric": [">", 10]}]}, {"a": 10}, False),
    ("numeric >=", {"a": [{"numeric": [">=", 10]}]}, {"a": 10}, True),
    ("numeric <", {"a": [{"numeric": ["<", 0]}]}, {"a": -0.5}, True),
    ("numeric <=", {"a": [{"numeric": ["<=", 0]}]}, {"a": 0.1}, False),
    ("numeric =", {"a": [{"numeric": ["=", 300]}]}, {"a": 3.0e2}, True),
    ("numeric range", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
    ("numeric range miss", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 0}, False),
    ("numeric not on strings", {"a": [{"numeric": [">", 1]}]}, {"a": "5"}, False),
    ("numbers compare as numbers", {"a": [{"numeric": ["<", 100]}]}, {"a": 20}, True),
    ("exists true", {"a": [{"exists": True}]}, {"a": "x"}, True),
    ("exists true on null", {"a": [{"exists": True}]}, {"a": None}, True),
    ("exists true missing", {"a": [{"exists": True}]}, {}, False),
    ("exists true on object", {"a": [{"exists": True}]}, {"a": {"b": 1}}, False),
    ("exists false", {"a": [{"exists": False}]}, {}, True),
    ("exists false present", {"a": [{"exists": False}]}, {"a": "x"}, False),
    ("exists false empty array", {"a": [{"exists": False}]}, {"a": []}, True),
    ("anything-but value", {"a": [{"anything-but": "x"}]}, {"a": "y"}, True),
    ("anything-but value miss", {"a": [{"anything-but": "x"}]}, {"a": "x"}, False),
    ("anything-but list", {"a": [{"anything-but": ["x", "y"]}]}, {"a": "y"}, False),
    ("anything-but needs the key", {"a": [{"anything-but": ["x"]}]}, {}, False),
    ("anything-but numbers", {"a": [{"anything-but": [1, 2]}]}, {"a": 3}, True),
    ("anything-but numbers miss", {"a": [{"anything-but": [1, 2]}]}, {"a": 2.0}, False),
    ("anything-but prefix", {"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "out"}, True),
    ("anything-but prefix miss", {"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "init"}, False),
    ("anything-but suffix", {"a": [{"anything-but": {"suffix": "ed"}}]}, {"a": "open"}, True),
    (
        "anything-but suffix miss",
        {"a": [{"anything-but": {"suffix": "ed"}}]},
        {"a": "closed"},
        False,
    ),
    (
        "anything-but ignore case",
        {"a": [{"anything-but": {"equals-ignore-case": ["X"]}}]},
        {"a": "x"},
        False,
    ),
    (
        "anything-but wildcard",
        {"a": [{"anything-but": {"wildcard": "*.tmp"}}]},
        {"a": "a.txt"},
        True,
    ),
    (
        "anything-but wildcard miss",
        {"a": [{"anything-but": {"wildcard": "*.tmp"}}]},
        {"a": "a.tmp"},
        False,
    ),
    ("cidr", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"}, True),
    ("cidr miss", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.1"}, False),
    ("cidr not an ip", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "host"}, False),
    ("cidr ipv6", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"}, True),
    ("$or first", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x"}, True),
    ("$or second", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
    ("$or none", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "y", "b": "x"}, False),
    ("$or with AND", {"c": [1], "$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x", "c": 2}, False),
    # semantics learned from event-ruler by the differential test
    (
        "$or branch replaces the same field",
        {"a": [None], "$or": [{"a": [""]}, {"a": ["x"]}]},
        {"a": None},
        False,
    ),
    (
        "$or branch replacing matches",
        {"a": [None], "$or": [{"a": [""]}, {"a": ["x"]}]},
        {"a": "x"},
        True,
    ),
    (
        "exists false: absent from every array element",
        {"c": {"a": [{"exists": False}], "b": ["x"]}},
        {"c": [{"b": "x"}, {"a": 1}]},
        False,
    ),
    (
        "exists false: absent everywhere matches",
        {"c": {"a": [{"exists": False}], "b": ["x"]}},
        {"c": [{"b": "x"}, {"d": 1}]},
        True,
    ),
    ("array consistency", {"c": {"a": [1], "b": [2]}}, {"c": [{"a": 1}, {"b": 2}]}, False),
    (
        "anything-but prefix lets non-strings through",
        {"a": [{"anything-but": {"prefix": "x"}}]},
        {"a": None},
        True,
    ),
]


@pytest.mark.parametrize(
    ("pattern", "record", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_operator(pattern: dict[str, Any], record: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, record) is expected


def test_any_filter_matching_is_enough_and_no_filters_match_all() -> None:
    criteria = FilterCriteria.parse(
        {"Filters": [{"Pattern": '{"a": ["x"]}'}, {"Pattern": '{"b": ["y"]}'}]}
    )
    assert criteria.matches({"b": "y"})
    assert not criteria.matches({"a": "y"})
    assert FilterCriteria.parse(None).matches({"anything": 1})
    assert FilterCriteria.parse({"Filters": []}).matches({})


REJECTED = [
    ("not json", "{a", "not valid JSON"),
    ("not an object", "[1]", "must be a JSON object"),
    ("scalar leaf", '{"a": "x"}', "a: must be an array of values or an object"),
    ("empty array", '{"a": []}', "a: an empty array"),
    ("unknown operator", '{"a": [{"like": "x"}]}', "a[0]: unknown operator 'like'"),
    ("two keys in operator", '{"a": [{"prefix": "x", "suffix": "y"}]}', "exactly one key"),
    ("prefix not a string", '{"a": [{"prefix": 1}]}', "a[0].prefix: takes a string"),
    ("numeric odd", '{"a": [{"numeric": [">"]}]}', "a[0].numeric: takes [op, number]"),
    ("numeric bad op", '{"a": [{"numeric": ["!=", 1]}]}', "unknown comparison '!='"),
    ("numeric not a number", '{"a": [{"numeric": [">", "1"]}]}', "> needs a number"),
    ("numeric range order", '{"a": [{"numeric": ["<", 1, ">", 0]}]}', "a lower bound"),
    ("numeric inverted", '{"a": [{"numeric": [">", 5, "<", 1]}]}', "lower bound must be below"),
    ("numeric empty range", '{"a": [{"numeric": [">", 1, "<", 1]}]}', "lower bound must be below"),
    ("exists not bool", '{"a": [{"exists": "yes"}]}', "exists takes true or false"),
    ("anything-but mixed", '{"a": [{"anything-but": ["x", 1]}]}', "all strings or all numbers"),
    ("anything-but op", '{"a": [{"anything-but": {"numeric": [">", 1]}}]}', "anything-but takes"),
    ("wildcard double star", '{"a": [{"wildcard": "a**"}]}', "consecutive wildcard"),
    ("cidr invalid", '{"a": [{"cidr": "10.0.0.300/8"}]}', "invalid CIDR block"),
    ("$or single", '{"$or": [{"a": ["x"]}]}', "$or takes an array of at least two"),
    ("too long", '{"a": ["' + "x" * 4100 + '"]}', "at most 4096 characters"),
]


@pytest.mark.parametrize(
    ("text", "message"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidPatternError) as info:
        FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    assert message in str(info.value)


def test_at_most_five_filters() -> None:
    with pytest.raises(InvalidPatternError, match="at most 5 filters"):
        FilterCriteria.parse({"Filters": [{"Pattern": "{}"}] * 6})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_sqs_view_json_and_plain_body() -> None:
    json_body = sqs_filter_view({"body": '{"status": "DONE"}', "attributes": {"x": "1"}})
    plain = sqs_filter_view({"body": "status DONE"})
    object_pattern = {"body": {"status": ["DONE"]}}
    assert matches(object_pattern, json_body)
    assert not matches(object_pattern, plain)
    # a non-JSON body never matches an object pattern, even exists: false (ESM docs)
    assert not matches({"body": {"status": [{"exists": False}]}}, plain)
    assert matches({"body": [{"prefix": "status"}]}, plain)
    assert matches({"attributes": {"x": ["1"]}}, json_body)


def test_kinesis_view_decodes_json_data_and_keeps_other_data_base64() -> None:
    record = {"kinesis": {"partitionKey": "k1", "data": b64(b'{"temp": 30}')}}
    view = kinesis_filter_view(record)
    assert matches({"data": {"temp": [{"numeric": [">", 25]}]}, "partitionKey": ["k1"]}, view)
    raw = kinesis_filter_view({"kinesis": {"partitionKey": "k1", "data": b64(b"not json")}})
    assert raw["data"] == b64(b"not json")
    assert not matches({"data": {"temp": [{"exists": False}]}}, raw)
    assert matches({"partitionKey": ["k1"]}, raw)


def test_dynamodb_view_uses_typed_attributes() -> None:
    record = {
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"id": {"S": "a1"}}, "NewImage": {"qty": {"N": "5"}}},
    }
    view = dynamodb_filter_view(record)
    assert matches({"eventName": ["INSERT"], "dynamodb": {"Keys": {"id": {"S": ["a1"]}}}}, view)
    assert matches({"dynamodb": {"NewImage": {"qty": {"N": ["5"]}}}}, view)
    assert not matches({"dynamodb": {"NewImage": {"qty": {"N": [5]}}}}, view)


def test_kafka_view_decodes_value() -> None:
    view = kafka_filter_view({"topic": "t", "partition": 0, "value": b64(b'{"k": "v"}')})
    assert matches({"value": {"k": ["v"]}, "topic": ["t"]}, view)
    text = kafka_filter_view({"topic": "t", "value": b64(b"hello world")})
    assert text["value"] == "hello world"
    assert matches({"value": [{"prefix": "hello"}]}, text)
    assert not matches({"value": {"k": [{"exists": False}]}}, text)
