"""Fuzzing the filter engine: whatever the pattern text, ``FilterCriteria.parse`` raises
nothing but InvalidPatternError; whatever the record, ``.matches`` raises nothing, and the
generated code and the interpreted engine give the same answer.

Patterns and records are deep (to the 4,096-character limit, and to the 1,024 levels JSON
decoders allow), wide, unicode (lone surrogates, astral characters, dotted and empty keys),
hold huge numbers (beyond a double, beyond 64 bits, beyond Python's int-string limit) and odd
JSON (constants, bad escapes, truncations, trailing text). Derandomized, so CI repeats it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.filters import (
    MAX_PATTERN_CHARS,
    FilterCriteria,
    InvalidPatternError,
    RawPayload,
    parse_payload,
)
from tests.filters_differential.strategies import OPERATORS, patterns


@contextlib.contextmanager
def default_stack() -> Iterator[None]:
    """Python's default room on the stack, as a poller has it: hypothesis raises the
    recursion limit while it runs a test, which would hide a matcher recursing too deep."""
    frame: FrameType | None = sys._getframe()
    depth = 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 950)  # a poller decides records ~50 frames deep
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


FUZZ = settings(
    max_examples=1000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- scalars and keys --------------------------------------------------------------------------

HUGE_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "0.30000000000000001",
    "12345678901234567890",
    "-9223372036854775809",
    "1" + "0" * 300,
    "9" * 5000,  # beyond Python's 4,300-digit int-string limit
    "-0",
    "0e0",
    "1E+2",
]
ODD_TEXTS = [
    "",
    ".",
    "..",
    "a.b",
    "a..b",
    ".a",
    "a.",
    "$or",
    "exists",
    "numeric",
    "wildcard",
    "\ud800",  # a lone surrogate
    "\U0001f600",
    "\u212a",
    "ß",
    "İ",
    "\x00",
    "\u2028",
    "*",
    "**",
    "a\\",
    "10.0.0.1",
    "::ffff:a00:1",
    "a" * 300,
]
keys = st.one_of(st.sampled_from(["a", "b", "body", "value", *ODD_TEXTS]), st.text(max_size=6))
strings = st.one_of(st.sampled_from(ODD_TEXTS), st.text(max_size=12))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**53 + 1, 2**63, -(2**64), 10**30, 5e-324, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)


def json_values(max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


# --- pattern texts -----------------------------------------------------------------------------

operators = st.sampled_from([*OPERATORS, "=", "<", "anything-but", "exactly", "regex", "foo"])
operator_objects = st.builds(lambda op, arg: {op: arg}, operators, json_values(6))
pattern_values: st.SearchStrategy[Any] = st.recursive(
    st.lists(st.one_of(scalars, operator_objects), max_size=4),
    lambda inner: st.one_of(
        st.dictionaries(keys, inner, min_size=0, max_size=4),
        st.builds(lambda alts: {"$or": alts}, st.lists(inner, max_size=3)),
    ),
    max_leaves=12,
)


@st.composite
def deep(draw: st.DrawFn, inner: st.SearchStrategy[str], least: int, most: int) -> str:
    """A JSON text nested objects deep around ``inner``, mostly within 4,096 characters
    (arrays now and then: those are refused)."""
    middle = draw(inner)
    key = json.dumps(draw(st.sampled_from(["a", "", "", "a.b", "ß", "$or"])))
    opener, closer = (f"{{{key}:", "}") if draw(st.integers(0, 5)) else ("[", "]")
    fits = (MAX_PATTERN_CHARS - len(middle)) // (len(opener) + 1)
    depth = draw(st.integers(least, max(least, min(most, fits + draw(st.sampled_from([0, 2]))))))
    return opener * depth + middle + closer * depth


def mangle(text: str, cut: int, junk: str) -> str:
    """Odd JSON: cut short, junk spliced in."""
    cut = cut % (len(text) + 1)
    return text[:cut] + junk + text[cut:]


JUNK = ["", ",", "}", "]", "{", '"', "NaN", "Infinity", "-", "1e", "\\", "\ufeff", " x", "//"]

pattern_texts = st.one_of(
    patterns.map(json.dumps),  # the differential test's generator: every operator
    pattern_values.map(json.dumps),
    pattern_values.map(lambda value: json.dumps(value, ensure_ascii=False)),
    st.builds(
        mangle,
        patterns.map(json.dumps),
        st.integers(0, 10_000),
        st.sampled_from(JUNK),
    ),
    deep(st.just('["x"]'), 0, 900),
    deep(st.sampled_from(['["x"]', '[{"exists": false}]', '{"b": [1], "c": [2]}']), 40, 60),
    deep(st.sampled_from(['{"b": [1]}', '[{"numeric": [">", 1]}]', '{"c": [2]}']), 300, 820),
    st.builds(
        lambda text: '{"a": [' + text + "]}",
        st.sampled_from(HUGE_NUMBERS),
    ),
    st.builds(
        lambda op, text: '{"a": [{"' + op + '": [">", ' + text + "]}]}",
        st.sampled_from(["numeric", "anything-but"]),
        st.sampled_from(HUGE_NUMBERS),
    ),
    st.builds(
        lambda texts: json.dumps({"a": [{"wildcard": t} for t in texts]}),
        st.lists(st.text(alphabet="*ab\\é😀", max_size=30), max_size=40),
    ),
    st.text(max_size=40),
)


@FUZZ
@given(text=pattern_texts)
def test_parse_raises_nothing_but_invalid_pattern_error(text: str) -> None:
    with contextlib.suppress(InvalidPatternError):
        FilterCriteria.parse({"Filters": [{"Pattern": text}]})


@FUZZ
@given(criteria=json_values(10))
def test_parse_takes_any_criteria_object(criteria: Any) -> None:
    with contextlib.suppress(InvalidPatternError):
        FilterCriteria.parse(criteria if isinstance(criteria, dict) else {"Filters": criteria})


# --- records -----------------------------------------------------------------------------------


@st.composite
def deep_records(draw: st.DrawFn) -> dict[str, Any]:
    """Records nested up to 1,024 levels (orjson's limit), by objects or arrays."""
    key = draw(st.sampled_from(["a", "a", "b", "a.b", "", "value"]))
    depth = draw(st.one_of(st.integers(0, 1022), st.just(1022)))  # 1,022 + 2: orjson's most
    leaf = json.dumps(draw(st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))))
    if draw(st.booleans()):
        text = f'{{"{key}":' * depth + leaf + "}" * depth
    else:
        text = f'{{"{key}":' + "[" * depth + leaf + "]" * depth + "}"
    record = orjson.loads(text) if text.startswith("{") else {}
    return record if isinstance(record, dict) else {key: record}


