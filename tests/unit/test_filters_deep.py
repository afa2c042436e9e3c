"""Patterns and records nested deeply: every pattern within AWS's 4,096 characters compiles,
to generated code where Python can compile it and to the interpreted (exact) engine where it
cannot; both decide every record alike, and no record is nested too deeply to decide."""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import ConfigError, parse_config
from service.filters import MAX_PATTERN_CHARS, FilterCriteria, parse_payload
from service.filters import fast as fast_module
from service.filters.fast import MAX_GENERATED_DEPTH
from tests.filters_differential.strategies import events, patterns, witness

# the shape of the bug report: 120 objects deep (it crashed `esmd validate` with "too many
# levels of indentation" from the generated code)
REPORTED = '{"a":' * 120 + '["x"]' + "}" * 120


def nested(key: str, depth: int, inner: str) -> str:
    return f'{{"{key}":' * depth + inner + "}" * depth


def parse(text: str, *, generated: bool = True) -> FilterCriteria:
    return FilterCriteria.parse({"Filters": [{"Pattern": text}]}, generated=generated)


def is_generated(criteria: FilterCriteria) -> bool:
    return (criteria.matcher.__doc__ or "").startswith("def match(r")


def test_the_reported_pattern_compiles_and_matches() -> None:
    criteria = parse(REPORTED)
    assert not is_generated(criteria)  # 120 levels: interpreted
    assert criteria.matches(orjson.loads(nested("a", 120, '"x"')))
    assert criteria.matches({".".join(["a"] * 120): "x"})  # joined keys, as EventBridge
    assert criteria.matches(orjson.loads(nested("a", 60, nested("a.a", 30, '["y", "x"]'))))
    assert not criteria.matches(orjson.loads(nested("a", 120, '"y"')))
    assert not criteria.matches(orjson.loads(nested("a", 119, '"x"')))


def test_esmd_validate_accepts_the_reported_pattern() -> None:
    mapping = {
        "Name": "deep",
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:deep",
        "FunctionName": "f",
        "FilterCriteria": {"Filters": [{"Pattern": REPORTED}]},
    }
    config = {"functions": {"f": {"python": "examples.handlers:handle"}}, "mappings": [mapping]}
    try:
        parse_config(config)
    except ConfigError as exc:  # other problems may be reported, not the pattern
        assert "Pattern" not in str(exc), exc


@pytest.mark.parametrize("key", ["", "a", "ab"])
def test_the_deepest_patterns_within_4096_characters_compile(key: str) -> None:
    inner = "[1]"
    depth = (MAX_PATTERN_CHARS - len(inner)) // (len(key) + 5)
    text = nested(key, depth, inner)
    assert len(text) <= MAX_PATTERN_CHARS
    limit = sys.getrecursionlimit()
    criteria = parse(text)
    assert sys.getrecursionlimit() == limit  # raised while compiling only
    name = ".".join([key] * depth)  # with "": 817 dots, a key event-ruler reads
    assert criteria.matches({name: 1})
    assert not criteria.matches({name: 2})
    assert criteria.matches(orjson.loads(nested(key, depth, "1"))) == bool(key)


def test_generated_code_goes_as_deep_as_python_allows() -> None:
    at_limit = parse(nested("a", MAX_GENERATED_DEPTH - 1, '{"b": [1], "c": [2]}'))
    beyond = parse(nested("a", MAX_GENERATED_DEPTH, '{"b": [1], "c": [2]}'))
    assert is_generated(at_limit)
    assert not is_generated(beyond)
    record = orjson.loads(nested("a", MAX_GENERATED_DEPTH, '{"b": 1, "c": 2}'))
    assert beyond.matches(record)


@pytest.mark.parametrize(
    "error", [SyntaxError, IndentationError, RecursionError, MemoryError, OverflowError]
)
def test_a_pattern_python_cannot_compile_is_interpreted(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise error("too many levels of indentation")

    monkeypatch.setattr(fast_module, "compile", refuse, raising=False)
    criteria = parse('{"a": {"b": ["x"]}, "c": [{"prefix": "p"}]}')
    assert not is_generated(criteria)
    assert criteria.matches({"a": {"b": "x"}, "c": "pq"})
    assert not criteria.matches({"a": {"b": "x"}, "c": "q"})


@pytest.mark.parametrize(
    "pattern",
    [
        '{"a": ["x"]}',
        '{"a": [{"exists": false}]}',
        '{"a": {"b": ["x"]}}',
        '{"a": {"b": ["x"], "c": [{"exists": false}]}}',
        '{"a": [{"anything-but": "y"}]}',
    ],
)
@pytest.mark.parametrize(
    "record",
    [
        '{"a":' + "[" * 1023 + '"x"' + "]" * 1023 + "}",
        '{"a":' + "[" * 1022 + '{"b": "x"}' + "]" * 1022 + "}",
        '{"a":' + '{"b":' * 1022 + '"x"' + "}" * 1022 + "}",
        '{"a":' + '[{"b":' * 511 + '"x"' + "}]" * 511 + "}",
    ],
)
def test_records_as_deep_as_json_allows(pattern: str, record: str) -> None:
    view = orjson.loads(record)  # orjson reads up to 1,024 levels
    fast, slow = parse(pattern), parse(pattern, generated=False)
    assert fast.matches(view) == slow.matches(view)


def test_the_deepest_record_is_decided() -> None:
    record = orjson.loads('{"a":' + "[" * 1023 + '"x"' + "]" * 1023 + "}")
    assert parse('{"a": ["x"]}').matches(record)
    assert not parse('{"a": [{"exists": false}]}').matches(record)


def test_payloads_nested_beyond_the_decoders_are_text() -> None:
    deep = b"[" * 1025 + b"]" * 1025  # beyond orjson's limit; json would overflow the stack
    assert parse_payload(deep) == deep.decode()
    assert parse_payload(b'{"n": 1e400, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}") is not None


# --- the generated code and the interpreted engine decide alike ------------------------------


def deepen(pattern: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    for key in reversed(keys):
        pattern = {key: pattern}
    return pattern


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    pattern=patterns,
    depth=st.sampled_from([0, 1, MAX_GENERATED_DEPTH - 3, MAX_GENERATED_DEPTH + 1, 70]),
    data=st.data(),
)
def test_generated_and_interpreted_agree(
    pattern: dict[str, Any], depth: int, data: st.DataObject
) -> None:
    keys = data.draw(st.lists(st.sampled_from(["a", "b", "a.b"]), min_size=depth, max_size=depth))
    text = json.dumps(deepen(pattern, keys))
    try:
        fast = parse(text)
    except Exception:
        return  # refused (InvalidPatternError); tests/unit/test_filters_fuzz.py covers that
    slow = parse(text, generated=False)
    for _ in range(8):
        record = deepen(data.draw(st.one_of(events, witness(pattern))), keys)
        view = orjson.loads(orjson.dumps(record))
        assert fast.matches(view) == slow.matches(view), (text, view)
