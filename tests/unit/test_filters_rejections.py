"""Every pattern AWS refuses is refused, with a message naming what is wrong and where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.filters import FilterCriteria, InvalidPatternError

REJECTED: list[tuple[str, str, str]] = [
    # the pattern as a whole
    ("not json", "{a", "the pattern is not valid JSON: Expecting property name"),
    ("NaN is not JSON", '{"a": [NaN]}', "the pattern is not valid JSON: NaN is not a JSON value"),
    ("trailing text", '{"a": [1]} x', "the pattern is not valid JSON: Extra data"),
    ("not an object", "[1]", "a pattern must be a JSON object"),
    ("empty pattern", "{}", "the pattern: an empty object is not allowed"),
    ("too long", '{"a": ["' + "x" * 4100 + '"]}', "a pattern is at most 4096 characters"),
    # keys
    ("scalar for a key", '{"a": "x"}', "a: must be an array of values or an object"),
    ("null for a key", '{"a": {"b": null}}', "a.b: must be an array of values or an object"),
    ("empty nested object", '{"a": {}}', "a: an empty object is not allowed"),
    ("empty array", '{"a": []}', "a: an empty array is not allowed"),
    ("array in an array", '{"a": [[1]]}', "a[0]: a value must be a string, number, true"),
    # operator objects
    ("empty operator", '{"a": [{}]}', "a[0]: an operator object needs an operator"),
    ("unknown operator", '{"a": [{"like": "x"}]}', "a[0]: unknown operator 'like'"),
    ("two operators", '{"a": [{"prefix": "x", "suffix": "y"}]}', "a[0]: an operator object holds"),
    ("prefix not a string", '{"a": [{"prefix": 1}]}', "a[0].prefix: takes a string"),
    ("prefix unknown form", '{"a": [{"prefix": {"suffix": "x"}}]}', "'suffix' is not supported"),
    ("prefix empty form", '{"a": [{"prefix": {}}]}', "a[0].prefix: takes one of equals-ignore"),
    (
        "prefix two forms",
        '{"a": [{"prefix": {"equals-ignore-case": "x", "wildcard": "y"}}]}',
        "a[0].prefix: takes exactly one of",
    ),
    (
        "prefix ignore-case not a string",
        '{"a": [{"prefix": {"equals-ignore-case": 1}}]}',
        "a[0].prefix.equals-ignore-case: takes a string",
    ),
    ("suffix not a string", '{"a": [{"suffix": ["x"]}]}', "a[0].suffix: takes a string"),
    (
        "suffix ignore-case not a string",
        '{"a": [{"suffix": {"equals-ignore-case": null}}]}',
        "a[0].suffix.equals-ignore-case: takes a string",
    ),
    ("equals-ignore-case", '{"a": [{"equals-ignore-case": 5}]}', "a[0].equals-ignore-case: takes"),
    ("exactly not a string", '{"a": [{"exactly": 5}]}', "a[0].exactly: takes a string"),
    ("wildcard not a string", '{"a": [{"wildcard": 5}]}', "a[0].wildcard: takes a string"),
    ("wildcard two stars", '{"a": [{"wildcard": "a**"}]}', "consecutive wildcard characters"),
    ("wildcard bad escape", '{"a": [{"wildcard": "a\\\\b"}]}', "invalid escape character at"),
    ("wildcard ends in \\", '{"a": [{"wildcard": "a\\\\"}]}', "invalid escape character at"),
    ("exists not a boolean", '{"a": [{"exists": "yes"}]}', "a[0].exists: takes true or false"),
    ("cidr not a string", '{"a": [{"cidr": 10}]}', "a[0].cidr: takes a string"),
    ("cidr without /", '{"a": [{"cidr": "10.0.0.0"}]}', "one '/' required"),
    ("cidr mask not a number", '{"a": [{"cidr": "10.0.0.0/x"}]}', "mask bits must be an integer"),
    ("cidr negative mask", '{"a": [{"cidr": "10.0.0.0/-1"}]}', "must not be negative"),
    ("cidr not an address", '{"a": [{"cidr": "10.0.0.300/8"}]}', "'10.0.0.300' is not an IP"),
    ("cidr /32", '{"a": [{"cidr": "10.0.0.1/32"}]}', "IPv4 mask bits must be below 32"),
    ("cidr /128", '{"a": [{"cidr": "::1/128"}]}', "IPv6 mask bits must be below 128"),
    # numeric
    ("numeric not an array", '{"a": [{"numeric": 5}]}', "a[0].numeric: takes an array"),
    ("numeric empty", '{"a": [{"numeric": []}]}', "a[0].numeric: starts with one of"),
    ("numeric bad op", '{"a": [{"numeric": ["!=", 1]}]}', "starts with one of =, <, <=, >, >="),
    ("numeric no number", '{"a": [{"numeric": [">"]}]}', "a[0].numeric: > needs a number"),
    ("numeric not a number", '{"a": [{"numeric": [">", "1"]}]}', "> needs a number"),
    ("numeric boolean", '{"a": [{"numeric": ["=", true]}]}', "= needs a number"),
    ("numeric beyond doubles", '{"a": [{"numeric": [">", 1e400]}]}', "cannot compare 1e400"),
    (
        "numeric not an exact double",
        '{"a": [{"numeric": ["<", 0.30000000000000001]}]}',
        "cannot compare 0.30000000000000001",
    ),
    ("numeric = extra", '{"a": [{"numeric": ["=", 1, 2]}]}', "too many elements after '='"),
    ("numeric < extra", '{"a": [{"numeric": ["<", 1, ">", 0]}]}', "too many elements after '<'"),
    ("numeric upper op", '{"a": [{"numeric": [">", 0, ">", 5]}]}', "upper bound is '<' or '<='"),
    ("numeric upper missing", '{"a": [{"numeric": [">", 0, "<"]}]}', "< needs a number"),
    ("numeric range extra", '{"a": [{"numeric": [">", 0, "<", 5, 6]}]}', "too many elements"),
    ("numeric inverted", '{"a": [{"numeric": [">", 5, "<", 1]}]}', "lower bound must be below"),
    ("numeric empty range", '{"a": [{"numeric": [">=", 5, "<=", 5]}]}', "lower bound must be"),
    # anything-but
    ("anything-but null", '{"a": [{"anything-but": null}]}', "a[0].anything-but: takes a string"),
    ("anything-but empty", '{"a": [{"anything-but": []}]}', "all strings or all numbers"),
    ("anything-but mixed", '{"a": [{"anything-but": ["x", 1]}]}', "all strings or all numbers"),
    ("anything-but booleans", '{"a": [{"anything-but": [true]}]}', "all strings or all numbers"),
    ("anything-but big number", '{"a": [{"anything-but": 1e400}]}', "cannot compare 1e400"),
    ("anything-but empty form", '{"a": [{"anything-but": {}}]}', "takes one of equals-ignore-case"),
    (
        "anything-but numeric form",
        '{"a": [{"anything-but": {"numeric": [">", 1]}}]}',
        "'numeric' is not supported here",
    ),
    (
        "anything-but two forms",
        '{"a": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}',
        "takes exactly one of",
    ),
    ("anything-but prefix number", '{"a": [{"anything-but": {"prefix": 5}}]}', "takes a string"),
    (
        "anything-but empty prefix",
        '{"a": [{"anything-but": {"prefix": ""}}]}',
        "an empty prefix is not allowed",
    ),
    (
        "anything-but empty suffix in a list",
        '{"a": [{"anything-but": {"suffix": ["x", ""]}}]}',
        "an empty suffix is not allowed",
    ),
    (
        "anything-but empty list of prefixes",
        '{"a": [{"anything-but": {"prefix": []}}]}',
        "takes a string or a non-empty array of strings",
    ),
    (
        "anything-but ignore-case number",
        '{"a": [{"anything-but": {"equals-ignore-case": [1]}}]}',
        "equals-ignore-case[0]: takes a string",
    ),
    (
        "anything-but bad wildcard",
        '{"a": [{"anything-but": {"wildcard": "**"}}]}',
        "consecutive wildcard characters",
    ),
    # $or
    ("$or not an array", '{"$or": {"a": [1]}}', "$or: $or takes an array of pattern objects"),
    ("$or one branch", '{"$or": [{"a": [1]}]}', "$or: $or needs at least two pattern objects"),
    ("$or branch not an object", '{"$or": [{"a": [1]}, [1]]}', "$or[1]: each $or branch"),
    ("$or empty branch", '{"$or": [{"a": [1]}, {}]}', "$or[1]: an empty object is not allowed"),
    (
        "reserved name in $or",
        '{"$or": [{"prefix": [1]}, {"b": [1]}]}',
        "$or[0].prefix: 'prefix' is reserved",
    ),
    (
        "reserved name deep in $or",
        '{"x": {"$or": [{"a": {"numeric": [1]}}, {"b": [1]}]}}',
        "x.$or[0].a.numeric: 'numeric' is reserved",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [r[1:] for r in REJECTED], ids=[r[0] for r in REJECTED]
)
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidPatternError) as info:
        FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_reserved_names_are_fine_outside_or() -> None:
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"prefix": ["x"]}'}]})
    assert criteria.matches({"prefix": "x"})


def test_at_most_five_filters_by_default() -> None:
    with pytest.raises(InvalidPatternError, match="at most 5 filters, got 6"):
        FilterCriteria.parse({"Filters": [{"Pattern": '{"a": [1]}'}] * 6})


def test_filters_must_be_a_list_of_patterns() -> None:
    with pytest.raises(InvalidPatternError, match="Filters must be an array"):
        FilterCriteria.parse({"Filters": {"Pattern": "{}"}})
    with pytest.raises(InvalidPatternError, match="a filter needs a Pattern string"):
        FilterCriteria.parse({"Filters": [{"pattern": '{"a": [1]}'}]})


def test_the_filter_is_named_when_there_are_several() -> None:
    with pytest.raises(InvalidPatternError, match=r"^Filters\[1\]: a\[0\]: unknown operator"):
        FilterCriteria.parse(
            {"Filters": [{"Pattern": '{"a": [1]}'}, {"Pattern": '{"a": [{"like": 1}]}'}]}
        )


def test_at_most_256_fields_in_a_sub_rule() -> None:
    def pattern(count: int) -> str:
        return json.dumps({f"k{i}": [1] for i in range(count)})

    assert FilterCriteria.parse({"Filters": [{"Pattern": pattern(256)}]})
    with pytest.raises(InvalidPatternError, match="at most 256 fields"):
        FilterCriteria.parse({"Filters": [{"Pattern": pattern(257)}]})


def test_or_expansion_is_bounded() -> None:
    branches: dict[str, Any] = {"$or": [{"a": [1]}, {"b": [1]}, {"c": [1]}, {"d": [1]}]}
    nested = {f"k{i}": branches for i in range(6)}  # 4 ** 6 alternatives
    with pytest.raises(InvalidPatternError, match="expands to more than 1024 alternatives"):
        FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(nested)}]})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
operator_objects = st.dictionaries(
    st.sampled_from(["prefix", "suffix", "numeric", "anything-but", "exists", "cidr", "wildcard"]),
    json_values,
    min_size=1,
    max_size=2,
)
pattern_like = st.recursive(
    st.lists(json_values | operator_objects, max_size=3),
    lambda inner: (
        st.dictionaries(st.sampled_from(["a", "b", "$or", "prefix"]), inner, max_size=3)
        | st.lists(inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(pattern=pattern_like | st.text(max_size=40), record=json_values)
def test_any_input_is_either_compiled_or_refused_as_invalid(pattern: Any, record: Any) -> None:
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    try:
        criteria = FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    except InvalidPatternError:
        return
    criteria.matches(record if isinstance(record, dict) else {"a": record})
