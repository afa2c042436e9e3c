"""A screen on a payload's raw JSON bytes: records no filter can match, without parsing them.

Parsing a 1 KB JSON payload costs several times what deciding the filter on it does, and a
filter usually drops records by an exact string (``"status": ["COMPLETED"]``). Such a string
can only be met by a JSON string equal to it somewhere in the payload, so when the payload's
bytes hold no ``"COMPLETED"`` (quotes included), the record cannot match and need not be
parsed. The screen only ever says "cannot match"; whatever it lets through is decided by the
filter as before, so both paths give the same answers.

A payload with a backslash may spell a string with escapes (``"\\u0043OMPLETED"``): the
screen lets it through. Only fields below the payload's key count (``value.status``, not
``value`` itself, which a payload that is not JSON meets as text), and only conditions that
accept exact strings alone (``["a", "b"]``, ``exactly``), without quotes, backslashes or
control characters in them. A sub-rule with no such field, or a key other than the payload's,
leaves nothing to screen on: :func:`payload_screen` returns None then.
"""

from __future__ import annotations

from collections.abc import Callable

from service.filters.grammar import SubRule
from service.filters.leaf import Leaf

#: a raw payload -> False when no filter can match it (True: parse it and decide)
Screen = Callable[[bytes], bool]

_BACKSLASH = b"\\"


def payload_screen(rules: list[list[SubRule]], key: str) -> Screen | None:
    """The screen for payload ``key`` (``value``, ``body``) of these filters, or None when
    some sub-rule (they are alternatives) has no exact-string field below the payload."""
    needs: list[list[tuple[bytes, ...]]] = []
    for filt in rules:
        for rule in filt:
            groups = _required(rule, key)
            if not groups:
                return None
            needs.append(groups)
    if not needs:
        return None
    # bytes.find, not ``in``: CPython 3.11's ``in`` on bytes first tries the needle as an
    # int and builds (then drops) a TypeError, which costs more than the search
    if len(needs) == 1 and len(needs[0]) == 1 and len(needs[0][0]) == 1:
        needle = needs[0][0][0]  # the usual case: one field, one string
        return lambda raw: raw.find(needle) != -1 or raw.find(_BACKSLASH) != -1

    def screen(raw: bytes) -> bool:
        if raw.find(_BACKSLASH) != -1:
            return True
        return any(
            all(any(raw.find(n) != -1 for n in group) for group in groups) for groups in needs
        )

    return screen


def _required(rule: SubRule, key: str) -> list[tuple[bytes, ...]]:
    """Per exact-string field below ``key``, its strings as quoted JSON bytes: a payload
    matching the sub-rule holds one of each group. Empty when the sub-rule reads another
    key or has no such field."""
    groups: list[tuple[bytes, ...]] = []
    for field in rule:
        if field.segments[0] != key:
            return []
        if len(field.segments) < 2:
            continue
        needles = _needles(field.leaf)
        if needles:
            groups.append(needles)
    return groups


def _needles(leaf: Leaf) -> tuple[bytes, ...] | None:
    """The leaf's strings as they appear in raw JSON, when exact strings are all it accepts."""
    if not leaf.strings or _accepts_more(leaf):
        return None
    if any(not _plain(text) for text in leaf.strings):
        return None
    return tuple(sorted(b'"' + text.encode() + b'"' for text in leaf.strings))


def _accepts_more(leaf: Leaf) -> bool:
    """True when the leaf accepts something besides its exact strings."""
    return bool(
        leaf.ip_ranges
        or leaf.numbers
        or leaf.big_ints
        or leaf.null
        or leaf.true
        or leaf.false
        or leaf.prefixes
        or leaf.suffixes
        or leaf.string_tests
        or leaf.ranges
        or leaf.excluding
        or leaf.exists
        or leaf.absent
        or leaf.wildcards
    )


def _plain(text: str) -> bool:
    """A string JSON writes as itself between quotes (no escapes needed), and that is
    valid Unicode to encode."""
    if '"' in text or "\\" in text or any(ord(c) < 0x20 for c in text):
        return False
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True
