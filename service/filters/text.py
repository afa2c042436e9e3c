"""String operators whose rules are event-ruler's own: wildcard and equals-ignore-case."""

from __future__ import annotations

import re
from collections.abc import Callable

StrTest = Callable[[str], bool]


def wildcard_parts(text: str) -> list[str]:
    """The literal parts between a wildcard's ``*``; ValueError says what is wrong.

    ``\\*`` is a literal star and ``\\\\`` a literal backslash; any other backslash, and
    two stars in a row, are refused as event-ruler refuses them.
    """
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if text[i + 1 : i + 2] == "*":
                raise ValueError(f"consecutive wildcard characters at position {i}")
            parts.append("".join(current))
            current = []
        elif char == "\\":
            following = text[i + 1 : i + 2]
            if following not in ("*", "\\"):
                raise ValueError(f"invalid escape character at position {i}")
            current.append(following)
            i += 1
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def wildcard(text: str) -> StrTest:
    """A test that the whole string matches the wildcard, without backtracking."""
    parts = wildcard_parts(text)
    if len(parts) == 1:
        (only,) = parts
        return lambda value: value == only
    first, *middle, last = parts
    least = sum(map(len, parts))

    def match(value: str) -> bool:
        if len(value) < least or not value.startswith(first) or not value.endswith(last):
            return False
        at, end = len(first), len(value) - len(last)
        for part in middle:  # leftmost placement of each part leaves the most room after it
            at = value.find(part, at, end)
            if at < 0:
                return False
            at += len(part)
        return True

    return match


def _alternatives(char: str) -> str:
    """A regex for the forms event-ruler accepts for one pattern character.

    event-ruler case-maps each UTF-16 unit alone, so a character outside the BMP becomes
    two lone surrogates, which Java encodes as ``??``: it only matches a literal ``??``.
    """
    if ord(char) > 0xFFFF:
        return re.escape("??")
    if 0xD800 <= ord(char) <= 0xDFFF:
        return re.escape("?")
    lower, upper = char.lower(), char.upper()
    if lower == upper:
        return re.escape(lower)
    return f"(?:{re.escape(lower)}|{re.escape(upper)})"


def ignore_case(text: str, how: str) -> StrTest:
    """A case-insensitive ``equals``, ``prefix`` or ``suffix`` test, as event-ruler does it:
    each pattern character matches its own lower- or upper-case form."""
    if text.isascii():
        return _ascii_ignore_case(text.lower(), how)
    regex = "".join(_alternatives(char) for char in text)
    if how == "equals":
        full = re.compile(regex, re.DOTALL).fullmatch
        return lambda value: full(value) is not None
    if how == "prefix":
        start = re.compile(regex, re.DOTALL).match
        return lambda value: start(value) is not None
    ending = re.compile(f"(?:{regex})\\Z", re.DOTALL).search
    return lambda value: ending(value) is not None


def _ascii_ignore_case(low: str, how: str) -> StrTest:
    size = len(low)
    if how == "equals":
        return lambda value: len(value) == size and value.isascii() and value.lower() == low
    if how == "prefix":
        return lambda value: (head := value[:size]).isascii() and head.lower() == low
    if not size:
        return lambda value: True
    return lambda value: (tail := value[-size:]).isascii() and tail.lower() == low
