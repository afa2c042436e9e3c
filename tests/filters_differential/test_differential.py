"""esmd's filter engine against AWS's own, event-ruler, on the same patterns and events.

AWS's documented examples first, then hypothesis-generated (pattern, event) pairs covering
every operator, the grammar's rejections, ``$or``, arrays of objects and keys joined with
dots (at least 10,000 pairs per run, derandomized so CI repeats itself). Any disagreement
fails: a match, or accepting versus refusing a pattern. Every pair is also decided by
esmd's interpreted (exact) engine, which must agree with its generated code.

Keys here are ``a``, ``b``, ``c`` and dotted ones: the payload keys (``body``, ``value``,
...) follow Lambda's documented payload rules instead, which event-ruler knows nothing of
(docs/filters.md). One event-ruler JVM serves the whole module; each test stands alone.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.filters import FilterCriteria, InvalidPatternError
from service.filters.complexity import complexity
from service.filters.grammar import compile_pattern
from tests.filters_differential.ruler import Ruler, Unstable, tools_present
from tests.filters_differential.strategies import (
    OPERATORS,
    events,
    patterns,
    wildcard_patterns,
    witness,
)

EVENTS_PER_PATTERN = 24
PATTERNS = 700  # x 24 events: about 16,000 pairs, of which at least 10,000 must be accepted
MIN_PAIRS = 10_000


@pytest.fixture(scope="module")
def ruler() -> Iterator[Ruler]:
    if not tools_present():
        pytest.skip("java, javac and mvn are needed to run event-ruler")
    with Ruler() as r:
        yield r


def esmd_decide(pattern: str, events: list[str]) -> list[bool] | str:
    try:
        criteria = FilterCriteria.parse({"Filters": [{"Pattern": pattern}]})
    except InvalidPatternError as exc:
        return str(exc)
    interpreted = FilterCriteria.parse({"Filters": [{"Pattern": pattern}]}, generated=False)
    records = [orjson.loads(event) for event in events]
    fast = [criteria.matches(record) for record in records]
    slow = [interpreted.matches(record) for record in records]
    assert fast == slow, f"pattern {pattern}: generated code {fast} != exact engine {slow}"
    return fast


def keys_of(pattern: Any) -> list[str]:
    if isinstance(pattern, dict):
        return [*pattern, *(k for v in pattern.values() for k in keys_of(v))]
    if isinstance(pattern, list):
        return [k for v in pattern for k in keys_of(v)]
    return []


def compare(
    ruler: Ruler, pattern: Any, events: list[Any], seen: Counter[str] | None = None
) -> None:
    """event-ruler and esmd agree on the pattern and each event; ``seen`` counts what was
    compared."""
    seen = Counter() if seen is None else seen
    text = pattern if isinstance(pattern, str) else json.dumps(pattern)
    texts = [json.dumps(event) for event in events]
    theirs, ours = ruler.decide(text, texts), esmd_decide(text, texts)
    if isinstance(theirs, Unstable):
        seen["event-ruler unstable"] += 1  # no reference answer (see ruler.Unstable)
        return
    if isinstance(theirs, str) or isinstance(ours, str):
        assert isinstance(theirs, str) == isinstance(ours, str), (
            f"pattern {text}: event-ruler {'refuses' if isinstance(theirs, str) else 'accepts'}"
            f" ({theirs}), esmd {'refuses' if isinstance(ours, str) else 'accepts'} ({ours})"
        )
        seen["rejected patterns"] += 1
        return
    wrong = [(t, r, o) for t, r, o in zip(texts, theirs, ours, strict=True) if r != o]
    assert not wrong, f"pattern {text}: (event, event-ruler, esmd) {wrong}"
    seen["pairs"] += len(texts)
    seen["matches"] += sum(ours)
    for op in OPERATORS:
        if f'"{op}"' in text:
            seen[op] += 1
    if any("." in key for key in keys_of(pattern)):
        seen["dotted keys"] += 1


# --- AWS's documented examples -------------------------------------------------------------
# Lambda developer guide, "Control which events Lambda sends to your function" (the filter
# rule syntax table) and EventBridge user guide, "Content filtering in event patterns".

DOC_EVENT = {
    "RetailCountry": "US",
    "Weather": "Sunny",
    "Price": 24,
    "State": "WA",
    "Location": "Seattle",
    "Day": "Monday",
    "UserID": None,
    "LastName": "",
    "Name": "Apple",
    "City": "Seattle",
    "Region": "us-west-2",
    "ProductName": "Phone",
    "FileName": "photo.png",
    "Sum": 10,
    "Email": "a@example.com",
    "SourceIPAddress": "10.0.0.255",
    "PaymentType": "Credit",
    "Temperature": 55,
    "Keys": {"Id": {"N": "101"}},
}
DOC_PATTERNS: list[dict[str, Any]] = [
    {"UserID": [None]},
    {"LastName": [""]},
    {"Name": ["Alice"]},
    {"Name": [{"equals-ignore-case": "alice"}]},
    {"Location": ["New York"], "Day": ["Monday"]},
    {"PaymentType": ["Credit", "Debit"]},
    {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]},
    {"Weather": [{"anything-but": ["Raining"]}]},
    {"Price": [{"numeric": ["=", 100]}]},
    {"Price": [{"numeric": [">", 10, "<=", 20]}]},
    {"ProductName": [{"exists": True}]},
    {"ProductName": [{"exists": False}]},
    {"Region": [{"prefix": "us-"}]},
    {"FileName": [{"suffix": ".png"}]},
    {"Temperature": [{"numeric": [">", 50, "<=", 60]}]},
    {"Keys": {"Id": {"N": ["101"]}}},
    {"City": [{"prefix": {"equals-ignore-case": "SEA"}}]},
    {"FileName": [{"suffix": {"equals-ignore-case": ".PNG"}}]},
    {"Email": [{"wildcard": "*@example.com"}]},
    {"SourceIPAddress": [{"cidr": "10.0.0.0/24"}]},
    {"Location": ["Seattle"], "$or": [{"Weather": ["Sunny"]}, {"Sum": [5]}]},
    {"RetailCountry": [{"anything-but": {"prefix": "U"}}]},
    {"State": [{"anything-but": {"suffix": "A"}}]},
    {"Name": [{"anything-but": {"equals-ignore-case": ["APPLE", "pear"]}}]},
    {"Email": [{"anything-but": {"wildcard": "*@example.org"}}]},
    {"Price": [{"anything-but": [100, 24]}]},
    {"Region": [{"anything-but": "us-east-1"}]},
]


def test_documented_examples(ruler: Ruler) -> None:
    variants = [
        DOC_EVENT,
        {**DOC_EVENT, "Price": 15, "Weather": "Raining", "Location": "New York"},
        {**DOC_EVENT, "Name": "alice", "City": "sea", "Email": "b@example.org", "Price": 100},
        {**DOC_EVENT, "SourceIPAddress": "10.0.1.1", "Region": "eu-west-1", "Day": "Sunday"},
        {"Keys": [{"Id": {"N": "101"}}], "PaymentType": ["Debit"]},
        {},
    ]
    for pattern in DOC_PATTERNS:
        compare(ruler, pattern, variants)


# --- corners --------------------------------------------------------------------------------
# Where event-ruler's rules are least obvious: array consistency, exists: false under arrays
# of objects (decided by key order: esmd's exact engine), repeated keys, $or replacing keys,
# numbers that are no exact double, IP literals, case mapping beyond ASCII.

CORNERS: list[tuple[str, list[Any]]] = [
    (
        '{"x": {"a": [{"exists": false}], "b": [1]}}',
        [{"x": [{"b": 1}, {"a": 5}]}, {"x": [{"b": 1}]}, {"x": {"b": 1}}, {"x": [[{"b": 1}]]}],
    ),
    (
        '{"x": {"b": [1], "z": [{"exists": false}]}}',
        [{"x": [{"b": 1}, {"z": 5}]}, {"x": [{"b": 1, "z": 2}, {"z": 5}]}, {"x": [{"b": [1]}]}],
    ),
    (
        '{"x": {"y": {"a": [{"exists": false}]}, "b": [1]}}',
        [{"x": [{"b": 1, "y": [{"a": 1}, {}]}]}, {"x": [{"b": 1, "y": [{}]}, {"y": {"a": 1}}]}],
    ),
    (
        '{"a": [1], "b": {"c": [2], "d": [{"exists": false}]}}',
        [{"a": [1, 1], "b": [{"c": 2}, {"c": 2, "d": 0}]}, {"a": 1, "b": [[{"c": [2]}], {"d": 1}]}],
    ),
    (
        '{"a": {"b": [1], "c": [2]}}',
        [{"a": [{"b": 1, "c": 3}, {"b": 4, "c": 2}]}, {"a": [[{"b": 1}], [{"c": 2}]]}],
    ),
    ('{"a": {"b": [1], "c": [2]}}', [{"a": [[{"b": 1, "c": 2}]]}, {"a": [{"b": [1, 5], "c": 2}]}]),
    ('{"a": [1], "a": [2]}', [{"a": 1}, {"a": 2}]),
    ('{"a": {"x": [1]}, "a": {"y": [2]}}', [{"a": {"x": 1, "y": 2}}, {"a": {"y": 2}}]),
    ('{"a": [1], "$or": [{"a": [2]}, {"b": [3]}]}', [{"a": 2}, {"a": 1, "b": 3}, {"a": 1}]),
    ('{"$or": [{"a": [2]}, {"b": [3]}], "a": [1]}', [{"a": 2}, {"a": 1, "b": 3}, {"a": 1}]),
    ('{"a": [12345678901234567890]}', [{"a": 12345678901234567890}, {"a": 1.2345678901234567e19}]),
    ('{"a": [{"numeric": [">", 1e19]}]}', [{"a": 10**20}, {"a": 12345678901234567890}]),
    ('{"a": [{"numeric": ["<", 0]}]}', [{"a": -(2**60)}, {"a": -(2**53)}, {"a": -0.0}]),
    ('{"a": [5]}', [{"a": 5.0}, {"a": 5.000000000000001}, {"a": "5"}]),
    ('{"ip": [{"cidr": "10.0.0.0/8"}]}', [{"ip": "a00:1::"}, {"ip": "b00::"}, {"ip": "010.1.2.3"}]),
    ('{"ip": ["10.0.0.1"]}', [{"ip": "::ffff:a00:1"}, {"ip": "a00:1::5"}, {"ip": "10.0.0.01"}]),
    ('{"ip": [{"cidr": "::/8"}]}', [{"ip": "0.0.0.1"}, {"ip": "0.0.0.0"}, {"ip": "1.0.0.0"}]),
    ('{"a": [{"equals-ignore-case": "k"}]}', [{"a": "K"}, {"a": "\u212a"}]),
    ('{"a": [{"equals-ignore-case": "\u00df"}]}', [{"a": "SS"}, {"a": "ss"}, {"a": "\u00df"}]),
    ('{"a": [{"equals-ignore-case": "\U0001f600"}]}', [{"a": "\U0001f600"}, {"a": "??"}]),
    ('{"a": [{"prefix": {"equals-ignore-case": "\u0130"}}]}', [{"a": "i\u0307x"}, {"a": "ix"}]),
    (r'{"a": [{"wildcard": "a\\\\*\\*"}]}', [{"a": "a\\b*"}, {"a": "a\\*"}, {"a": "ab*"}]),
    # keys joined with dots, on both sides (EventBridge's documented caveat)
    (
        '{"detail": {"state.status": ["running"]}}',
        [
            {"detail": {"state": {"status": "running"}}},
            {"detail.state": {"status": "running"}},
            {"detail": {"state.status": "running"}},
            {"detail.state.status": "running"},
            {"detail": {"state": [{"status.x": "running"}]}},
        ],
    ),
    ('{"a": {"b": [1]}, "a.b": [2]}', [{"a": {"b": 1}}, {"a.b": 2}]),
    ('{"a": {"b": [1], "c": [2]}}', [{"a": [{"b": 1}], "a.c": 2}, {"a": [{"b": 1}, {"c.d": 2}]}]),
    ('{"a": {"b": [{"exists": false}]}}', [{"a.b": 1}, {"a": {"b.c": 1}}, {"a.b": {"c": 1}}]),
    ('{"a": {"b": [{"anything-but": 1}]}}', [{"a": {"b": 1}, "a.b": 2}, {"a": {"b": 1}}]),
    # an empty key: read only when the pattern has an empty part before its names' ends
    ('{"a.": [1]}', [{"a.": 1}, {"a": {"": 1}}]),
    ('{"a.": [1], "x..y": [2]}', [{"a": {"": 1}, "x..y": 2}, {"a.": 1, "x": {"": {"y": 2}}}]),
    ('{"": {"a": [1]}}', [{"a": 1}, {".a": 1}, {"": {"a": 1}}]),
    ('{"": {"": [1]}, "$or": [{"b": [1]}, {".": [2]}]}', [{"": 1, "b": 1}, {".": 2, "": 1}]),
    # ... with the steps of its own $or branch (each branch in a machine of its own)
    ('{"$or": [{"a.": [1]}, {"x..y": [2]}]}', [{"a": {"": 1}}, {"a.": 1}, {"x": {"": {"y": 2}}}]),
]


def test_corners_agree(ruler: Ruler) -> None:
    for pattern, records in CORNERS:
        compare(ruler, pattern, records)


# --- generated -----------------------------------------------------------------------------


def test_generated_pairs_agree(ruler: Ruler) -> None:
    """Generated pairs agree; then the generator itself is checked: each operator reached
    event-ruler in accepted patterns, so did dotted keys, matches and non-matches both
    happened, and enough pairs were compared. (One test, so that it needs no other to run
    first: ``pytest tests/filters_differential -k generated`` runs it all.)"""
    seen: Counter[str] = Counter()

    @settings(
        max_examples=PATTERNS,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(pattern=patterns, data=st.data())
    def pairs_agree(pattern: dict[str, Any], data: st.DataObject) -> None:
        batch = [
            data.draw(st.one_of(events, witness(pattern), witness(pattern)))
            for _ in range(EVENTS_PER_PATTERN)
        ]
        compare(ruler, pattern, batch, seen)

    pairs_agree()
    assert seen["pairs"] >= MIN_PAIRS, seen
    assert seen["rejected patterns"] > 0, seen
    assert seen["dotted keys"] > 0, seen
    assert seen["event-ruler unstable"] < PATTERNS / 50, seen
    assert 0.05 < seen["matches"] / seen["pairs"] < 0.95, seen
    missing = [op for op in OPERATORS if seen[op] == 0]
    assert not missing, f"never generated: {missing} ({seen})"


# --- wildcard complexity -------------------------------------------------------------------


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(pattern=wildcard_patterns)
def test_wildcard_complexity_agrees(ruler: Ruler, pattern: dict[str, Any]) -> None:
    """esmd's wildcard complexity (for EventBridge's "Rule is too complex") is the number
    event-ruler's MachineComplexityEvaluator gives the machine of the pattern's wildcard
    sub-rules. (Patterns stay small: event-ruler's evaluator grows exponentially.)"""
    text = json.dumps(pattern)
    try:
        rules = compile_pattern(text)
    except InvalidPatternError:
        assert isinstance(ruler.complexity(text, 1000), str), text
        return
    assert complexity(rules) == ruler.complexity(text, 1000), text
