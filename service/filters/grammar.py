"""Event patterns read as event-ruler's ``JsonRuleCompiler`` reads them.

A pattern becomes a list of *sub-rules*: ``$or`` forks the sub-rules built so far, and a
key written again (in a branch, or after it) replaces what was there, as a map ``put``
does. Each sub-rule is its fields sorted in Java's string order, the order in which
event-ruler visits them. A field is named by its keys joined with dots, so ``{"a.b": ...}``
and ``{"a": {"b": ...}}`` name one field, as in EventBridge. Everything AWS refuses is
refused here, with where and why.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, Final

from service.filters.core import InvalidPatternError, JsonObject
from service.filters.ips import exact_range, ip_hex
from service.filters.leaf import Leaf
from service.filters.numbers import Num, comparable
from service.filters.operators import OPERATORS

MAX_PATTERN_CHARS: Final = 4096
#: event-ruler's limit on the fields of one sub-rule (GenericMachine.MAXIMUM_RULE_SIZE)
MAX_FIELDS: Final = 256
#: esmd's own bound on what ``$or`` may expand to (event-ruler expands without one)
MAX_ALTERNATIVES: Final = 1024
#: Python frames spent per level of a pattern's nesting while it is read and compiled
_FRAMES_PER_LEVEL: Final = 4

#: Names event-ruler refuses as field names anywhere inside an ``$or``.
RESERVED_IN_OR: Final = frozenset(
    {
        *OPERATORS,
        "exactly",
        *("=", "<", "<=", ">", ">="),
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a sub-rule: event-ruler's flattened name (the pattern's keys joined
    with dots), that name cut at every dot, and the conditions on the value.

    A record's value belongs to the field when the record's keys on the way to it, joined
    with dots, spell the name: ``{"a": {"b": 1}}``, ``{"a.b": 1}`` (see
    :mod:`service.filters.exact`).
    """

    name: str
    segments: tuple[str, ...]
    leaf: Leaf


SubRule = tuple[Field, ...]
_Draft = dict[str, Leaf]


def java_order(name: str) -> bytes:
    """A sort key that orders strings as Java's ``String.compareTo`` (UTF-16 units)."""
    return name.encode("utf-16-be", "surrogatepass")


