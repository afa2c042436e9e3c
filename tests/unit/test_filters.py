"""Every operator's match and non-match, and FilterCriteria's own behaviour.

Expectations are event-ruler's (checked against it in tests/filters_differential).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.filters import FilterCriteria


def matches(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    return FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(pattern)}]}).matches(record)


CASES: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    # exact values
    ("exact string", {"a": ["x"]}, {"a": "x"}, True),
    ("exact string miss", {"a": ["x"]}, {"a": "y"}, False),
    ("exact string is case-sensitive", {"a": ["x"]}, {"a": "X"}, False),
    ("exact number", {"a": [5]}, {"a": 5.0}, True),
    ("exact number miss", {"a": [5]}, {"a": 6}, False),
    ("exact float", {"a": [2.5]}, {"a": 2.5}, True),
    ("3.0e2 is 300", {"a": [3.0e2]}, {"a": 300}, True),
    ("number is not a string", {"a": [5]}, {"a": "5"}, False),
    ("string is not a number", {"a": ["5"]}, {"a": 5}, False),
    ("boolean", {"a": [True]}, {"a": True}, True),
    ("boolean miss", {"a": [True]}, {"a": False}, False),
    ("true is not 1", {"a": [True]}, {"a": 1}, False),
    ("1 is not true", {"a": [1]}, {"a": True}, False),
    ("null", {"a": [None]}, {"a": None}, True),
    ("null is not missing", {"a": [None]}, {}, False),
    ("null is not the string", {"a": [None]}, {"a": "null"}, False),
    ("empty string", {"a": [""]}, {"a": ""}, True),
    ("empty string is not missing", {"a": [""]}, {}, False),
    ("an IP matches as an address", {"a": ["10.0.0.1"]}, {"a": "010.0.0.1"}, True),
    ("an IP miss", {"a": ["10.0.0.1"]}, {"a": "10.0.0.2"}, False),
    # structure
    ("OR across values", {"a": ["x", "y"]}, {"a": "y"}, True),
    ("AND across keys", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "y"}, True),
    ("AND across keys miss", {"a": ["x"], "b": ["y"]}, {"a": "x", "b": "z"}, False),
    ("a key the pattern does not name is ignored", {"a": ["x"]}, {"a": "x", "z": 1}, True),
    ("nested", {"a": {"b": ["x"]}}, {"a": {"b": "x"}}, True),
    ("nested miss", {"a": {"b": ["x"]}}, {"a": {"c": "x"}}, False),
    ("nested under a scalar", {"a": {"b": ["x"]}}, {"a": "x"}, False),
    ("array element", {"a": ["x"]}, {"a": ["w", "x"]}, True),
    ("array no element", {"a": ["x"]}, {"a": ["w", "v"]}, False),
    ("nested arrays", {"a": [5]}, {"a": [[1], [2, [5]]]}, True),
    ("array of objects", {"a": {"b": [2]}}, {"a": [{"b": 1}, {"b": 2}]}, True),
    ("one element holds both keys", {"a": {"b": [1], "c": [2]}}, {"a": [{"b": 1, "c": 2}]}, True),
    (
        "array consistency",
        {"a": {"b": [1], "c": [2]}},
        {"a": [{"b": 1, "c": 0}, {"b": 0, "c": 2}]},
        False,
    ),
    ("an object is no value", {"a": ["x"]}, {"a": {"b": "x"}}, False),
    # prefix / suffix / equals-ignore-case / wildcard
    ("prefix", {"a": [{"prefix": "ab"}]}, {"a": "abc"}, True),
    ("prefix miss", {"a": [{"prefix": "ab"}]}, {"a": "cab"}, False),
    ("prefix is for strings", {"a": [{"prefix": "1"}]}, {"a": 12}, False),
    ("empty prefix takes any string", {"a": [{"prefix": ""}]}, {"a": "q"}, True),
    ("prefix ignore case", {"a": [{"prefix": {"equals-ignore-case": "AB"}}]}, {"a": "aBc"}, True),
    (
        "prefix ignore case miss",
        {"a": [{"prefix": {"equals-ignore-case": "AB"}}]},
        {"a": "c"},
        False,
    ),
    ("suffix", {"a": [{"suffix": ".png"}]}, {"a": "x.png"}, True),
    ("suffix miss", {"a": [{"suffix": ".png"}]}, {"a": "x.jpg"}, False),
    ("suffix is for strings", {"a": [{"suffix": "5"}]}, {"a": 5}, False),
    (
        "suffix ignore case",
        {"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
        {"a": "x.Png"},
        True,
    ),
    (
        "suffix ignore case miss",
        {"a": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
        {"a": "x.jpg"},
        False,
    ),
    ("equals-ignore-case", {"a": [{"equals-ignore-case": "HeLLo"}]}, {"a": "hello"}, True),
    ("equals-ignore-case miss", {"a": [{"equals-ignore-case": "hello"}]}, {"a": "hell"}, False),
    (
        "equals-ignore-case ß is SS",
        {"a": [{"equals-ignore-case": "straße"}]},
        {"a": "STRASSE"},
        True,
    ),
    ("wildcard", {"a": [{"wildcard": "*.png"}]}, {"a": "dir/x.png"}, True),
    ("wildcard middle", {"a": [{"wildcard": "a*c"}]}, {"a": "abbc"}, True),
    ("wildcard several", {"a": [{"wildcard": "*a*b*"}]}, {"a": "xaybz"}, True),
    ("wildcard miss", {"a": [{"wildcard": "a*c"}]}, {"a": "abcd"}, False),
    ("wildcard without a star", {"a": [{"wildcard": "abc"}]}, {"a": "abc"}, True),
    ("wildcard escaped star", {"a": [{"wildcard": "a\\*c"}]}, {"a": "a*c"}, True),
    ("wildcard escaped star miss", {"a": [{"wildcard": "a\\*c"}]}, {"a": "abc"}, False),
    ("wildcard escaped backslash", {"a": [{"wildcard": "a\\\\*"}]}, {"a": "a\\b"}, True),
    ("wildcard is for strings", {"a": [{"wildcard": "*"}]}, {"a": 5}, False),
    ("exactly", {"a": [{"exactly": "10.0.0.1"}]}, {"a": "10.0.0.1"}, True),
    ("exactly is not an address", {"a": [{"exactly": "10.0.0.1"}]}, {"a": "010.0.0.1"}, False),
    # numeric
    ("numeric >", {"a": [{"numeric": [">", 10]}]}, {"a": 11}, True),
    ("numeric > miss", {"a": [{"numeric": [">", 10]}]}, {"a": 10}, False),
    ("numeric >=", {"a": [{"numeric": [">=", 10]}]}, {"a": 10}, True),
    ("numeric >= miss", {"a": [{"numeric": [">=", 10]}]}, {"a": 9.99}, False),
    ("numeric <", {"a": [{"numeric": ["<", 0]}]}, {"a": -0.5}, True),
    ("numeric < miss", {"a": [{"numeric": ["<", 0]}]}, {"a": 0}, False),
    ("numeric <=", {"a": [{"numeric": ["<=", 0]}]}, {"a": 0}, True),
    ("numeric <= miss", {"a": [{"numeric": ["<=", 0]}]}, {"a": 0.1}, False),
    ("numeric =", {"a": [{"numeric": ["=", 300]}]}, {"a": 3.0e2}, True),
    ("numeric = miss", {"a": [{"numeric": ["=", 300]}]}, {"a": 301}, False),
    ("numeric range", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
    ("numeric range open bottom", {"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 0}, False),
    ("numeric range closed", {"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 0}, True),
    ("numeric range open top", {"a": [{"numeric": [">=", 0, "<", 5]}]}, {"a": 5}, False),
    ("numeric is for numbers", {"a": [{"numeric": [">", 1]}]}, {"a": "5"}, False),
    ("numbers compare as numbers", {"a": [{"numeric": ["<", 100]}]}, {"a": 20}, True),
    ("numbers compare as numbers, not text", {"a": [{"numeric": [">", 9]}]}, {"a": 10}, True),
    ("-0 is 0", {"a": [{"numeric": ["=", 0]}]}, {"a": -0.0}, True),
    ("2**53 compares", {"a": [{"numeric": [">", 0]}]}, {"a": 2**53}, True),
    (
        "2**60 is no double event-ruler compares",
        {"a": [{"numeric": [">", 0]}]},
        {"a": 2**60},
        False,
    ),
    ("booleans are no numbers", {"a": [{"numeric": [">", 0]}]}, {"a": True}, False),
    # exists
    ("exists true", {"a": [{"exists": True}]}, {"a": "x"}, True),
    ("exists true on null", {"a": [{"exists": True}]}, {"a": None}, True),
    ("exists true missing", {"a": [{"exists": True}]}, {}, False),
    ("exists true on an object", {"a": [{"exists": True}]}, {"a": {"b": 1}}, False),
    ("exists true on an empty array", {"a": [{"exists": True}]}, {"a": []}, False),
    ("exists false", {"a": [{"exists": False}]}, {}, True),
    ("exists false present", {"a": [{"exists": False}]}, {"a": "x"}, False),
    ("exists false on null", {"a": [{"exists": False}]}, {"a": None}, False),
    ("exists false on an empty array", {"a": [{"exists": False}]}, {"a": []}, True),
    ("exists false on an object", {"a": [{"exists": False}]}, {"a": {"b": 1}}, True),
    ("exists false nested", {"a": {"b": [{"exists": False}]}}, {"a": {"c": 1}}, True),
    ("exists false nested, no parent", {"a": {"b": [{"exists": False}]}}, {}, True),
    ("exists false or a value", {"a": [{"exists": False}, "x"]}, {"a": "x"}, True),
    # anything-but
    ("anything-but value", {"a": [{"anything-but": "x"}]}, {"a": "y"}, True),
    ("anything-but value miss", {"a": [{"anything-but": "x"}]}, {"a": "x"}, False),
    ("anything-but list", {"a": [{"anything-but": ["x", "y"]}]}, {"a": "y"}, False),
    ("anything-but takes other types", {"a": [{"anything-but": "x"}]}, {"a": 5}, True),
    ("anything-but needs the key", {"a": [{"anything-but": ["x"]}]}, {}, False),
    ("anything-but any element", {"a": [{"anything-but": "x"}]}, {"a": ["x", "y"]}, True),
    ("anything-but numbers", {"a": [{"anything-but": [1, 2]}]}, {"a": 3}, True),
    ("anything-but numbers miss", {"a": [{"anything-but": [1, 2]}]}, {"a": 2.0}, False),
    ("anything-but a number", {"a": [{"anything-but": 5}]}, {"a": "5"}, True),
    ("anything-but prefix", {"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "out"}, True),
    ("anything-but prefix miss", {"a": [{"anything-but": {"prefix": "in"}}]}, {"a": "init"}, False),
    (
        "anything-but prefixes",
        {"a": [{"anything-but": {"prefix": ["in", "ex"]}}]},
        {"a": "exit"},
        False,
    ),
    ("anything-but prefix on numbers", {"a": [{"anything-but": {"prefix": "1"}}]}, {"a": 1}, True),
    ("anything-but suffix", {"a": [{"anything-but": {"suffix": "ed"}}]}, {"a": "open"}, True),
    ("anything-but suffix other", {"a": [{"anything-but": {"suffix": "ed"}}]}, {"a": "shut"}, True),
    (
        "anything-but suffix match",
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
        "anything-but ignore case other",
        {"a": [{"anything-but": {"equals-ignore-case": "X"}}]},
        {"a": "y"},
        True,
    ),
    (
        "anything-but wildcard",
        {"a": [{"anything-but": {"wildcard": "*.tmp"}}]},
        {"a": "a.txt"},
        True,
    ),
    (
        "anything-but wildcard miss",
        {"a": [{"anything-but": {"wildcard": ["*.tmp", "*.bak"]}}]},
        {"a": "a.bak"},
        False,
    ),
    # cidr
    ("cidr", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"}, True),
    ("cidr miss", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.1"}, False),
    ("cidr not an ip", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "host"}, False),
    ("cidr not a number", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": 10}, False),
    ("cidr ipv6", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:DB8::1"}, True),
    ("cidr ipv6 miss", {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False),
    ("cidr leading zeros", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "010.0.0.7"}, True),
    ("cidr ipv4-mapped", {"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "::ffff:a00:7"}, True),
    # $or
    ("$or first", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x"}, True),
    ("$or second", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
    ("$or none", {"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "y", "b": "x"}, False),
    ("$or with AND", {"c": [1], "$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"a": "x", "c": 2}, False),
    ("$or nested", {"a": {"$or": [{"b": [1]}, {"c": [1]}]}}, {"a": {"c": 1}}, True),
    (
        "$or in $or",
        {"$or": [{"a": [1]}, {"$or": [{"b": [1]}, {"c": [1]}]}]},
        {"c": 1},
        True,
    ),
]


@pytest.mark.parametrize(
    ("pattern", "record", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_operator(pattern: dict[str, Any], record: dict[str, Any], expected: bool) -> None:
    assert matches(pattern, record) is expected


def test_any_filter_matching_is_enough() -> None:
    criteria = FilterCriteria.parse(
        {"Filters": [{"Pattern": '{"a": ["x"]}'}, {"Pattern": '{"b": ["y"]}'}]}
    )
    assert criteria.matches({"b": "y"})
    assert criteria.matches({"a": "x"})
    assert not criteria.matches({"a": "y"})
    assert len(criteria) == 2


@pytest.mark.parametrize("criteria", [None, {}, {"Filters": []}, {"Filters": None}])
def test_no_filters_match_everything(criteria: dict[str, Any] | None) -> None:
    parsed = FilterCriteria.parse(criteria)
    assert parsed.matches({"anything": 1})
    assert parsed.matches({})
    assert parsed.keys == frozenset()


def test_keys_name_the_top_level_keys_read() -> None:
    criteria = FilterCriteria.parse(
        {
            "Filters": [
                {"Pattern": '{"value": {"a": [1]}}'},
                {"Pattern": '{"$or": [{"topic": ["t"]}, {"partition": [0]}]}'},
            ]
        }
    )
    assert criteria.keys == {"value", "topic", "partition"}


def test_matcher_is_matches_as_one_function() -> None:
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"a": [{"prefix": "x"}]}'}]})
    assert criteria.matcher({"a": "xy"}) is True
    assert criteria.matcher({"a": "yx"}) is False


def test_max_filters_is_a_keyword() -> None:
    ten = {"Filters": [{"Pattern": '{"a": [1]}'}] * 10}
    assert len(FilterCriteria.parse(ten, max_filters=10)) == 10
