"""Hypothesis strategies for event patterns and events, shared by the filter tests.

Patterns use the keys ``a``, ``b``, ``c`` (no payload keys) and now and then keys with dots
(``a.b``; ``a.``, ``""``: EventBridge joins keys with dots, see docs/filters.md), and draw
their values from small pools that exercise event-ruler's corners: case mapping beyond
ASCII, IP literals, numbers that are not exact doubles, wildcard escapes. ``valid=False``
mixes in what AWS refuses. :func:`witness` builds events from a pattern's own values, so
that a good share of the generated pairs match; it spells nested keys as one dotted key,
and dotted keys as nested objects, now and then.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

OPERATORS = [
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "numeric",
    "exists",
    "anything-but",
    "cidr",
    "exactly",
    "$or",
]
KEYS = ["a", "b", "c"]
#: keys that EventBridge's key joining reads in more than one way
DOTTED_KEYS = ["a.b", "b.c", "a.b.c", "a.", ".a", "", "a..b"]
STRINGS = [
    "",
    "x",
    "X",
    "xy",
    "abc",
    "ABC",
    "aBc",
    "a.b",
    "ab",
    "bc",
    "a*c",
    "a\\b",
    "hello world",
    "héllo",
    "HÉLLO",
    "ß",
    "SS",
    "straße",
    "STRASSE",
    "k",
    "\u212a",
    "İ",
    "😀",
    "??",
    "10.0.0.1",
    "010.0.0.1",
    "10.0.0.255",
    "10.0.1.7",
    "192.168.1.20",
    "::1",
    "a00:1::",
    "::ffff:a00:1",
    "2001:db8::1",
    "256.0.0.1",
    "0.0.0.0",
    "0.0.0.1",
    "5",
    "null",
]
NUMBERS: list[int | float] = [
    -5,
    0,
    1,
    5,
    100,
    2.5,
    -0.5,
    1000,
    0.25,
    -0.0,
    5.0,
    1e300,
    1e-7,
    2**53,
    2**53 + 1,
    2**60,
    2**54,
]
WILDCARDS = [
    "*",
    "a*",
    "*c",
    "a*c",
    "*.*",
    "x*y",
    "abc",
    "*b*",
    "h*o*",
    "a\\*c",
    "a\\\\b*",
    "**",
    "a\\",
]
# No block here spans a first hex digit a number can start with (::/0, 0.0.0.0/0, 128.0.0.0/1):
# event-ruler would walk a number's JSON text through such a block's digits (so 1 is "in"
# ::/0); esmd's cidr matches IP address strings only (docs/filters.md).
# No block here spans a first hex digit that a number's text can start with (as ::/0 or
# 128.0.0.0/1 do): event-ruler walks a number's JSON text through such a block's digits,
# so 1 is "in" ::/0; esmd's cidr matches IP address strings only (docs/filters.md).
CIDRS = [
    "10.0.0.0/24",
    "10.0.0.0/8",
    "192.168.1.0/28",
    "::/8",
    "0.0.0.0/8",
    "2001:db8::/32",
    "10.0.0.0/32",
    "10.0.0.0/24/",
    "x/8",
    "10.0.0.1/+8",
]
# An empty array under an anything-but object is left out: event-ruler crashes on it, or
# ignores it when another value precedes it (esmd refuses it; docs/filters.md).
BROKEN: list[Any] = [
    {},
    {"prefix": "a", "suffix": "b"},
    {"like": "a"},
    {"prefix": 1},
    {"numeric": []},
    {"numeric": ["<", 1, ">", 0]},
    {"numeric": [">", 5, "<", 5]},
    {"numeric": ["!=", 1]},
    {"exists": "yes"},
    {"anything-but": []},
    {"anything-but": ["x", 1]},
    {"anything-but": None},
    {"anything-but": {"prefix": ""}},
    {"anything-but": {"numeric": [">", 1]}},
    {"equals-ignore-case": 5},
    {"prefix": {"suffix": "x"}},
    [1],
]

# Most values come from a few common ones, so that events often meet the patterns.
COMMON_STRINGS = ["", "x", "X", "abc", "aBc", "hello world", "10.0.0.1", "ß"]
COMMON_NUMBERS: list[int | float] = [0, 1, 5, 2.5, 100, -0.5]
VALID_WILDCARDS = [w for w in WILDCARDS if w not in ("**", "a\\")]
VALID_CIDRS = [c for c in CIDRS if c not in ("10.0.0.0/32", "x/8")]

strings = st.one_of(st.sampled_from(COMMON_STRINGS), st.sampled_from(STRINGS))
numbers = st.one_of(st.sampled_from(COMMON_NUMBERS), st.sampled_from(NUMBERS))
scalars = st.one_of(strings, numbers, st.booleans(), st.none())


def one(op: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda v: {op: v}, values)


def ignore_case(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return one("equals-ignore-case", values)


def conditions(valid: bool) -> st.SearchStrategy[Any]:
    """One element of a pattern array; ``valid=False`` mixes in what AWS refuses."""
    nums = st.sampled_from(COMMON_NUMBERS) if valid else numbers
    wildcards = st.sampled_from(VALID_WILDCARDS if valid else WILDCARDS)
    cidrs = st.sampled_from(VALID_CIDRS if valid else CIDRS)
    some_strings = st.lists(strings, min_size=1, max_size=3)
    affixes = st.one_of(strings, some_strings)
    if valid:  # an empty anything-but prefix or suffix is refused
        affixes = affixes.filter(lambda v: all(v) if isinstance(v, list) else bool(v))
    pairs = st.lists(nums, min_size=2, max_size=2, unique=True).map(sorted)
    numeric = st.one_of(
        st.tuples(st.sampled_from(["=", "<", "<=", ">", ">="]), nums).map(list),
        st.tuples(st.sampled_from([">", ">="]), pairs, st.sampled_from(["<", "<="])).map(
            lambda t: [t[0], t[1][0], t[2], t[1][1]]
        ),
    )
    anything_but = st.one_of(
        strings,
        some_strings,
        nums,
        st.lists(nums, min_size=1, max_size=3),
        one("prefix", affixes),
        one("suffix", affixes),
        ignore_case(st.one_of(strings, some_strings)),
        one("wildcard", st.one_of(wildcards, st.lists(wildcards, min_size=1, max_size=2))),
    )
    options = [
        scalars,
        scalars,
        one("prefix", st.one_of(strings, ignore_case(strings))),
        one("suffix", st.one_of(strings, ignore_case(strings))),
        ignore_case(strings),
        one("wildcard", wildcards),
        one("exactly", strings),
        one("numeric", numeric),
        one("exists", st.booleans()),
        one("exists", st.booleans()),
        one("anything-but", anything_but),
        one("cidr", cidrs),
    ]
    if not valid:
        options.append(st.sampled_from(BROKEN))
    return st.one_of(*options)


keys = st.one_of(*[st.sampled_from(KEYS)] * 6, st.sampled_from(DOTTED_KEYS))


def object_patterns(depth: int, valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    leaves = st.lists(conditions(valid), min_size=1, max_size=3)
    values: st.SearchStrategy[Any] = (
        leaves if depth == 0 else st.one_of(leaves, leaves, object_patterns(depth - 1, valid))
    )
    plain = st.dictionaries(keys, values, min_size=1, max_size=3)
    if depth == 0:
        return plain
    with_or = st.builds(
        lambda base, alts, after: {**base, "$or": alts, **after},
        st.dictionaries(keys, values, max_size=2),
        st.lists(object_patterns(depth - 1, valid), min_size=2, max_size=3),
        st.dictionaries(keys, leaves, max_size=1),
    )
    return st.one_of(plain, plain, with_or)


patterns = st.one_of(*[object_patterns(2, valid=True)] * 6, object_patterns(2, valid=False))
event_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
events = st.dictionaries(keys, event_values, max_size=3)


def near(condition: Any) -> st.SearchStrategy[Any]:
    """Values that meet (or nearly meet) one condition of a pattern array."""
    if not isinstance(condition, dict) or len(condition) != 1:
        return st.just(condition) if not isinstance(condition, list | dict) else scalars
    ((op, arg),) = condition.items()
    if isinstance(arg, dict) and len(arg) == 1:
        arg = next(iter(arg.values()))
    text = arg if isinstance(arg, str) else "x"
    unescaped = text.replace("\\*", "\0").replace("\\\\", "\\").replace("\0", "*")
    options: dict[str, st.SearchStrategy[Any]] = {
        "prefix": st.sampled_from([text + "yz", text.upper() + "q", text]),
        "suffix": st.sampled_from(["yz" + text, "Q" + text.upper(), text]),
        "equals-ignore-case": st.sampled_from([text.swapcase(), text.upper(), text]),
        "wildcard": st.sampled_from([text.replace("*", "zz"), text.replace("*", ""), unescaped]),
        "exactly": st.just(text),
        "cidr": st.sampled_from(["10.0.0.7", "192.168.1.3", "2001:db8::5", "0.0.0.1", "::1"]),
    }
    if op == "numeric" and isinstance(arg, list) and len(arg) > 1:
        bounds = [n for n in arg if isinstance(n, int | float)]
        return st.sampled_from([*bounds, *(b + 0.5 for b in bounds), *(b - 1 for b in bounds)])
    return options.get(op, scalars)


@st.composite
def witness(draw: st.DrawFn, pattern: Any) -> Any:
    """An event built from the pattern's own values, so that many of them match."""
    event: dict[str, Any] = {}
    for key, value in pattern.items():
        if key == "$or" and isinstance(value, list) and value:
            branch = draw(st.sampled_from(value))
            if isinstance(branch, dict):
                event.update(draw(witness(branch)))
            continue
        if draw(st.integers(0, 9)) == 0:
            continue  # leave a key out now and then
        if isinstance(value, dict):
            inner = draw(witness(value))
        elif isinstance(value, list) and value:
            inner = draw(near(draw(st.sampled_from(value))))
        else:
            inner = draw(scalars)
        shape = draw(st.integers(0, 5))
        if shape == 0:
            inner = [inner, draw(event_values)]
        elif shape == 1:
            inner = [draw(event_values), inner]
        spelling = draw(st.integers(0, 5))
        if spelling == 0 and isinstance(inner, dict) and inner:  # {"a": {"b": 1}} as {"a.b": 1}
            event.update({f"{key}.{below}": value for below, value in inner.items()})
        elif spelling == 1 and "." in key:  # {"a.b": 1} as {"a": {"b": 1}}
            head, rest = key.split(".", 1)
            event[head] = {rest: inner}
        else:
            event[key] = inner
    return event