def read_json(text: str) -> Any:
    """Parse a pattern, keeping repeated keys and each number's text."""
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidPatternError(
            f"a pattern is at most {MAX_PATTERN_CHARS} characters, this one has {len(text)}"
        )
    try:
        return json.loads(
            text,
            object_pairs_hook=JsonObject,
            parse_float=Num,
            parse_int=Num,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidPatternError(
            f"the pattern is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _no_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def compile_pattern(text: str) -> list[SubRule]:
    """The sub-rules of a pattern; InvalidPatternError when AWS would refuse it."""
    try:
        with stack_for(nesting(text) if len(text) <= MAX_PATTERN_CHARS else 0):
            pattern = read_json(text)
            if not isinstance(pattern, JsonObject):
                raise InvalidPatternError("a pattern must be a JSON object")
            drafts: list[_Draft] = []
            _object(drafts, (), pattern, "", in_or=False)
    except RecursionError:  # pragma: no cover - stack_for leaves room for any 4,096 characters
        raise InvalidPatternError("the pattern is nested too deeply") from None
    rules = []
    for draft in drafts:
        if len(draft) > MAX_FIELDS:
            raise InvalidPatternError(
                f"a pattern names at most {MAX_FIELDS} fields (with each $or branch),"
                f" this one {len(draft)}"
            )
        fields = (Field(name, tuple(name.split(".")), leaf) for name, leaf in draft.items())
        rules.append(tuple(sorted(fields, key=lambda f: java_order(f.name))))
    return rules


def field_name(path: tuple[str, ...]) -> str:
    """event-ruler's name for a pattern field: its keys joined with dots, except that no
    dot follows a lone empty key (``Path.extendedName``), so ``{"": {"a": [1]}}`` names
    ``a`` (while a record's ``{"": {"a": 1}}`` is ``.a``)."""
    *objects, key = path
    base = ".".join(objects)
    return f"{base}.{key}" if base else key


def java_split(name: str) -> list[str]:
    """``name.split("\\.")`` as Java computes it: trailing empty strings are dropped
    (``"a."`` gives ``["a"]``, ``"."`` gives ``[]``), except that ``""`` gives ``[""]``."""
    if not name:
        return [""]
    parts = name.split(".")
    while parts and not parts[-1]:
        parts.pop()
    return parts


def field_steps(rules: Iterable[SubRule]) -> frozenset[str]:
    """The *steps* of sub-rules: the parts of their field names, cut at dots as Java does.

    event-ruler reads a record key only when it is a step of the rules in its machine, or
    when it holds a dot and each of its parts is one (``GenericMachine.isFieldStepUsed``).
    That decides nothing except for an empty key: it is read only when some field name has
    an empty part that is not at its end, so ``{"a.": [1]}`` meets ``{"a.": 1}`` but not
    ``{"a": {"": 1}}``. esmd decides each ``$or`` branch on its own (docs/filters.md), with
    the branch's own steps.
    """
    return frozenset(part for rule in rules for f in rule for part in java_split(f.name))


def nesting(text: str) -> int:
    """How deeply a pattern's arrays and objects nest (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


_stack_lock = threading.Lock()
_stack_holds: list[int] = []  # the limits compilations in progress need
_stack_base = 0  # the limit before the first of them


@contextmanager
def stack_for(levels: int) -> Iterator[None]:
    """Room on Python's stack to read and compile a pattern nested ``levels`` deep.

    The JSON reader and the grammar recurse once or twice per level; a pattern within
    AWS's 4,096 characters can nest 818 levels (``{"":`` ... ``}``), beyond Python's default
    limit of 1,000 frames. The limit is raised while such a pattern compiles, and restored
    when no compilation needs it any more.
    """
    global _stack_base
    frame: FrameType | None = sys._getframe()
    used = 0
    while frame is not None:
        frame, used = frame.f_back, used + 1
    needed = used + _FRAMES_PER_LEVEL * levels + 100
    if needed <= sys.getrecursionlimit() and not _stack_holds:
        yield
        return
    with _stack_lock:
        if not _stack_holds:
            _stack_base = sys.getrecursionlimit()
        _stack_holds.append(needed)
        sys.setrecursionlimit(max([_stack_base, *_stack_holds]))
    try:
        yield
    finally:
        with _stack_lock:
            _stack_holds.remove(needed)
            sys.setrecursionlimit(max([_stack_base, *_stack_holds]))


def _where(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _object(
    drafts: list[_Draft], path: tuple[str, ...], pairs: JsonObject, at: str, *, in_or: bool
) -> None:
    if not pairs:
        raise InvalidPatternError(f"{at or 'the pattern'}: an empty object is not allowed")
    for key, value in pairs:
        where = _where(at, key)
        if key == "$or":
            _or(drafts, path, value, where)
            continue
        if in_or and key in RESERVED_IN_OR:
            raise InvalidPatternError(f"{where}: {key!r} is reserved, no field in $or may use it")
        if isinstance(value, JsonObject):
            _object(drafts, (*path, key), value, where, in_or=in_or)
        elif isinstance(value, list):
            _array(drafts, (*path, key), value, where)
        else:
            raise InvalidPatternError(f"{where}: must be an array of values or an object")


def _or(drafts: list[_Draft], path: tuple[str, ...], branches: Any, at: str) -> None:
    if not isinstance(branches, list) or isinstance(branches, JsonObject):
        raise InvalidPatternError(f"{at}: $or takes an array of pattern objects")
    before = [dict(draft) for draft in drafts]
    drafts.clear()
    for i, branch in enumerate(branches):
        if not isinstance(branch, JsonObject):
            raise InvalidPatternError(f"{at}[{i}]: each $or branch must be a pattern object")
        forked = [dict(draft) for draft in before] or [{}]
        _object(forked, path, branch, f"{at}[{i}]", in_or=True)
        drafts.extend(forked)
        if len(drafts) > MAX_ALTERNATIVES:
            raise InvalidPatternError(
                f"{at}: $or expands to more than {MAX_ALTERNATIVES} alternatives"
            )
    if len(branches) < 2:
        raise InvalidPatternError(f"{at}: $or needs at least two pattern objects")


def _array(drafts: list[_Draft], path: tuple[str, ...], values: list[Any], at: str) -> None:
    if not values:
        raise InvalidPatternError(f"{at}: an empty array is not allowed (it matches nothing)")
    leaf = Leaf()
    for i, value in enumerate(values):
        _value(leaf, value, f"{at}[{i}]")
    if not drafts:
        drafts.append({})
    name = field_name(path)
    for draft in drafts:
        draft[name] = leaf


def _value(leaf: Leaf, value: Any, at: str) -> None:
    condition = _identity(value)
    leaf.conditions.append(condition)
    if isinstance(value, str):
        digits = ip_hex(value)
        if digits is None:
            leaf.strings.add(value)
        else:
            leaf.ip_ranges.append(exact_range(digits))  # an IP matches as an address
    elif isinstance(value, Num):
        number = comparable(value.value)
        if number is not None:
            leaf.numbers.add(number)
        elif value.value == value.value.to_integral_value() and value.value.copy_abs() < 2**64:
            leaf.big_ints.add(int(value.value))  # decoded records hold no larger integer
    elif value is None:
        leaf.null = True
    elif value is True:
        leaf.true = True
    elif value is False:
        leaf.false = True
    elif isinstance(value, JsonObject):
        _operator(leaf, value, at)
        op, arg = value[0]
        if op == "anything-but" and isinstance(arg, JsonObject) and arg[0][0] == "wildcard":
            arg = arg[0][1]
        elif op != "wildcard":
            return
        leaf.wildcards.append((condition, (arg,) if isinstance(arg, str) else tuple(arg)))
    else:
        raise InvalidPatternError(
            f"{at}: a value must be a string, number, true, false, null or an operator object"
        )


def _identity(value: Any) -> Hashable:
    """A condition as a hashable value; equal for conditions event-ruler takes as equal."""
    if isinstance(value, JsonObject):
        return ("{", tuple((key, _identity(inner)) for key, inner in value))
    if isinstance(value, list):
        return ("[", tuple(_identity(inner) for inner in value))
    if isinstance(value, Num):
        number = comparable(value.value)
        return ("#", value.text if number is None else number)
    return ("=", value)


def _operator(leaf: Leaf, pairs: JsonObject, at: str) -> None:
    if not pairs:
        raise InvalidPatternError(f"{at}: an operator object needs an operator")
    op, arg = pairs[0]
    apply = OPERATORS.get(op)
    if apply is None:
        known = ", ".join(sorted(OPERATORS))
        raise InvalidPatternError(f"{at}: unknown operator {op!r} (known: {known})")
    apply(leaf, arg, f"{at}.{op}")
    if len(pairs) > 1:
        raise InvalidPatternError(f"{at}: an operator object holds exactly one operator")
