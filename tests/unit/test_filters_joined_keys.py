"""EventBridge joins keys with dots: in a pattern, ``"a.b"`` and ``{"a": {"b": ...}}`` name
one field, and a record's value under ``{"a": {"b": ...}}`` or ``{"a.b": ...}`` belongs to
it (event-ruler's README, "Compiled rules and JSON keys with dots"; docs/filters.md). Each
case here was checked against event-ruler 2.1.0 (tests/filters_differential holds the same
corners, compared on every run)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.filters import FilterCriteria, RawPayload, sqs_filter_view
from service.filters.grammar import compile_pattern


def decide(pattern: str | dict[str, Any], record: dict[str, Any]) -> bool:
    """The generated code's answer, checked against the interpreted engine's."""
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    fast = FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    slow = FilterCriteria.parse({"Filters": [{"Pattern": text}]}, generated=False)
    assert fast.matches(record) == slow.matches(record), (text, record)
    return fast.matches(record)


NESTED = {"state": {"status": "running"}}
DOTTED = {"state.status": "running"}


def test_a_dotted_pattern_key_matches_nested_record_keys() -> None:
    assert decide({"state.status": ["running"]}, NESTED)
    assert decide({"state.status": ["running"]}, DOTTED)
    assert not decide({"state.status": ["running"]}, {"state": {"status": "stopped"}})


def test_a_nested_pattern_matches_a_dotted_record_key() -> None:
    assert decide({"state": {"status": ["running"]}}, DOTTED)
    assert decide({"state": {"status": ["running"]}}, NESTED)
    assert not decide({"state": {"status": ["running"]}}, {"state.status": "stopped"})


@pytest.mark.parametrize(
    "record",
    [
        {"detail": {"state": {"status": "running"}}},
        {"detail": {"state.status": "running"}},
        {"detail.state": {"status": "running"}},
        {"detail.state.status": "running"},
        {"detail": [{"state.status": "running"}]},
        {"detail.state": [{"status": "x"}, {"status": "running"}]},
    ],
)
def test_both_directions_mixed(record: dict[str, Any]) -> None:
    # the example of EventBridge's caveat: the two patterns are one, and meet all four records
    assert decide({"detail": {"state": {"status": ["running"]}}}, record)
    assert decide({"detail": {"state.status": ["running"]}}, record)
    assert decide({"detail.state": {"status": ["running"]}}, record)


def test_the_two_spellings_are_one_field_of_the_pattern() -> None:
    (rule,) = compile_pattern('{"a": {"b": [1]}, "a.b": [2]}')
    assert [f.name for f in rule] == ["a.b"]  # written again: the later array replaces
    assert decide('{"a": {"b": [1]}, "a.b": [2]}', {"a": {"b": 2}})
    assert not decide('{"a": {"b": [1]}, "a.b": [2]}', {"a": {"b": 1}})


def test_a_field_spelled_twice_in_a_record_holds_both_values() -> None:
    record = {"a": {"b": 1}, "a.b": 2}
    assert decide({"a": {"b": [1]}}, record)
    assert decide({"a.b": [2]}, record)
    assert decide({"a": {"b": [{"anything-but": 1}]}}, record)  # 2 is not 1
    assert not decide({"a": {"b": [{"exists": False}]}}, record)


def test_exists_false_sees_the_dotted_spelling() -> None:
    assert not decide({"a": {"b": [{"exists": False}]}}, {"a.b": 1})
    assert decide({"a": {"b": [{"exists": False}]}}, {"a": {"b.c": 1}})  # that is a.b.c


def test_arrays_under_either_spelling() -> None:
    pattern = {"a": {"b": [1], "c": [2]}}
    assert decide(pattern, {"a": [{"b": 1}], "a.c": 2})  # a.c belongs to no element
    assert not decide(pattern, {"a": [{"b": 1}, {"c.d": 2}]})  # a.c.d is another field
    # values in an element already chosen are the only ones event-ruler tries
    # (StructuredFinder): "x" outside the array is passed over once a[0] is chosen
    assert not decide({"a": {"a": ["p"], "b": ["x"]}}, {"a": [{"a": "p", "b": "q"}], "a.b": "x"})
    assert decide({"a": {"a": ["p"], "b": ["x"]}}, {"a": [{"a": "p"}], "a.b": "x"})


def test_payload_keys_join_too() -> None:
    record = {"messageId": "1", "body": '{"order": {"status": "DONE"}}'}
    assert decide({"body.order.status": ["DONE"]}, sqs_filter_view(record))
    assert decide({"body": {"order.status": ["DONE"]}}, sqs_filter_view(record))
    # a pattern that treats the payload as an object still drops a payload that is no JSON
    assert not decide({"body.order": [{"exists": False}]}, {"body": RawPayload("plain")})
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"body.order.status": ["DONE"]}'}]})
    assert criteria.keys == {"body"}


def test_an_empty_key_is_read_only_as_event_ruler_reads_it() -> None:
    # event-ruler reads a record key only when it is a part of a field name (Java's split,
    # which drops trailing empty parts): "a." has the part "a" only
    assert decide('{"a.": [1]}', {"a.": 1})
    assert not decide('{"a.": [1]}', {"a": {"": 1}})
    assert decide('{"a..b": [1]}', {"a": {"": {"b": 1}}})  # an inner empty part is one
    assert decide('{"a.": [1], "x..y": [2]}', {"a": {"": 1}, "x..y": 2})
    # no dot follows a lone empty key of the pattern (Path.extendedName)
    assert decide('{"": {"a": [1]}}', {"a": 1})
    assert not decide('{"": {"a": [1]}}', {"": {"a": 1}})


def test_generated_code_looks_for_joined_keys_only_where_the_pattern_goes_deep() -> None:
    pattern = {"value": {"status": ["A"], "n": [{"numeric": [">", 1]}]}}
    source = FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(pattern)}]}).matcher.__doc__
    assert source is not None
    assert source.count(" in r or ") == 1  # value.status, value.n at the top; none below