# --- wildcard complexity ---------------------------------------------------------------------

#: wildcard texts whose machines exercise event-ruler's state sharing: leading, inner and
#: trailing stars, repeats, letters (two cases) and digits (one), two-byte characters
COMPLEX_WILDCARDS = [
    "*",
    "",
    "a*",
    "*a",
    "*a*",
    "*ab*",
    "*aa*",
    "a*b",
    "*a*a*",
    "ab*ab",
    "*é*",
    "*\\**",
    "x*y*z",
    "*ba*",
    "*b",
    "b*",
    "*ab*ab*",
    "aa*",
    "*x",
    "*1a*",
    "*1b*",
    "1*2",
]


def _no_text_twice(pattern: Any) -> bool:
    """event-ruler builds new states when it adds a wildcard text a second time, in ways
    its own construction order decides; esmd's count is not checked there (docs)."""
    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "wildcard":
                    texts.extend(inner if isinstance(inner, list) else [inner])
                else:
                    walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(pattern)
    return len(texts) == len(set(texts))


_wild = st.sampled_from(COMPLEX_WILDCARDS)
_wild_conditions = st.one_of(
    st.builds(lambda text: {"wildcard": text}, _wild),
    st.builds(
        lambda texts: {"anything-but": {"wildcard": texts}},
        st.lists(_wild, min_size=1, max_size=3, unique=True),
    ),
    st.sampled_from(["a", "ab", "x", 1, {"prefix": "a"}, {"exists": False}, {"exists": True}]),
)
_wild_arrays = st.lists(_wild_conditions, min_size=1, max_size=4, unique_by=json.dumps)
_wild_objects = st.dictionaries(st.sampled_from(KEYS), _wild_arrays, min_size=1, max_size=2)
wildcard_patterns = st.one_of(
    _wild_objects,
    st.builds(
        lambda base, branches: {**base, "$or": branches},
        st.dictionaries(st.sampled_from(KEYS), _wild_arrays, max_size=1),
        st.lists(_wild_objects, min_size=2, max_size=3),
    ),
).filter(_no_text_twice)
