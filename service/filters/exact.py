"""event-ruler's matching algorithm, step for step: the reference the fast path defers to.

event-ruler (2.1.0, with its default ``StructuredFinder``) flattens the record into
(name, value) fields, each remembering which element of which JSON array it came from, and
walks a sub-rule's fields in their sorted order: every field needs a record value that
meets its conditions, and all the values chosen must come from the same element of any
array they share ("array consistency"). ``exists: false`` holds when no value at its name
is consistent with the values chosen *so far*, so with arrays of objects the answer depends
on the order of the keys. The fast matcher hands exactly those records here (see
:class:`service.filters.core.Ambiguous`).

A value's name is the record's keys on the way to it joined with dots, so the record keys
``{"a": {"b": 1}}``, ``{"a.b": 1}`` and ``{"a": [{"b": 1}]}`` all give the field ``a.b``
the value 1. A key is read only when it is one of the pattern's *steps*
(:func:`service.filters.grammar.field_steps`), as event-ruler does. When a field has values
by two spellings and one of them lies in an array element already chosen, event-ruler
considers only the values in that element (``StructuredFinder.FieldIndex.getConsistent``);
which array it asks first follows its hash table's order, modelled by :class:`IntIntMap`.

This engine is also esmd's interpreted matcher: it decides sub-rules whose generated code
Python cannot compile (see :mod:`service.filters.fast`). It recurses on nothing a record
holds, so records nested as deeply as JSON decoders allow (1,024 levels) are safe.
"""

from __future__ import annotations

from typing import Any, Final

from service.filters.core import PAYLOAD_KEYS, Predicate, RawPayload
from service.filters.grammar import SubRule, field_steps, java_split

#: (trie node, key part) -> trie node; node 0 is the record itself
Trie = dict[tuple[int, str], int]
Value = tuple[Any, "IntIntMap"]

_PHI: Final = 0x9E3779B9


class IntIntMap:
    """event-ruler's ``IntIntMap`` (array id -> element index), down to the order in which
    it lists its entries: open addressing from a multiplicative hash, linear probing,
    doubling at three quarters full, and backward-shift deletion. event-ruler's matching
    asks the arrays of a membership in that order."""

    __slots__ = ("mask", "size", "table", "threshold")

    def __init__(self) -> None:
        self.table: list[tuple[int, int] | None] = [None] * 8
        self.mask, self.size, self.threshold = 7, 0, 6

    def copy(self) -> IntIntMap:
        other = IntIntMap.__new__(IntIntMap)
        other.table, other.mask = self.table.copy(), self.mask
        other.size, other.threshold = self.size, self.threshold
        return other

    def _start(self, key: int) -> int:
        h = (key * _PHI) & 0xFFFFFFFF
        h = h - (1 << 32) if h >= 1 << 31 else h  # Java int arithmetic
        return (h ^ (h >> 16)) & self.mask

    def get(self, key: int) -> int | None:
        table, mask, at = self.table, self.mask, self._start(key)
        while (cell := table[at]) is not None:
            if cell[0] == key:
                return cell[1]
            at = (at + 1) & mask
        return None

    def put(self, key: int, value: int) -> None:
        at = self._start(key)
        while (cell := self.table[at]) is not None:
            if cell[0] == key:
                self.table[at] = (key, value)
                return
            at = (at + 1) & self.mask
        self.table[at] = (key, value)
        if self.size >= self.threshold:
            self._rehash(2 * len(self.table))
        else:
            self.size += 1

    def _rehash(self, capacity: int) -> None:
        old = self.table
        self.table, self.mask = [None] * capacity, capacity - 1
        self.threshold, self.size = int(capacity * 0.75), 0
        for cell in reversed(old):
            if cell is not None:
                self.put(*cell)

    def remove(self, key: int) -> None:
        table, mask, at = self.table, self.mask, self._start(key)
        while (cell := table[at]) is not None:
            if cell[0] == key:
                self.size -= 1
                self._shift(at)
                return
            at = (at + 1) & mask

    def _shift(self, pos: int) -> None:
        table, mask = self.table, self.mask
        while True:
            last = pos
            while True:
                pos = (pos + 1) & mask
                cell = table[pos]
                if cell is None:
                    table[last] = None
                    return
                start = self._start(cell[0])
                if last < pos:
                    if last >= start or start > pos:
                        break
                elif last >= start > pos:  # wrapped around
                    break
            table[last] = table[pos]

    def entries(self) -> list[tuple[int, int]]:
        return [cell for cell in self.table if cell is not None]


_EMPTY: Final = IntIntMap()


def _snapshot(membership: IntIntMap) -> IntIntMap:
    """``new ArrayMembership(membership)``: the shared empty map, or a copy."""
    return _EMPTY if not membership.size else membership.copy()


def _merge(so_far: IntIntMap, field: IntIntMap) -> IntIntMap | None:
    """``ArrayMembership.checkArrayConsistency``: the memberships so far with the field's
    added, or None when the field lies in another element of an array already chosen."""
    if not so_far.size:
        return so_far if not field.size else field.copy()
    merged = None
    for array, index in field.entries():
        chosen = so_far.get(array)
        if chosen is None:
            if merged is None:
                merged = so_far.copy()
            merged.put(array, index)
        elif chosen != index:
            return None
    return so_far if merged is None else merged


