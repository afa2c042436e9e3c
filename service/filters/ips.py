"""IP addresses and CIDR blocks, decided as event-ruler decides them.

event-ruler turns an address into hex digits (8 for IPv4, 32 for IPv6) and matches them
against a digit range with a byte automaton that decides as soon as a prefix settles it.
So an IPv6 address whose first 32 bits fall in an IPv4 block matches that block, and an
IPv4 address can match an IPv6 block that its 8 digits already settle (``::/0`` matches
``10.0.0.1`` but not ``0.0.0.0``). Literals follow Java's ``InetAddress``: IPv4 parts are
decimal with leading zeros allowed (``010.0.0.1`` is 10.0.0.1), and an IPv4-mapped IPv6
address is its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6 = re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*")
_INT = re.compile(r"[+-]?\d+")
_MAX_IPV4_LITERAL = 15  # Java reads a longer string as a host name, which never resolves here


def ip_hex(text: str) -> str | None:
    """The address as event-ruler's upper-case hex digits, or None if it is no address."""
    if _IPV4.fullmatch(text):
        if len(text) > _MAX_IPV4_LITERAL:
            return None
        parts = [int(part) for part in text.split(".")]
        return bytes(parts).hex().upper() if max(parts) <= 255 else None
    if _IPV6.fullmatch(text):
        try:
            address = ipaddress.IPv6Address(text)
        except ValueError:
            return None
        return (address.ipv4_mapped or address).packed.hex().upper()
    return None


@dataclass(frozen=True, slots=True)
class HexRange:
    """A range of hex-digit strings, matched by event-ruler's prefix-deciding automaton."""

    bottom: str
    open_bottom: bool
    top: str
    open_top: bool

    def contains(self, digits: str) -> bool:
        bottom, top = self.bottom, self.top
        fork = next(i for i in range(len(bottom)) if bottom[i] != top[i])
        if len(digits) <= fork or digits[:fork] != bottom[:fork]:
            return False
        first = digits[fork]
        if bottom[fork] < first < top[fork]:
            return True
        if first == bottom[fork]:
            return self._follow(digits, fork, bottom, above=True, is_open=self.open_bottom)
        if first == top[fork]:
            return self._follow(digits, fork, top, above=False, is_open=self.open_top)
        return False

    @staticmethod
    def _follow(digits: str, fork: int, bound: str, *, above: bool, is_open: bool) -> bool:
        """Walk the bound's digits: the first digit that differs decides."""
        for i in range(fork + 1, len(bound)):
            if i >= len(digits):
                return False
            if digits[i] != bound[i]:
                return (digits[i] > bound[i]) == above
        return not is_open


def exact_range(digits: str) -> HexRange:
    """The range event-ruler builds for a pattern value that is an IP address."""
    last = digits[-1]
    if last == "F":
        return HexRange(digits[:-1] + "E", True, digits, False)
    following = "A" if last == "9" else chr(ord(last) + 1)
    return HexRange(digits, False, digits[:-1] + following, True)


def cidr_range(text: str) -> HexRange:
    """The range for a ``cidr`` pattern; ValueError says why a block is refused."""
    parts = text.split("/")
    while parts and not parts[-1]:
        parts.pop()  # Java's String.split drops trailing empty strings
    if len(parts) != 2:
        raise ValueError("malformed CIDR block, one '/' required")
    if not _INT.fullmatch(parts[1]) or not -(2**31) <= int(parts[1]) < 2**31:
        raise ValueError("malformed CIDR block, the mask bits must be an integer")
    bits = int(parts[1])
    if bits < 0:
        raise ValueError("malformed CIDR block, the mask bits must not be negative")
    digits = ip_hex(parts[0])
    if digits is None:
        raise ValueError(f"{parts[0]!r} is not an IP address")
    size = len(digits) * 4
    if bits > size - 1:
        raise ValueError(f"IPv{4 if size == 32 else 6} mask bits must be below {size}")
    value = int(digits, 16)
    host = (1 << (size - bits)) - 1
    width = len(digits)
    low = format(value & ~host, f"0{width}X")
    high = format(value | host, f"0{width}X")
    return HexRange(low, False, high, False)
