"""Numbers as event-ruler compares them.

event-ruler compares a number only when it is an IEEE double whose shortest decimal form
equals the number exactly (``ComparableNumber``); anything else (``0.30000000000000001``,
``2**60``, ``1e400``) it only matches by its exact text. Patterns keep their numbers'
text (:class:`Num`) so esmd can decide the same.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any, Final

#: Every integer within this bound is an exact double, so it compares without a check.
SAFE_INT: Final = 2**53


class Num:
    """A JSON number in a pattern, as written."""

    __slots__ = ("text", "value")

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.value = Decimal(text)
        except ArithmeticError:  # an exponent beyond Decimal's: beyond any double too
            self.value = Decimal("Infinity")

    def __repr__(self) -> str:
        return self.text


def comparable(value: Decimal) -> float | None:
    """The double event-ruler compares for a pattern number, or None if it compares none."""
    try:
        as_float = float(value)
    except (OverflowError, InvalidOperation):  # pragma: no cover - Decimal -> float saturates
        return None
    if not math.isfinite(as_float) or Decimal(repr(as_float)) != value:
        return None
    return as_float


def event_number(value: Any) -> int | float | None:
    """The number event-ruler compares for a record value, or None when it is no number
    or one event-ruler cannot compare (booleans are not numbers)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is not int:
        return None
    if -SAFE_INT <= value <= SAFE_INT:
        return value  # type: ignore[no-any-return]
    try:
        as_float = float(value)
    except OverflowError:
        return None
    return as_float if Decimal(repr(as_float)) == value else None
