"""The raw-bytes screen (service/filters/screen.py): it rejects only payloads no filter can
match, so skipping the parse never changes a decision; and it does reject the usual ones."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.filters import FilterCriteria, InvalidPatternError, parse_payload
from tests.filters_differential.strategies import event_values, patterns, witness


def criteria(*pattern: str) -> FilterCriteria:
    return FilterCriteria.parse({"Filters": [{"Pattern": p} for p in pattern]})


def test_an_exact_string_rejects_payloads_without_it() -> None:
    screen = criteria('{"value": {"status": ["COMPLETED"]}}').payload_screen("value")
    assert screen is not None
    assert not screen(b'{"status":"PENDING","n":1}')
    assert screen(b'{"status":"COMPLETED"}')
    assert screen(b'{"status":"\\u0043OMPLETED"}')  # an escape: parse and decide
    assert not screen(b"COMPLETED")  # not JSON: text, which has no status field


def test_every_sub_rule_and_field_counts() -> None:
    screen = criteria(
        '{"value": {"a": ["x", "y"], "b": ["z"], "n": [{"numeric": [">", 1]}]}}',
        '{"value": {"c": ["w"]}}',
    ).payload_screen("value")
    assert screen is not None
    assert screen(b'{"a":"y","b":"z"}') and screen(b'{"c":"w"}')
    assert not screen(b'{"a":"x"}') and not screen(b'{"b":"z"}')


def test_nothing_to_screen_on_gives_none() -> None:
    for pattern in (
        '{"value": {"n": [{"numeric": [">", 1]}]}}',  # no exact string
        '{"value": {"a": ["x", {"prefix": "y"}]}}',  # accepts more than exact strings
        '{"value": ["x"]}',  # the payload itself: a text payload meets it unquoted
        '{"value": {"a": ["say \\"hi\\""]}}',  # needs escapes in JSON
        '{"offset": [1], "value": {"a": ["x"]}}',  # a key besides the payload
    ):
        assert criteria(pattern).payload_screen("value") is None, pattern
    either = criteria('{"value": {"a": ["x"]}}', '{"value": {"n": [1]}}')
    assert either.payload_screen("value") is None  # the second filter has no string


SCREENED = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SCREENED
@given(st.data(), patterns)
def test_the_screen_never_rejects_a_match(data: st.DataObject, pattern: Any) -> None:
    try:
        compiled = criteria(json.dumps({"value": pattern}))
    except InvalidPatternError:
        return
    screen = compiled.payload_screen("value")
    if screen is None:
        return
    for value in (data.draw(witness(pattern)), data.draw(event_values)):
        for raw in (orjson.dumps(value), json.dumps(value).encode()):  # \\u escapes or not
            if compiled.matches({"value": parse_payload(raw)}):
                assert screen(raw), (pattern, raw)
