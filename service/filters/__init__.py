"""Event filtering: AWS's FilterCriteria, compiled once, decided per record.

    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"value": {"a": [1]}}'}]})
    criteria.matches(record)   # True when any filter matches

The record is the *filter view* of its source (see ``views``).
"""

from __future__ import annotations

from typing import Any

import orjson

from service.filters.compiler import (
    MISSING,
    InvalidPatternError,
    Predicate,
    RawPayload,
    compile_object,
)
from service.filters.views import (
    dynamodb_filter_view,
    kafka_filter_view,
    kinesis_filter_view,
    parse_payload,
    sqs_filter_view,
)

MAX_FILTERS = 5
MAX_PATTERN_CHARS = 4096


class FilterCriteria:
    """The compiled filters of one mapping."""

    __slots__ = ("_matchers", "keys", "matcher", "patterns")

    def __init__(self, patterns: list[dict[str, Any]], matchers: list[Predicate]) -> None:
        self.patterns = patterns
        self._matchers = matchers
        #: the top-level record keys the patterns read: a source may build only those
        self.keys = frozenset(_top_keys(patterns))
        #: ``matches`` as one plain function, for hot loops
        self.matcher: Predicate = matchers[0] if len(matchers) == 1 else self.matches

    @classmethod
    def parse(
        cls, criteria: dict[str, Any] | None, *, max_filters: int = MAX_FILTERS
    ) -> FilterCriteria:
        """Compile CloudFormation's FilterCriteria: ``{"Filters": [{"Pattern": "<json>"}]}``."""
        filters = (criteria or {}).get("Filters") or []
        if not isinstance(filters, list):
            raise InvalidPatternError("Filters must be an array")
        if len(filters) > max_filters:
            raise InvalidPatternError(f"at most {max_filters} filters, got {len(filters)}")
        patterns, matchers = [], []
        for i, flt in enumerate(filters):
            text = flt.get("Pattern") if isinstance(flt, dict) else None
            if not isinstance(text, str):
                raise InvalidPatternError(f"Filters[{i}]: needs a Pattern string")
            pattern = parse_pattern(text)
            patterns.append(pattern)
            matchers.append(compile_object(pattern))
        return cls(patterns, matchers)

    def matches(self, record: dict[str, Any]) -> bool:
        if not self._matchers:
            return True
        for match in self._matchers:
            if match(record):
                return True
        return False

    def __len__(self) -> int:
        return len(self._matchers)


def _top_keys(patterns: list[dict[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for pattern in patterns:
        for key, sub in pattern.items():
            if key == "$or" and isinstance(sub, list):
                keys |= _top_keys([p for p in sub if isinstance(p, dict)])
            else:
                keys.add(key)
    return keys


def parse_pattern(text: str) -> dict[str, Any]:
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidPatternError(
            f"a pattern is at most {MAX_PATTERN_CHARS} characters, got {len(text)}"
        )
    try:
        pattern = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidPatternError(f"the pattern is not valid JSON: {exc}") from None
    if not isinstance(pattern, dict):
        raise InvalidPatternError("a pattern must be a JSON object")
    return pattern


__all__ = [
    "MISSING",
    "FilterCriteria",
    "InvalidPatternError",
    "RawPayload",
    "dynamodb_filter_view",
    "kafka_filter_view",
    "kinesis_filter_view",
    "parse_payload",
    "sqs_filter_view",
]
