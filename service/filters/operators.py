"""The operator objects of a pattern array (``{"prefix": ...}``, ``{"numeric": ...}``, ...).

Each operator checks its argument the way event-ruler does, refusing what it refuses, and
adds its condition to the array's :class:`Leaf`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from service.filters.core import InvalidPatternError, JsonObject, Predicate
from service.filters.ips import cidr_range
from service.filters.leaf import Leaf, NumRange
from service.filters.numbers import Num, comparable, event_number
from service.filters.text import StrTest, ignore_case, wildcard

_MAX = sys.float_info.max
_COMPARISONS: Final = ("=", "<", "<=", ">", ">=")


def _string(arg: Any, at: str) -> str:
    if not isinstance(arg, str):
        raise InvalidPatternError(f"{at}: takes a string")
    return arg


def _single_key(arg: Any, at: str, allowed: tuple[str, ...]) -> tuple[str, Any]:
    """The one (key, value) of an operator's object argument."""
    if not isinstance(arg, JsonObject) or not arg:
        raise InvalidPatternError(f"{at}: takes one of {', '.join(allowed)}")
    key, value = arg[0]
    if key not in allowed:
        raise InvalidPatternError(f"{at}: {key!r} is not supported here; use {', '.join(allowed)}")
    if len(arg) > 1:
        raise InvalidPatternError(f"{at}: takes exactly one of {', '.join(allowed)}")
    return key, value


def _exactly(leaf: Leaf, arg: Any, at: str) -> None:
    leaf.strings.add(_string(arg, at))


def _prefix(leaf: Leaf, arg: Any, at: str) -> None:
    if isinstance(arg, JsonObject):
        _, text = _single_key(arg, at, ("equals-ignore-case",))
        leaf.string_tests.append(ignore_case(_string(text, f"{at}.equals-ignore-case"), "prefix"))
    else:
        leaf.prefixes.append(_string(arg, at))


def _suffix(leaf: Leaf, arg: Any, at: str) -> None:
    if isinstance(arg, JsonObject):
        _, text = _single_key(arg, at, ("equals-ignore-case",))
        leaf.string_tests.append(ignore_case(_string(text, f"{at}.equals-ignore-case"), "suffix"))
    else:
        leaf.suffixes.append(_string(arg, at))


def _equals_ignore_case(leaf: Leaf, arg: Any, at: str) -> None:
    leaf.string_tests.append(ignore_case(_string(arg, at), "equals"))


def _wildcard(leaf: Leaf, arg: Any, at: str) -> None:
    leaf.string_tests.append(_wildcard_test(_string(arg, at), at))


def _wildcard_test(text: str, at: str) -> StrTest:
    try:
        return wildcard(text)
    except ValueError as exc:
        raise InvalidPatternError(f"{at}: {exc}") from None


def _exists(leaf: Leaf, arg: Any, at: str) -> None:
    if arg is True:
        leaf.exists = True
    elif arg is False:
        leaf.absent = True
    else:
        raise InvalidPatternError(f"{at}: takes true or false")


def _cidr(leaf: Leaf, arg: Any, at: str) -> None:
    try:
        leaf.ip_ranges.append(cidr_range(_string(arg, at)))
    except ValueError as exc:
        raise InvalidPatternError(f"{at}: {exc}") from None


def _number(arg: Any, at: str, what: str) -> float:
    if not isinstance(arg, Num):
        raise InvalidPatternError(f"{at}: {what} needs a number")
    value = comparable(arg.value)
    if value is None:
        raise InvalidPatternError(
            f"{at}: cannot compare {arg.text}; numbers must be exact IEEE doubles"
        )
    return value


