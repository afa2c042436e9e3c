"""event-ruler's matching algorithm, step for step: the reference the fast path defers to.

event-ruler flattens the record into (path, value) fields, each remembering which element
of which JSON array it came from, and walks a sub-rule's fields in their sorted order:
every field needs a record value that meets its conditions, and all the values chosen must
come from the same element of any array they share ("array consistency"). ``exists:
false`` holds when no value at its path is consistent with the values chosen *so far*, so
with arrays of objects the answer depends on the order of the keys. The fast matcher
hands exactly those records here (see :class:`service.filters.core.Ambiguous`).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from typing import Any

from service.filters.core import MISSING, PAYLOAD_KEYS, Predicate, RawPayload
from service.filters.grammar import SubRule

Membership = tuple[tuple[int, int], ...]
Trie = dict[str, "Trie"]


def payload_guard(rule: SubRule) -> Predicate:
    """True when the record's payload format suits the sub-rule, as ESM documents it: a
    payload that is not JSON never meets a pattern that treats it as an object, and a JSON
    payload never meets a plain (string) pattern on the payload key."""
    as_object = {f.path[0] for f in rule if len(f.path) > 1 and f.path[0] in PAYLOAD_KEYS}
    as_plain = {f.path[0] for f in rule if len(f.path) == 1 and f.path[0] in PAYLOAD_KEYS}

    def suits(record: dict[str, Any]) -> bool:
        for key in as_object:
            if type(record.get(key)) is RawPayload:
                return False
        for key in as_plain:
            value = record.get(key)
            if value is not None and type(value) is not RawPayload:
                return False
        return True

    return suits


def exact_matcher(rule: SubRule) -> Predicate:
    """A predicate deciding a record for one sub-rule exactly as event-ruler does."""
    trie: Trie = {}
    for field in rule:
        node = trie
        for key in field.path:
            node = node.setdefault(key, {})
    wanted = {field.path for field in rule}
    steps = [
        (f.path, f.leaf.scalar_test() if f.leaf.has_value_test else None, f.leaf.absent)
        for f in rule
    ]
    suits = payload_guard(rule)

    def match(record: dict[str, Any]) -> bool:
        if not suits(record):
            return False
        fields: dict[tuple[str, ...], list[tuple[Any, Membership]]] = {}
        for path, value, membership in _flatten(record, trie, (), (), count(), wanted):
            fields.setdefault(path, []).append((value, membership))
        return _search(steps, 0, {}, fields)

    return match


def _flatten(
    value: Any,
    trie: Trie,
    path: tuple[str, ...],
    membership: Membership,
    arrays: Iterator[int],
    wanted: set[tuple[str, ...]],
) -> Iterator[tuple[tuple[str, ...], Any, Membership]]:
    """The record's leaf values along the pattern's paths, as event-ruler's ``Event``."""
    kind = type(value)
    if kind is dict:
        for key, below in trie.items():
            if key in value:
                yield from _flatten(value[key], below, (*path, key), membership, arrays, wanted)
    elif kind is list:
        array = next(arrays)
        for index, item in enumerate(value):
            if type(item) is dict or type(item) is list:
                inner = (*membership, (array, index))
                yield from _flatten(item, trie, path, inner, arrays, wanted)
            elif path in wanted:
                yield path, item, membership  # a scalar element joins no element of its array
    elif value is not MISSING and path in wanted:
        yield path, value, membership


def _consistent(bound: dict[int, int], membership: Membership) -> bool:
    return all(bound.get(array, index) == index for array, index in membership)


def _search(
    steps: list[tuple[tuple[str, ...], Predicate | None, bool]],
    at: int,
    bound: dict[int, int],
    fields: dict[tuple[str, ...], list[tuple[Any, Membership]]],
) -> bool:
    if at == len(steps):
        return True
    path, test, absent = steps[at]
    candidates = fields.get(path, [])
    if test is not None:
        for value, membership in candidates:
            if (
                _consistent(bound, membership)
                and test(value)
                and _search(steps, at + 1, {**bound, **dict(membership)}, fields)
            ):
                return True
    if absent and not any(_consistent(bound, membership) for _, membership in candidates):
        return _search(steps, at + 1, bound, fields)
    return False
