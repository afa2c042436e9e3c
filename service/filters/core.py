"""Names every part of the filter engine shares: the error, the markers, the payload keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

#: A value that is absent from the record (distinct from JSON null).
MISSING: Final[Any] = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

#: A decision about one value.
Predicate = Callable[[Any], bool]

#: The record keys that hold a source's payload: SQS ``body``, Kinesis and MQ ``data``,
#: DynamoDB ``dynamodb``, Kafka ``value``. ESM compares the payload's format (JSON or not)
#: with the pattern's before filtering (see :mod:`service.filters.fast`).
PAYLOAD_KEYS: Final = frozenset({"body", "data", "dynamodb", "value"})


class JsonObject(list[tuple[str, Any]]):
    """A JSON object of a pattern as its (key, value) pairs: order and repeated keys both
    matter to event-ruler, so patterns are not read into dicts."""


class InvalidPatternError(ValueError):
    """A filter pattern AWS would refuse; the message says what is wrong and where."""


class RawPayload(str):
    """A payload that is not JSON, kept as its text.

    String patterns on the payload key (``prefix``, ``suffix``, ...) apply to it; a pattern
    that treats the payload as an object never matches it, as Lambda documents.
    """

    __slots__ = ()


class Ambiguous(Exception):
    """Raised by the fast matcher when a record needs the exact engine.

    Only an ``exists: false`` below a JSON array of objects makes the decision depend on
    event-ruler's key order (see :mod:`service.filters.exact`); the fast path hands those
    records over instead of guessing.
    """
