"""The engine's insides: event-ruler's rules on arrays, $or and numbers, the fast path
against the exact engine, the generated code, and where esmd knowingly differs from
event-ruler (each listed in docs/filters.md)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.filters import FilterCriteria, InvalidPatternError
from service.filters.exact import exact_matcher
from service.filters.grammar import compile_pattern
from service.filters.ips import cidr_range, ip_hex
from tests.filters_differential.strategies import events, patterns, witness


def matches(pattern: str | dict[str, Any], record: dict[str, Any]) -> bool:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    return FilterCriteria.parse({"Filters": [{"Pattern": text}]}).matches(record)


# --- exists: false under arrays of objects follows event-ruler's key order ------------------


def test_absence_checked_before_a_sibling_sees_every_element() -> None:
    # "x.a" sorts before "x.b": when "x.a" is checked no element is chosen yet, so the "a"
    # in the second element counts as present
    pattern = {"x": {"a": [{"exists": False}], "b": [1]}}
    assert not matches(pattern, {"x": [{"b": 1}, {"a": 5}]})
    assert matches(pattern, {"x": [{"b": 1}]})


def test_absence_checked_after_a_sibling_sees_its_element_only() -> None:
    pattern = {"x": {"b": [1], "z": [{"exists": False}]}}
    assert matches(pattern, {"x": [{"b": 1}, {"z": 5}]})
    assert not matches(pattern, {"x": [{"b": 1, "z": 2}, {"z": 5}]})


def test_values_from_one_element_of_an_array() -> None:
    pattern = {"a": {"b": [1], "c": [2]}}
    assert not matches(pattern, {"a": [[{"b": 1}], [{"c": 2}]]})
    assert matches(pattern, {"a": [[{"b": 1, "c": 2}]]})


def test_a_scalar_in_an_array_belongs_to_no_element() -> None:
    pattern = '{"a": [1], "$or": [{"a": {"b": [2]}}, {"z": [0]}]}'
    assert matches(pattern, {"a": [1, {"b": 2}]})
    assert not matches(pattern, {"a": [[1], {"b": 2}]})
    assert matches(pattern, {"a": [[1, {"b": 2}]]})


# --- the grammar as event-ruler reads it ---------------------------------------------------


def test_a_key_written_again_replaces_the_earlier_one() -> None:
    assert matches('{"a": [1], "a": [2]}', {"a": 2})
    assert not matches('{"a": [1], "a": [2]}', {"a": 1})
    # objects written twice both count: their fields have different names
    assert matches('{"a": {"x": [1]}, "a": {"y": [2]}}', {"a": {"x": 1, "y": 2}})
    assert not matches('{"a": {"x": [1]}, "a": {"y": [2]}}', {"a": {"y": 2}})


def test_or_branches_replace_keys_written_before_and_keys_after_apply_to_all() -> None:
    before = '{"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}'
    assert matches(before, {"a": 2})
    assert matches(before, {"a": 1, "b": 3})
    assert not matches(before, {"a": 1})
    after = '{"$or": [{"a": [2]}, {"b": [3]}], "a": [1]}'
    assert not matches(after, {"a": 2})
    assert matches(after, {"a": 1})


def test_sub_rules_are_sorted_in_java_order() -> None:
    text = '{"b": [1], "\uffff": [1], "a": {"z": [1]}, "a-b": [1], "\U0001f600": [1]}'
    (rule,) = compile_pattern(text)
    # Java compares UTF-16 units: an astral character (a surrogate pair) sorts before U+FFFF
    assert [f.name for f in rule] == ["a-b", "a.z", "b", "\U0001f600", "\uffff"]


# --- numbers -------------------------------------------------------------------------------


def test_numbers_event_ruler_cannot_compare() -> None:
    # 2**60's shortest double text is not 2**60: event-ruler matches it by its text only
    assert not matches({"a": [{"numeric": [">", 0]}]}, {"a": 2**60})
    assert matches({"a": [2**60]}, {"a": 2**60})
    assert not matches({"a": [2**60]}, {"a": 2**60 + 1})
    # 10**20 is 1e20's shortest text, so it compares
    assert matches({"a": [{"numeric": [">", 1e19]}]}, {"a": 10**20})
    assert matches({"a": [{"anything-but": [5]}]}, {"a": 2**60})


# --- IP addresses, as Java reads them and event-ruler's automaton decides -------------------


def test_ip_literals() -> None:
    assert ip_hex("10.0.0.1") == "0A000001"
    assert ip_hex("010.0.0.1") == "0A000001"
    assert ip_hex("::ffff:a00:1") == "0A000001"
    assert ip_hex("::1") == "0" * 31 + "1"
    assert ip_hex("256.0.0.1") is None
    assert ip_hex("0000010.0.0.1234") is None
    assert ip_hex("host") is None


def test_an_ipv6_address_settled_by_its_first_32_bits() -> None:
    assert matches({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "a00:1::"})
    assert matches({"ip": ["10.0.0.1"]}, {"ip": "a00:1::5"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "b00::"})


def test_an_ipv4_address_settled_by_its_8_digits() -> None:
    block = cidr_range("::/8")
    assert block.contains("00000001")
    assert not block.contains("00000000")  # 0.0.0.0 never leaves the bound's path


# --- the fast path and the exact engine agree -----------------------------------------------


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pattern=patterns, data=st.data())
def test_fast_path_agrees_with_the_exact_engine(pattern: dict[str, Any], data: Any) -> None:
    text = json.dumps(pattern)
    try:
        criteria = FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    except InvalidPatternError:
        return
    exact = [exact_matcher(rule) for rules in criteria.rules for rule in rules]
    for _ in range(10):
        record = orjson.loads(json.dumps(data.draw(st.one_of(events, witness(pattern)))))
        assert criteria.matches(record) == any(m(record) for m in exact), (text, record)


# --- the generated code ----------------------------------------------------------------------


def test_generated_code_holds_no_pattern_text() -> None:
    key = '") or __import__("os").system("true") or ("'
    pattern = json.dumps({key: {"b": ["x"]}, "c": [{"prefix": '"; raise SystemExit #'}]})
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": pattern}]})
    source = criteria.matcher.__doc__ or ""
    assert "def match(r" in source
    assert "import" not in source and "SystemExit" not in source
    assert criteria.matches({key: {"b": "x"}, "c": '"; raise SystemExit # yes'})


def test_common_leaves_are_tested_inline() -> None:
    pattern = {"v": {"s": ["A", "B"], "p": [{"prefix": "c-"}], "n": [{"numeric": [">", 1]}]}}
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(pattern)}]})
    source = criteria.matcher.__doc__ or ""
    assert "not in" in source and ".startswith(" in source and " < " in source


# --- where esmd differs from event-ruler on purpose (docs/filters.md) ------------------------


def test_or_branches_are_a_plain_or() -> None:
    # event-ruler drops the second branch, taking it for a duplicate of the first
    assert matches({"$or": [{"a": ["x"]}, {"a": ["x", "y"]}]}, {"a": "y"})


def test_cidr_matches_addresses_only() -> None:
    # event-ruler walks a number's text through the block's hex digits: 1 is "in" ::/0
    assert not matches({"a": [{"cidr": "::/0"}]}, {"a": 1})
    assert matches({"a": [{"cidr": "::/0"}]}, {"a": "10.0.0.1"})


@pytest.mark.parametrize("form", ["prefix", "suffix", "equals-ignore-case", "wildcard"])
def test_an_empty_anything_but_list_is_refused(form: str) -> None:
    # event-ruler fails on it, or ignores it when another value precedes it in the array
    pattern = json.dumps({"a": ["x", {"anything-but": {form: []}}]})
    with pytest.raises(InvalidPatternError, match="non-empty array of strings"):
        FilterCriteria.parse({"Filters": [{"Pattern": pattern}]})
