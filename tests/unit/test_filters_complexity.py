"""EventBridge's "Rule is too complex": wildcard patterns above the complexity limit are
refused (service/filters/complexity.py; docs/filters.md). The counts here are event-ruler
2.1.0's MachineComplexityEvaluator's (tests/filters_differential compares many more)."""

from __future__ import annotations

import json
import string
import time
from typing import Any

import pytest

from service.filters import FilterCriteria, InvalidPatternError
from service.filters.complexity import MAX_COMPLEXITY, complexity, java_set_order
from service.filters.grammar import compile_pattern


def of(pattern: dict[str, Any]) -> int:
    return complexity(compile_pattern(json.dumps(pattern)))


def wildcards(*texts: str) -> dict[str, Any]:
    return {"a": [{"wildcard": text} for text in texts]}


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["abc"], 1),
        (["*"], 2),
        (["a*"], 2),
        (["*a"], 2),
        (["*a*"], 3),
        (["*aa*"], 4),
        (["*a*a*a*"], 7),  # event-ruler's own example: "*", "*a", "*a*", ... "*a*a*a*"
        (["*a*b*c*d*e*"], 7),
        (["*a*a*a*a*a*"], 11),
        (["*x*", "*y*"], 6),
        (["x*y", "x*z"], 4),  # "x is shared: it counts both patterns
        (["*a", "*b", "*c", "*d"], 8),
        (["a*", "b*", "c*", "d*"], 4),
        (["*é*"], 3),  # é is two bytes, matched one at a time
        ([f"*:stack/{name}/*" for name in "abcd"], 12),
    ],
)
def test_counts_as_event_ruler(texts: list[str], expected: int) -> None:
    assert of(wildcards(*texts)) == expected


def test_anything_but_wildcards_count_too() -> None:
    assert of({"a": [{"anything-but": {"wildcard": "*x*"}}]}) == 3
    # the values of one anything-but count once where they share states; past a "*",
    # event-ruler shares none on a letter (it has two cases), but does on a digit
    assert of({"a": [{"anything-but": {"wildcard": ["*a*", "*b*", "*c*", "*d*"]}}]}) == 6
    assert of({"a": [{"anything-but": {"wildcard": ["*aa*", "*ab*"]}}]}) == 6
    assert of({"a": [{"anything-but": {"wildcard": ["*1a*", "*1b*"]}}]}) == 4


def test_fields_and_branches() -> None:
    assert of({"a": [{"wildcard": "*x*"}], "b": [{"wildcard": "*y*"}]}) == 3  # the most of one
    assert of({"$or": [{"a": [{"wildcard": "*x*"}]}, {"a": [{"wildcard": "*y*"}]}]}) == 6
    # branches that differ before the field do not share its machine
    split = {
        "$or": [{"a": ["1"], "z": [{"wildcard": "*x*"}]}, {"a": ["2"], "z": [{"wildcard": "*y*"}]}]
    }
    assert of(split) == 3
    joined = {
        "$or": [{"a": ["1"], "z": [{"wildcard": "*x*"}]}, {"a": ["1"], "z": [{"wildcard": "*y*"}]}]
    }
    assert of(joined) == 6
    assert of({"a": ["x", {"prefix": "y"}]}) == 0  # no wildcard, no complexity


WORDS = [a + b for a in string.ascii_lowercase for b in "xyz"]


def test_the_limit() -> None:
    # each "*xx*" keeps three prefixes alive at once; 33 of them are 99, 34 are 102
    at_limit = wildcards(*(f"*{w}*" for w in WORDS[:33]))
    above = wildcards(*(f"*{w}*" for w in WORDS[:34]))
    assert of(at_limit) == 99 <= MAX_COMPLEXITY < of(above) == 102
    FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(at_limit)}]})
    with pytest.raises(InvalidPatternError, match="Rule is too complex") as refused:
        FilterCriteria.parse(
            {"Filters": [{"Pattern": '{"b": [1]}'}, {"Pattern": json.dumps(above)}]}
        )
    assert str(refused.value).startswith("Filters[1]: Rule is too complex")
    assert "102, above the limit of 100" in str(refused.value)


def test_repeating_sequences_after_a_wildcard() -> None:
    assert of(wildcards("*" + "a" * 98 + "*")) == 100
    with pytest.raises(InvalidPatternError, match="Rule is too complex"):
        FilterCriteria.parse(
            {"Filters": [{"Pattern": json.dumps(wildcards("*" + "a" * 99 + "*"))}]}
        )
    assert of(wildcards("*" + "ab" * 48 + "*")) < MAX_COMPLEXITY  # no repeats, fewer prefixes


@pytest.mark.parametrize(
    "pattern",
    [
        wildcards(*(f"*{w}*" for w in WORDS)),  # event-ruler's own evaluator runs out of heap
        wildcards("*" + "*".join("a" * 2000) + "*"),
        wildcards("*" + "a" * 4000 + "*"),
        wildcards(*(f"{w}*{w}*" for w in WORDS)),
        {"a": [{"anything-but": {"wildcard": [f"*{w}*" for w in WORDS]}}]},
    ],
)
def test_the_count_stays_quick_on_any_pattern(pattern: dict[str, Any]) -> None:
    rules = compile_pattern(json.dumps(pattern))  # at most 4,096 characters
    started = time.perf_counter()
    complexity(rules)
    assert time.perf_counter() - started < 1.0


def test_java_hash_set_order() -> None:
    # String.hashCode spread over 16 buckets: "a" is 97 -> bucket 1, "b" 98 -> 2, "p" 112 -> 0
    assert java_set_order(("a", "b", "p", "a")) == ["p", "a", "b"]
