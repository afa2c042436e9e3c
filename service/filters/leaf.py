"""The conditions on one key of a pattern (one JSON array), compiled to a predicate.

A record value meets the array when any of its conditions holds. The compiled predicate
decides one scalar (string, number, boolean or null); :func:`leaf_node` lifts it to any
value the key may hold: an array in the record matches when any element does, and an
object (or nothing) only meets ``exists: false``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from service.filters.core import MISSING, Predicate
from service.filters.ips import HexRange, ip_hex
from service.filters.numbers import SAFE_INT, event_number
from service.filters.text import StrTest


@dataclass(frozen=True, slots=True)
class NumRange:
    """A ``numeric`` condition; unbounded sides use the largest double, as event-ruler."""

    low: float
    low_open: bool
    high: float
    high_open: bool

    def contains(self, number: float) -> bool:
        above = self.low < number if self.low_open else self.low <= number
        below = number < self.high if self.high_open else number <= self.high
        return above and below

    @property
    def safe(self) -> bool:
        """True when every number in the range compares without a check (see numbers)."""
        return self.low >= -SAFE_INT and self.high <= SAFE_INT


@dataclass(slots=True)
class Leaf:
    """Every condition of one pattern array, grouped by the kind of value they accept."""

    strings: set[str] = field(default_factory=set)  # exact strings and ``exactly``
    ip_ranges: list[HexRange] = field(default_factory=list)  # IP literals and ``cidr``
    numbers: set[float] = field(default_factory=set)  # exact numbers event-ruler compares
    big_ints: set[int] = field(default_factory=set)  # exact integers it matches by text
    null: bool = False
    true: bool = False
    false: bool = False
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    string_tests: list[StrTest] = field(default_factory=list)  # ignore-case, wildcard
    ranges: list[NumRange] = field(default_factory=list)
    excluding: list[Predicate] = field(default_factory=list)  # the anything-but forms
    exists: bool = False
    absent: bool = False  # exists: false
    #: each condition of the array as written, in order, by what makes event-ruler's
    #: ``Patterns`` equal (equal conditions of two sub-rules lead to one NameState)
    conditions: list[Hashable] = field(default_factory=list)
    #: the ``wildcard`` and ``anything-but`` ``wildcard`` conditions: (condition, texts)
    wildcards: list[tuple[Hashable, tuple[str, ...]]] = field(default_factory=list)

    @property
    def has_value_test(self) -> bool:
        """True when some present value can meet the array (not only ``exists: false``)."""
        groups = (self.strings, self.ip_ranges, self.numbers, self.big_ints, self.prefixes)
        more = (self.suffixes, self.string_tests, self.ranges, self.excluding)
        flags = self.exists or self.null or self.true or self.false
        return flags or any(groups) or any(more)

    def string_form(self) -> tuple[str, Any] | None:
        """How a plain string is decided, when one simple test says it all:
        ("set", strings), ("prefix", text), ("suffix", text) or ("none", None)."""
        if self.exists or self.excluding or self.ip_ranges or self.string_tests:
            return None
        kinds = [
            ("set", frozenset(self.strings)) if self.strings else None,
            *(("prefix", text) for text in self.prefixes),
            *(("suffix", text) for text in self.suffixes),
        ]
        present = [kind for kind in kinds if kind is not None]
        if not present:
            return ("none", None)
        return present[0] if len(present) == 1 else None

    def number_form(self) -> tuple[str, Any] | None:
        """How an int or float is decided, when one simple test says it all:
        ("set", numbers), ("range", NumRange) or ("none", None)."""
        if self.exists or self.excluding or self.big_ints:
            return None
        if not self.numbers and not self.ranges:
            return ("none", None)
        safe = all(-SAFE_INT <= number <= SAFE_INT for number in self.numbers)
        if self.numbers and not self.ranges and safe:
            return ("set", frozenset(self.numbers))
        if len(self.ranges) == 1 and not self.numbers:
            return ("range", self.ranges[0])
        return None

    def scalar_test(self) -> Predicate:
        """A predicate deciding one present scalar value."""
        if self.exists:
            return lambda value: True
        string_test = self._string_test()
        number_test = self._number_test()
        null, true, false = self.null, self.true, self.false
        excluding = tuple(self.excluding)

        def test(value: Any) -> bool:
            if isinstance(value, str):
                if string_test(value):
                    return True
            elif value is None:
                if null:
                    return True
            elif value is True or value is False:
                if (true and value) or (false and not value):
                    return True
            elif number_test(value):
                return True
            for passes in excluding:
                if passes(value):
                    return True
            return False

        return test

    def _string_test(self) -> StrTest:
        strings = frozenset(self.strings)
        prefixes, suffixes = tuple(self.prefixes), tuple(self.suffixes)
        others, ip_ranges = tuple(self.string_tests), tuple(self.ip_ranges)

        def test(value: str) -> bool:
            if value in strings:
                return True
            if (prefixes and value.startswith(prefixes)) or (suffixes and value.endswith(suffixes)):
                return True
            for other in others:
                if other(value):
                    return True
            if ip_ranges:
                digits = ip_hex(value)
                if digits is not None:
                    return any(ip_range.contains(digits) for ip_range in ip_ranges)
            return False

        return test

    def _number_test(self) -> Callable[[Any], bool]:
        numbers, big_ints, ranges = frozenset(self.numbers), frozenset(self.big_ints), self.ranges

        def test(value: Any) -> bool:
            number = event_number(value)
            if number is None:
                return type(value) is int and value in big_ints
            if number in numbers:
                return True
            return any(numeric.contains(number) for numeric in ranges)

        return test


def scalars(values: list[Any]) -> Iterator[Any]:
    """The leaf values an array holds at its own path: its scalars, and those of arrays
    nested in it (objects inside hold values at deeper paths)."""
    for value in values:
        kind = type(value)
        if kind is list:
            yield from scalars(value)
        elif kind is not dict:
            yield value


def leaf_node(leaf: Leaf) -> Predicate:
    """A predicate over whatever the record holds at the key (see the module docstring)."""
    test, absent = leaf.scalar_test(), leaf.absent

    def match(value: Any) -> bool:
        kind = type(value)
        if kind is list:
            found = False
            for item in scalars(value):
                if test(item):
                    return True
                found = True
            return absent and not found
        if value is MISSING or kind is dict:
            return absent
        return test(value)

    return match
