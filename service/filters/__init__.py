"""Event filtering: a mapping's FilterCriteria, compiled once, deciding each record.

    criteria = FilterCriteria.parse({"Filters": [{"Pattern": '{"value": {"a": [1]}}'}]})
    criteria.matches(view)   # True when any filter matches; no filters match everything

Patterns follow AWS's grammar and event-ruler's semantics (docs/filters.md lists where
esmd follows Lambda's documentation instead). The record is the *filter view* of its
source (:mod:`service.filters.views`), built once per record and shared by all filters.
"""

from __future__ import annotations

from typing import Any, Final

from service.filters import complexity
from service.filters.core import MISSING, InvalidPatternError, Predicate, RawPayload
from service.filters.fast import fast_matcher
from service.filters.grammar import MAX_PATTERN_CHARS, SubRule, compile_pattern
from service.filters.screen import Screen, payload_screen
from service.filters.views import (
    dynamodb_filter_view,
    kafka_filter_view,
    kinesis_filter_view,
    mq_filter_view,
    parse_payload,
    sqs_filter_view,
)

#: Lambda's default quota of filters per event source mapping (10 with an increase).
MAX_FILTERS: Final = 5


class FilterCriteria:
    """The compiled filters of one mapping."""

    __slots__ = ("_screens", "keys", "matcher", "rules")

    def __init__(self, rules: list[list[SubRule]], *, generated: bool = True) -> None:
        #: per filter, its sub-rules (``$or`` expanded), as event-ruler reads them
        self.rules = rules
        #: the top-level keys of a filter view the patterns read (the first part of each
        #: field's name): a source may build only those (a view's own keys hold no dots)
        self.keys = frozenset(f.segments[0] for filt in rules for rule in filt for f in rule)
        matchers = [fast_matcher(r, generated=generated) for filt in rules for r in filt]
        #: ``matches`` as one plain function, for hot loops
        self.matcher: Predicate = _any_of(matchers)
        self._screens: dict[str, Screen | None] = {}

    @classmethod
    def parse(
        cls,
        criteria: dict[str, Any] | None,
        *,
        max_filters: int = MAX_FILTERS,
        generated: bool = True,
    ) -> FilterCriteria:
        """Compile CloudFormation's ``FilterCriteria``: ``{"Filters": [{"Pattern": "..."}]}``.

        Raises InvalidPatternError, naming the filter (when there are several), the place
        in the pattern and what is wrong, for anything Lambda would refuse.
        ``generated=False`` decides every record with the interpreted (exact) engine
        instead of generated code; the answers are the same (tests compare them).
        """
        filters = (criteria or {}).get("Filters") or []
        if not isinstance(filters, list):
            raise InvalidPatternError("Filters must be an array of {Pattern: ...} objects")
        if len(filters) > max_filters:
            raise InvalidPatternError(f"at most {max_filters} filters, got {len(filters)}")
        rules = []
        for i, flt in enumerate(filters):
            where = f"Filters[{i}]: " if len(filters) > 1 else ""
            text = flt.get("Pattern") if isinstance(flt, dict) else None
            if not isinstance(text, str):
                raise InvalidPatternError(f"{where}a filter needs a Pattern string")
            try:
                rules.append(compile_pattern(text))
                complexity.check(rules[-1])  # EventBridge's "Rule is too complex"
            except InvalidPatternError as exc:
                raise InvalidPatternError(f"{where}{exc}") from None
        return cls(rules, generated=generated)

    def matches(self, record: dict[str, Any]) -> bool:
        """True when any filter matches the record's filter view."""
        return self.matcher(record)

    def __len__(self) -> int:
        return len(self.rules)

    def payload_screen(self, key: str) -> Screen | None:
        """A test on payload ``key``'s raw JSON bytes that rejects records no filter can
        match, before any parsing (:mod:`service.filters.screen`); None when these
        filters leave nothing to screen on. Made once per key."""
        if key not in self._screens:
            self._screens[key] = payload_screen(self.rules, key)
        return self._screens[key]


def _any_of(matchers: list[Predicate]) -> Predicate:
    if not matchers:
        return lambda record: True
    if len(matchers) == 1:
        return matchers[0]
    first, *rest = matchers

    def any_matches(record: dict[str, Any]) -> bool:
        if first(record):
            return True
        for match in rest:
            if match(record):
                return True
        return False

    return any_matches


__all__ = [
    "MAX_FILTERS",
    "MAX_PATTERN_CHARS",
    "MISSING",
    "FilterCriteria",
    "InvalidPatternError",
    "RawPayload",
    "Screen",
    "dynamodb_filter_view",
    "kafka_filter_view",
    "kinesis_filter_view",
    "mq_filter_view",
    "parse_payload",
    "sqs_filter_view",
]