def payload_guard(rule: SubRule) -> Predicate:
    """True when the record's payload format suits the sub-rule, as ESM documents it: a
    payload that is not JSON never meets a pattern that treats it as an object, and a JSON
    payload never meets a plain (string) pattern on the payload key."""
    as_object = {f.segments[0] for f in rule if len(f.segments) > 1} & PAYLOAD_KEYS
    as_plain = {f.segments[0] for f in rule if len(f.segments) == 1} & PAYLOAD_KEYS

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


Step = tuple[int, Predicate | None, bool]


def exact_matcher(rule: SubRule, steps: frozenset[str] | None = None) -> Predicate:
    """A predicate deciding a record for one sub-rule exactly as event-ruler does, in a
    machine of its own; ``steps`` default to the sub-rule's own (a machine shares them
    among all its rules, see :func:`service.filters.grammar.field_steps`)."""
    trie: Trie = {}
    ends: set[int] = set()  # the trie nodes where a field's name ends
    walk: list[Step] = []
    for field in rule:  # in the sub-rule's (Java) order, the order event-ruler checks them
        node = 0
        for part in field.segments:
            node = trie.setdefault((node, part), len(trie) + 1)
        ends.add(node)
        test = field.leaf.scalar_test() if field.leaf.has_value_test else None
        walk.append((node, test, field.leaf.absent))
    used = field_steps([rule]) if steps is None else steps
    suits = payload_guard(rule)

    def match(record: dict[str, Any]) -> bool:
        if not suits(record):
            return False
        fields = _flatten(record, trie, ends, used)
        return _search(walk, 0, IntIntMap(), fields, _by_element(fields))

    return match


def _step_used(key: str, steps: frozenset[str]) -> bool:
    """``GenericMachine.isFieldStepUsed``: whether event-ruler reads a record key."""
    if key in steps:
        return True
    return "." in key and all(part in steps for part in java_split(key))


def _flatten(
    record: dict[str, Any], trie: Trie, ends: set[int], steps: frozenset[str]
) -> dict[int, list[Value]]:
    """The record's leaf values at the fields' names, each with its array memberships, as
    event-ruler's ``Event`` reads them: every key that is a step is read, in the record's
    order, so that arrays are numbered as event-ruler numbers them; only values at the
    fields' names are kept. Iterative: ``todo`` holds what the recursion would do next."""
    fields: dict[int, list[Value]] = {}
    membership = IntIntMap()
    arrays = 0
    # ("v", value, node): read a value at a trie node (None: off the pattern's names);
    # ("in", array, index) / ("out", array): enter or leave an element of an array
    todo: list[tuple[Any, ...]] = [("v", record, 0)]
    while todo:
        item = todo.pop()
        if item[0] == "in":
            membership.put(item[1], item[2])
            continue
        if item[0] == "out":
            membership.remove(item[1])
            continue
        _, value, node = item
        kind = type(value)
        below: list[tuple[Any, ...]] = []
        if kind is dict:
            for key, inner in value.items():
                if type(key) is not str or not _step_used(key, steps):
                    continue
                child = node
                for part in key.split("."):
                    if child is None:
                        break
                    child = trie.get((child, part))
                below.append(("v", inner, child))
            todo.extend(reversed(below))
        elif kind is list:
            array, arrays = arrays, arrays + 1
            for index, element in enumerate(value):
                if type(element) is dict or type(element) is list:
                    below += [("in", array, index), ("v", element, node), ("out", array)]
                else:
                    below.append(("v", element, node))  # a scalar joins no element
            todo.extend(reversed(below))
        elif node in ends:
            fields.setdefault(node, []).append((value, _snapshot(membership)))
    return fields


ByElement = dict[int, dict[int, dict[int, list[Value]]]]


def _by_element(fields: dict[int, list[Value]]) -> ByElement:
    """Each field's values by array and element (``StructuredFinder.FieldIndex``)."""
    index: ByElement = {}
    for node, values in fields.items():
        for value in values:
            for array, element in value[1].entries():
                per_array = index.setdefault(node, {}).setdefault(array, {})
                per_array.setdefault(element, []).append(value)
    return index


def _candidates(
    node: int, so_far: IntIntMap, fields: dict[int, list[Value]], by_element: ByElement
) -> list[Value]:
    """``FieldIndex.getConsistent``: a field's values worth trying given the elements
    chosen so far. For the first chosen array (in the map's order) that holds some of the
    field's values, only those in the chosen element are tried, not the field's values
    outside that array."""
    values = fields.get(node, [])
    if not values or not so_far.size:
        return values
    per_array = by_element.get(node)
    if per_array is not None:
        for array, element in so_far.entries():
            in_array = per_array.get(array)
            if in_array is not None:
                chosen = in_array.get(element, [])
                if so_far.size <= 1:
                    return chosen
                return [value for value in chosen if _merge(so_far, value[1]) is not None]
    return values


def _search(
    walk: list[Step],
    at: int,
    so_far: IntIntMap,
    fields: dict[int, list[Value]],
    by_element: ByElement,
) -> bool:
    """Whether the fields from ``at`` on can be met consistently with ``so_far`` (the array
    elements chosen); one frame per field, at most 256 (grammar.MAX_FIELDS)."""
    if at == len(walk):
        return True
    node, test, absent = walk[at]
    if (
        absent
        and all(_merge(so_far, m) is None for _, m in fields.get(node, []))
        and _search(walk, at + 1, so_far, fields, by_element)
    ):
        return True
    if test is not None:
        for value, membership in _candidates(node, so_far, fields, by_element):
            merged = _merge(so_far, membership)
            if (
                merged is not None
                and test(value)
                and _search(walk, at + 1, merged, fields, by_element)
            ):
                return True
    return False
