"""Compile one event pattern (AWS's event filtering grammar) into a matching function.

A pattern is compiled once into nested closures, so deciding a record never re-reads the
pattern: an object pattern becomes a list of (key, matcher) checks, and each leaf array a
single function over the record's value, with a set lookup as the fast path for plain
values. Semantics follow event-ruler, AWS's matcher:

- keys are ANDed, the values of a leaf array ORed, ``$or`` ORs whole sub-patterns;
- a record value that is an array matches when any of its elements does;
- only leaf values (strings, numbers, booleans, null) meet leaf conditions: an object where
  a leaf is expected counts as absent (so ``exists: false`` matches it);
- a payload that is not JSON (:class:`RawPayload`) never matches a pattern that treats it as
  an object, as ESM documents, while string conditions on it apply.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

#: A record value's absence (distinct from JSON null).
MISSING: Any = object()

Predicate = Callable[[Any], bool]


class InvalidPatternError(ValueError):
    """A pattern AWS would reject; the message says what is wrong and where."""


class RawPayload(str):
    """A payload (SQS body, Kafka value, Kinesis data) that is not JSON: string patterns
    apply to it, object patterns never match it."""

    __slots__ = ()


def _fail(path: str, message: str) -> InvalidPatternError:
    return InvalidPatternError(f"{path or '<pattern>'}: {message}")


def _is_number(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


# --- object patterns ------------------------------------------------------------------------


MAX_ALTERNATIVES = 1000


def compile_object(pattern: Any, path: str = "") -> Predicate:
    """A function of a JSON object (dict) deciding whether it matches ``pattern``.

    ``$or`` is expanded first, as event-ruler does: each branch is merged into the rest of
    its object (where both name the same field, the later conditions replace the earlier),
    and the record must match one of the resulting ``$or``-free patterns.
    """
    alternatives = expand_or(pattern, path)
    matchers = [_compile_plain(alt, path) for alt in alternatives]
    if len(matchers) == 1:
        return matchers[0]
    return lambda obj: any(m(obj) for m in matchers)


def expand_or(pattern: Any, path: str = "") -> list[dict[str, Any]]:
    """The ``$or``-free patterns that together mean ``pattern``."""
    if not isinstance(pattern, dict):
        raise _fail(path, "a pattern must be a JSON object")
    alternatives: list[dict[str, Any]] = [{}]
    for key, sub in pattern.items():
        where = f"{path}.{key}" if path else key
        if key == "$or":
            options = [
                alt
                for i, p in enumerate(_or_branches(sub, where))
                for alt in expand_or(p, f"{where}[{i}]")
            ]
        elif isinstance(sub, dict):
            options = [{key: alt} for alt in expand_or(sub, where)]
        elif isinstance(sub, list):
            options = [{key: sub}]
        else:
            raise _fail(where, f"must be an array of values or an object, got {sub!r}")
        alternatives = [_merge(a, o) for a in alternatives for o in options]
        if len(alternatives) > MAX_ALTERNATIVES:
            raise _fail(where, f"$or expands to more than {MAX_ALTERNATIVES} alternatives")
    return alternatives


def _or_branches(sub: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(sub, list) or len(sub) < 2 or not all(isinstance(p, dict) for p in sub):
        raise _fail(path, "$or takes an array of at least two pattern objects")
    return sub


class _Both(tuple[list[Any], dict[str, Any]]):
    """A key conditioned both as a leaf and as an object (from merging ``$or`` branches):
    event-ruler keeps both field paths, so a record must satisfy both."""


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge_value(out[key], value) if key in out else value
    return out


def _merge_value(mine: Any, value: Any) -> Any:
    leaf: list[Any] = []
    obj: dict[str, Any] | None = None
    for part in (*_split(mine), *_split(value)):
        if isinstance(part, list):
            leaf = part  # the same field named again: the later conditions replace it
        else:
            obj = part if obj is None else _merge(obj, part)
    if obj is None:
        return leaf
    return _Both((leaf, obj)) if leaf else obj


def _split(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, _Both) else (value,)


def _compile_plain(pattern: dict[str, Any], path: str) -> Predicate:
    checks: list[tuple[str, Predicate]] = []
    for key, sub in pattern.items():
        where = f"{path}.{key}" if path else key
        parts = [
            _nested(_compile_plain(part, where), _absent_paths(part))
            if isinstance(part, dict)
            else compile_leaf(part, where)
            for part in _split(sub)
        ]
        checks.append((key, parts[0] if len(parts) == 1 else _all_of(parts)))
    return _object_matcher(checks)


def _all_of(parts: list[Predicate]) -> Predicate:
    """A key conditioned both as a value and as an object (see ``_Both``): both must hold.

    Known difference: in an array that mixes nested arrays and objects, event-ruler also
    requires both from one array element; esmd does not (docs/filters.md).
    """
    return lambda value: all(p(value) for p in parts)


def _object_matcher(checks: list[tuple[str, Predicate]]) -> Predicate:
    """The AND of the key checks, unrolled for the common small shapes."""
    if len(checks) == 1:
        ((k1, c1),) = checks
        return lambda obj: c1(obj.get(k1, MISSING))
    if len(checks) == 2:
        (k1, c1), (k2, c2) = checks
        return lambda obj: c1(obj.get(k1, MISSING)) and c2(obj.get(k2, MISSING))

    def match_all(obj: dict[str, Any]) -> bool:
        for key, check in checks:
            if not check(obj.get(key, MISSING)):
                return False
        return True

    return match_all


def _nested(match: Predicate, absent: list[tuple[str, ...]]) -> Predicate:
    """Apply an object pattern to a record value of any shape.

    ``absent`` are the pattern's ``exists: false`` field paths. event-ruler reads them as
    "nowhere in the record", so in an array they must be absent from every element, while
    the other conditions are met by one element (array consistency).
    """
    empty: dict[str, Any] = {}

    def on_value(value: Any) -> bool:
        if type(value) is dict:
            return match(value)
        if isinstance(value, RawPayload):
            return False
        if type(value) is list:
            if absent and any(_present(value, path) for path in absent):
                return False
            objects = [v for v in value if type(v) is dict]
            return any(match(v) for v in objects) if objects else match(empty)
        return match(empty)  # absent, or a leaf: no field below it

    return on_value


def _present(value: Any, path: tuple[str, ...]) -> bool:
    """Whether the record has a leaf at ``path`` below ``value`` (through arrays too)."""
    t = type(value)
    if t is list:
        return any(_present(v, path) for v in value)
    if not path:
        return value is not MISSING and t is not dict
    if t is dict:
        return _present(value.get(path[0], MISSING), path[1:])
    return False


def _absent_paths(pattern: dict[str, Any]) -> list[tuple[str, ...]]:
    """Field paths whose only condition is ``exists: false``."""
    paths: list[tuple[str, ...]] = []
    for key, sub in pattern.items():
        for part in _split(sub):
            if isinstance(part, dict):
                paths += [(key, *p) for p in _absent_paths(part)]
            elif part and all(c == {"exists": False} for c in part):
                paths.append((key,))
    return paths


# --- leaf arrays ----------------------------------------------------------------------------


def compile_leaf(values: list[Any], path: str) -> Predicate:
    """A function of one record value, true when any condition of the array holds."""
    if not values:
        raise _fail(path, "an empty array matches nothing; give at least one value")
    exact_str: set[str] = set()
    exact_num: set[float] = set()
    exact_bool: set[bool] = set()
    exact_null = False
    conditions: list[Predicate] = []
    exists: set[bool] = set()
    for i, value in enumerate(values):
        where = f"{path}[{i}]"
        if value is None:
            exact_null = True
        elif isinstance(value, bool):
            exact_bool.add(value)
        elif isinstance(value, str):
            exact_str.add(value)
        elif isinstance(value, int | float):
            exact_num.add(float(value))
        elif isinstance(value, dict):
            if len(value) != 1:
                raise _fail(where, "an operator object must have exactly one key")
            ((op, arg),) = value.items()
            if op == "exists":
                if not isinstance(arg, bool):
                    raise _fail(where, "exists takes true or false")
                exists.add(arg)
                continue
            conditions.append(compile_operator(op, arg, where))
        else:
            raise _fail(where, f"unsupported value {value!r}")
    scalar = _scalar_matcher(exact_str, exact_num, exact_bool, exact_null, conditions)
    general = _leaf(scalar, True in exists, False in exists)
    if exists or exact_num or exact_bool or exact_null or conditions:
        return general

    def strings_only(value: Any) -> bool:  # the common leaf, fused: no inner call for a str
        if type(value) is str:
            return value in exact_str
        return general(value)

    return strings_only


def _scalar_matcher(
    strs: set[str], nums: set[float], bools: set[bool], null: bool, conditions: list[Predicate]
) -> Predicate:
    if not nums and not bools and not null:
        if not conditions:
            return lambda v: isinstance(v, str) and v in strs  # the common case: a set lookup
        if not strs and len(conditions) == 1:
            return conditions[0]  # one operator, e.g. a numeric range

    def match(v: Any) -> bool:
        t = type(v)
        if t is str or t is RawPayload:
            if v in strs:
                return True
        elif t is int or t is float:
            if v in nums:
                return True
        elif t is bool:
            if v in bools:
                return True
        elif v is None and null:
            return True
        return any(c(v) for c in conditions)

    return match


def _leaf(scalar: Predicate, if_present: bool, if_absent: bool) -> Predicate:
    """Handle absence, arrays and objects around a scalar condition; ``if_present`` and
    ``if_absent`` are the ``exists: true`` and ``exists: false`` conditions."""

    def match(value: Any) -> bool:
        t = type(value)
        if t is list:
            leaves = [v for v in _flatten(value) if type(v) is not dict]
            if not leaves:
                return if_absent
            return if_present or any(scalar(v) for v in leaves)
        if value is MISSING or t is dict:
            return if_absent
        return if_present or scalar(value)

    return match


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if type(v) is list:
            out.extend(_flatten(v))
        else:
            out.append(v)
    return out


# --- operators ------------------------------------------------------------------------------


def compile_operator(op: str, arg: Any, path: str) -> Predicate:
    compilers: dict[str, Callable[[Any, str], Predicate]] = {
        "prefix": _prefix,
        "suffix": _suffix,
        "equals-ignore-case": _equals_ignore_case,
        "wildcard": _wildcard,
        "numeric": _numeric,
        "anything-but": _anything_but,
        "cidr": _cidr,
    }
    compiler = compilers.get(op)
    if compiler is None:
        raise _fail(path, f"unknown operator {op!r}")
    return compiler(arg, f"{path}.{op}")


def _string_arg(arg: Any, path: str) -> str:
    if not isinstance(arg, str):
        raise _fail(path, f"takes a string, got {arg!r}")
    return arg


def _prefix(arg: Any, path: str) -> Predicate:
    if isinstance(arg, dict) and set(arg) == {"equals-ignore-case"}:
        low = _string_arg(arg["equals-ignore-case"], f"{path}.equals-ignore-case").lower()
        return lambda v: isinstance(v, str) and v.lower().startswith(low)
    text = _string_arg(arg, path)
    return lambda v: isinstance(v, str) and v.startswith(text)


def _suffix(arg: Any, path: str) -> Predicate:
    if isinstance(arg, dict) and set(arg) == {"equals-ignore-case"}:
        low = _string_arg(arg["equals-ignore-case"], f"{path}.equals-ignore-case").lower()
        return lambda v: isinstance(v, str) and v.lower().endswith(low)
    text = _string_arg(arg, path)
    return lambda v: isinstance(v, str) and v.endswith(text)


def _equals_ignore_case(arg: Any, path: str) -> Predicate:
    low = _string_arg(arg, path).lower()
    return lambda v: isinstance(v, str) and v.lower() == low


def wildcard_regex(arg: Any, path: str) -> re.Pattern[str]:
    text = _string_arg(arg, path)
    if "**" in text:
        raise _fail(path, "consecutive wildcard characters are not allowed")
    parts = re.split(r"(\\\*|\\\\|\*)", text)
    regex = "".join(
        ".*" if p == "*" else re.escape(p[1:] if p in ("\\*", "\\\\") else p) for p in parts
    )
    return re.compile(regex, re.DOTALL)


def _wildcard(arg: Any, path: str) -> Predicate:
    fullmatch = wildcard_regex(arg, path).fullmatch
    return lambda v: isinstance(v, str) and fullmatch(v) is not None


def _is_num(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


#: one comparison, as a closure with the operator inline (no call per comparison)
_ONE: dict[str, Callable[[float], Predicate]] = {
    "=": lambda n: lambda v: (type(v) is int or type(v) is float) and v == n,
    "<": lambda n: lambda v: (type(v) is int or type(v) is float) and v < n,
    "<=": lambda n: lambda v: (type(v) is int or type(v) is float) and v <= n,
    ">": lambda n: lambda v: (type(v) is int or type(v) is float) and v > n,
    ">=": lambda n: lambda v: (type(v) is int or type(v) is float) and v >= n,
}
_RANGE: dict[tuple[str, str], Callable[[float, float], Predicate]] = {
    (">", "<"): lambda lo, hi: lambda v: _is_num(v) and lo < v < hi,
    (">", "<="): lambda lo, hi: lambda v: _is_num(v) and lo < v <= hi,
    (">=", "<"): lambda lo, hi: lambda v: _is_num(v) and lo <= v < hi,
    (">=", "<="): lambda lo, hi: lambda v: _is_num(v) and lo <= v <= hi,
}


def _numeric(arg: Any, path: str) -> Predicate:
    if not isinstance(arg, list) or len(arg) not in (2, 4) or len(arg) % 2:
        raise _fail(path, "takes [op, number] or [lower-op, number, upper-op, number]")
    pairs = [(arg[i], arg[i + 1]) for i in range(0, len(arg), 2)]
    for op, num in pairs:
        if op not in _ONE:
            raise _fail(path, f"unknown comparison {op!r}; use =, <, <=, >, >=")
        if not _is_number(num) or isinstance(num, bool):
            raise _fail(path, f"{op} needs a number, got {num!r}")
    if len(pairs) == 2:
        (lo_op, lo), (hi_op, hi) = pairs
        if lo_op not in (">", ">=") or hi_op not in ("<", "<="):
            raise _fail(path, "a range is a lower bound (> or >=) then an upper bound (< or <=)")
        if float(lo) >= float(hi):
            raise _fail(path, "the lower bound must be below the upper bound")
    if len(pairs) == 1:
        ((op, num),) = pairs
        return _ONE[op](float(num))
    (lo_op, lo), (hi_op, hi) = pairs
    return _RANGE[lo_op, hi_op](float(lo), float(hi))


def _anything_but(arg: Any, path: str) -> Predicate:
    """Every value but those named; the string forms (prefix, suffix, ...) let any value
    that is not a string through, as event-ruler does."""
    if isinstance(arg, dict):
        if len(arg) != 1:
            raise _fail(path, "takes one of prefix, suffix, equals-ignore-case, wildcard")
        ((op, inner),) = arg.items()
        where = f"{path}.{op}"
        if op == "prefix":
            text = _string_arg(inner, where)
            return lambda v: not isinstance(v, str) or not v.startswith(text)
        if op == "suffix":
            text = _string_arg(inner, where)
            return lambda v: not isinstance(v, str) or not v.endswith(text)
        if op == "equals-ignore-case":
            lows = {_string_arg(s, where).lower() for s in _one_or_many(inner, where)}
            return lambda v: not isinstance(v, str) or v.lower() not in lows
        if op == "wildcard":
            regexes = [wildcard_regex(s, where) for s in _one_or_many(inner, where)]
            return lambda v: not isinstance(v, str) or not any(r.fullmatch(v) for r in regexes)
        raise _fail(where, "anything-but takes prefix, suffix, equals-ignore-case or wildcard")
    values = _one_or_many(arg, path)
    if all(isinstance(v, str) for v in values):
        strs = set(values)
        return lambda v: not (type(v) is str and v in strs)
    if all(_is_number(v) and not isinstance(v, bool) for v in values):
        nums = {float(v) for v in values}
        return lambda v: not ((type(v) is int or type(v) is float) and v in nums)
    raise _fail(path, "anything-but values must be all strings or all numbers")


def _one_or_many(arg: Any, path: str) -> list[Any]:
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise _fail(path, "needs at least one value")
    return values


def _cidr(arg: Any, path: str) -> Predicate:
    try:
        network = ipaddress.ip_network(_string_arg(arg, path), strict=False)
    except ValueError as exc:
        raise _fail(path, f"invalid CIDR block: {exc}") from None

    def match(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            return ipaddress.ip_address(v) in network
        except ValueError:
            return False

    return match