payloads = st.one_of(
    json_values(8).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
    st.sampled_from([b"[" * 1100 + b"]" * 1100, b'{"n": 1e400}', b"9" * 5000, b"\xff\xfe"]),
    st.builds(
        mangle, json_values(8).map(json.dumps), st.integers(0, 500), st.sampled_from(JUNK)
    ).map(str.encode),
)
records = st.one_of(
    st.dictionaries(keys, json_values(12), max_size=6),
    deep_records(),
    st.builds(
        lambda key, payload, rest: {**rest, key: parse_payload(payload)},
        st.sampled_from(["body", "value", "data", "dynamodb"]),
        payloads,
        st.dictionaries(keys, scalars, max_size=3),
    ),
    st.builds(lambda text: {"body": RawPayload(text)}, strings),
)

#: patterns compiled once: generated code of every kind, the interpreted engine, deep ones
PATTERNS = [
    '{"a": ["x", 1, null, true]}',
    '{"a": {"b": [{"exists": false}], "c": [{"prefix": "p"}]}}',
    '{"a.b": [{"numeric": [">", 0, "<=", 1e308]}], "value": {"x": [{"exists": true}]}}',
    '{"a": [{"anything-but": {"wildcard": "*x*"}}, {"cidr": "10.0.0.0/8"}]}',
    '{"a": [{"equals-ignore-case": "\u00df"}, {"suffix": {"equals-ignore-case": "\u0130"}}]}',
    '{"$or": [{"a": [12345678901234567890]}, {"b": [{"numeric": ["=", 5]}]}]}',
    '{"body": [{"prefix": ""}], "a": [{"exists": false}]}',
    '{"body": {"a": [{"anything-but": [1, 2]}]}}',
    '{"": {"": [1]}, "a.": [2], "$or": [{"b": [1]}, {"c..d": [2]}]}',
    '{"a":' * 120 + '["x"]' + "}" * 120,
    '{"a":' * 600 + '[{"exists": false}]' + "}" * 600,
    '{"a":' * 40 + '{"b": [1], "c": [{"exists": false}]}' + "}" * 40,
]
COMPILED = [
    (
        text,
        FilterCriteria.parse({"Filters": [{"Pattern": text}]}),
        FilterCriteria.parse({"Filters": [{"Pattern": text}]}, generated=False),
    )
    for text in PATTERNS
]
assert all(len(text) <= MAX_PATTERN_CHARS for text in PATTERNS)


@FUZZ
@given(record=records)
def test_matches_raises_nothing_and_both_paths_agree(record: dict[str, Any]) -> None:
    for text, fast, slow in COMPILED:
        with default_stack():
            decided = fast.matches(record), slow.matches(record)
        assert decided[0] == decided[1], (text, record)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=pattern_texts, record=records)
def test_any_accepted_pattern_decides_any_record(text: str, record: dict[str, Any]) -> None:
    try:
        fast = FilterCriteria.parse({"Filters": [{"Pattern": text}]})
    except InvalidPatternError:
        return
    slow = FilterCriteria.parse({"Filters": [{"Pattern": text}]}, generated=False)
    with default_stack():
        decided = fast.matches(record), slow.matches(record)
    assert decided[0] == decided[1], (text, record)