def _numeric(leaf: Leaf, arg: Any, at: str) -> None:
    if isinstance(arg, JsonObject) or not isinstance(arg, list):
        raise InvalidPatternError(f"{at}: takes an array such as ['>', 0, '<=', 5]")
    op = arg[0] if arg else None
    if op not in _COMPARISONS:
        raise InvalidPatternError(f"{at}: starts with one of {', '.join(_COMPARISONS)}")
    first = _number(arg[1] if len(arg) > 1 else None, at, op)
    if op in ("=", "<", "<=") or len(arg) == 2:
        if len(arg) > 2:
            raise InvalidPatternError(f"{at}: too many elements after {op!r} {first!r}")
        if op == "=":
            leaf.numbers.add(first)
        elif op in ("<", "<="):
            leaf.ranges.append(NumRange(-_MAX, False, first, op == "<"))
        else:
            leaf.ranges.append(NumRange(first, op == ">", _MAX, False))
        return
    upper = arg[2]
    if upper not in ("<", "<="):
        raise InvalidPatternError(f"{at}: a range's upper bound is '<' or '<=', got {upper!r}")
    second = _number(arg[3] if len(arg) > 3 else None, at, upper)
    if len(arg) > 4:
        raise InvalidPatternError(f"{at}: too many elements in the range")
    if not first < second:
        raise InvalidPatternError(f"{at}: the lower bound must be below the upper bound")
    leaf.ranges.append(NumRange(first, op == ">", second, upper == "<"))


_AB_FORMS: Final = ("equals-ignore-case", "prefix", "suffix", "wildcard")


def _anything_but(leaf: Leaf, arg: Any, at: str) -> None:
    if isinstance(arg, JsonObject):
        leaf.excluding.append(_anything_but_form(arg, at))
    elif isinstance(arg, list):
        leaf.excluding.append(_anything_but_values(arg, at))
    elif isinstance(arg, str | Num):
        leaf.excluding.append(_anything_but_values([arg], at))
    else:
        raise InvalidPatternError(f"{at}: takes a string, a number, an array of them or an object")


def _anything_but_values(values: list[Any], at: str) -> Predicate:
    if values and all(isinstance(v, str) for v in values):
        strings = frozenset(values)
        return lambda value: not (isinstance(value, str) and value in strings)
    if values and all(isinstance(v, Num) for v in values):
        numbers = frozenset(_number(v, at, "anything-but") for v in values)
        return lambda value: (number := event_number(value)) is None or number not in numbers
    raise InvalidPatternError(f"{at}: the values must be all strings or all numbers")


def _anything_but_form(arg: Any, at: str) -> Predicate:
    form, inner = _single_key(arg, at, _AB_FORMS)
    where = f"{at}.{form}"
    if isinstance(inner, str):
        texts = [inner]
    elif isinstance(inner, list) and not isinstance(inner, JsonObject) and inner:
        texts = [_string(text, f"{where}[{i}]") for i, text in enumerate(inner)]
    else:
        raise InvalidPatternError(f"{where}: takes a string or a non-empty array of strings")
    if form in ("prefix", "suffix") and not all(texts):
        raise InvalidPatternError(f"{where}: an empty {form} is not allowed")
    if form == "prefix":
        prefixes = tuple(texts)
        return lambda value: not (isinstance(value, str) and value.startswith(prefixes))
    if form == "suffix":
        suffixes = tuple(texts)
        return lambda value: not (isinstance(value, str) and value.endswith(suffixes))
    if form == "wildcard":
        tests = tuple(_wildcard_test(text, where) for text in texts)
    else:
        tests = tuple(ignore_case(text, "equals") for text in texts)
    return lambda value: not (isinstance(value, str) and any(test(value) for test in tests))


OPERATORS: Final[dict[str, Callable[[Leaf, Any, str], None]]] = {
    "anything-but": _anything_but,
    "cidr": _cidr,
    "equals-ignore-case": _equals_ignore_case,
    "exactly": _exactly,
    "exists": _exists,
    "numeric": _numeric,
    "prefix": _prefix,
    "suffix": _suffix,
    "wildcard": _wildcard,
}
