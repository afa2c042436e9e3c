"""The fast path: each sub-rule compiled to one generated Python function.

A sub-rule's fields form a tree of keys. The generated function walks the record's dicts
along that tree with inline tests for the common leaves (a set of strings, one prefix or
suffix, a set of numbers, one numeric range), so deciding a typical record is one call
with no pattern left to interpret. Anything else (arrays, odd types, absent keys) goes to
a closure compiled for that node (:func:`evaluator`), which applies event-ruler's rules:

- an array in the record matches when one element does; values a sub-rule takes from
  objects in the same array must come from the same element (array consistency);
- an object where a value is expected holds no value there (only ``exists: false`` meets
  it), and a value where an object is expected holds nothing below it;
- when an ``exists: false`` sits below an array of objects, the answer depends on
  event-ruler's key order, and the record goes to :mod:`service.filters.exact`.

The tree's keys are the parts of the fields' names between dots. A record may also spell
several of them as one key (``{"a.b": 1}`` for the field ``a.b``, as EventBridge joins
keys): where the pattern reaches two or more parts below a dict, the generated code looks
for those joined keys too, and a record that has one goes to the exact engine, which reads
keys as event-ruler does.

The payload checks ESM documents (see :func:`service.filters.exact.payload_guard`) are
emitted first. Generated code names only its own locals; keys and constants reach it as
default arguments, so no pattern text is ever part of the source.

Where Python cannot compile the generated function (a pattern nested more deeply than its
parser allows, :data:`MAX_GENERATED_DEPTH`), or the pattern has an empty key part (whose
reading depends on the whole pattern), the sub-rule is decided by the exact engine alone,
the *interpreted* path; the two decide every record alike. A record nested so deeply that
the fast path's helpers run out of stack is decided by the exact engine too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from service.filters.core import MISSING, PAYLOAD_KEYS, Ambiguous, Predicate, RawPayload
from service.filters.exact import exact_matcher
from service.filters.grammar import SubRule
from service.filters.leaf import Leaf, leaf_node, scalars
from service.filters.numbers import SAFE_INT

#: The deepest tree (in key parts) compiled to Python; deeper sub-rules are interpreted.
#: CPython refuses source nested beyond 100 indentation levels; each part takes one.
MAX_GENERATED_DEPTH: Final = 48

#: What sends a record from the generated code to the exact engine.
_DEFERRED: Final = (Ambiguous, RecursionError)


@dataclass(slots=True)
class Node:
    """A key of the sub-rule's tree: the conditions on its own value, and keys below."""

    leaf: Leaf | None = None
    children: dict[str, Node] = field(default_factory=dict)
    #: record keys that join two or more parts below this one (``"b.c"`` for ``a.b.c`` at
    #: ``a``): a dict holding one goes to the exact engine
    joined: frozenset[str] = frozenset()

    @property
    def absence_below(self) -> bool:
        """True when an ``exists: false`` sits strictly below this key."""
        return any(
            (child.leaf is not None and child.leaf.absent) or child.absence_below
            for child in self.children.values()
        )

    @property
    def empty_ok(self) -> bool:
        """True when the subtree holds with nothing present (only ``exists: false``)."""
        own = self.leaf is None or self.leaf.absent
        return own and all(child.empty_ok for child in self.children.values())


def build_tree(rule: SubRule) -> Node:
    """The sub-rule's fields as a tree of key parts, each node knowing its joined keys."""
    root = Node()
    joined: dict[int, set[str]] = {}
    for f in rule:
        node, parts = root, f.segments
        for i, part in enumerate(parts):
            below = joined.setdefault(id(node), set())
            below.update(".".join(parts[i:j]) for j in range(i + 2, len(parts) + 1))
            node = node.children.setdefault(part, Node())
        node.leaf = f.leaf
    todo = [root]
    while todo:
        node = todo.pop()
        node.joined = frozenset(joined.get(id(node), ()))
        todo.extend(node.children.values())
    return root


def evaluator(node: Node) -> Predicate:
    """A predicate over whatever the record holds at this node's key."""
    if not node.children:
        assert node.leaf is not None
        return leaf_node(node.leaf)
    kids = tuple((key, evaluator(child)) for key, child in node.children.items())
    joined = tuple(node.joined)
    leaf = node.leaf
    test = leaf.scalar_test() if leaf is not None and leaf.has_value_test else None
    needs_leaf = leaf is not None
    absent_ok = leaf is None or leaf.absent
    guarded = node.absence_below
    empty_ok = all(child.empty_ok for child in node.children.values())  # keys below, unmet

    def in_dict(obj: dict[str, Any]) -> bool:
        for key in joined:
            if key in obj:
                raise Ambiguous
        for key, kid in kids:
            if not kid(obj.get(key, MISSING)):
                return False
        return True

    def walk(values: list[Any], done: bool) -> bool:
        """Some element holds every key below; ``done``: this key's own value is settled."""
        if not done and test is not None:
            done = any(test(v) for v in values if type(v) is not dict and type(v) is not list)
        containers = False
        for item in values:
            kind = type(item)
            if kind is dict:
                containers = True
                if done and in_dict(item):
                    return True
            elif kind is list:
                containers = True
                if walk(item, done):
                    return True
        return not containers and done and empty_ok

    def match(value: Any) -> bool:
        kind = type(value)
        if kind is dict:
            return absent_ok and in_dict(value)
        if kind is list:
            if guarded and any(type(v) is dict or type(v) is list for v in value):
                raise Ambiguous
            done = not needs_leaf or (absent_ok and next(scalars(value), MISSING) is MISSING)
            return walk(value, done)
        if value is MISSING:
            return absent_ok and empty_ok
        return (not needs_leaf or (test is not None and test(value))) and empty_ok

    return match


class _Source:
    """Generated code for one sub-rule, and the constants it reads."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {"MISSING": MISSING, "RawPayload": RawPayload}

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def fast_matcher(
    rule: SubRule, steps: frozenset[str] | None = None, *, generated: bool = True
) -> Predicate:
    """A predicate deciding a record (a dict) for the sub-rule: one generated function,
    or the exact engine where that cannot be (see the module docstring); ``steps`` as for
    :func:`service.filters.exact.exact_matcher`. ``generated=False`` always interprets, for
    tests that compare the two."""
    exact = exact_matcher(rule, steps)
    if not generated or any(len(f.segments) > MAX_GENERATED_DEPTH for f in rule):
        return exact
    if any(not part for f in rule for part in f.segments):
        return exact
    try:
        return _generate(build_tree(rule), exact)
    except (SyntaxError, RecursionError, MemoryError, ValueError, OverflowError):
        return exact  # IndentationError is a SyntaxError


def _generate(root: Node, exact: Predicate) -> Predicate:
    src = _Source()
    slow = src.constant(exact)
    src.emit(1, "try:")
    _joined(src, 2, "r", root, slow)
    for key, child in root.children.items():
        var = _fetch(src, 2, "r", key)
        if key in PAYLOAD_KEYS:
            _payload_checks(src, 2, var, child)
        _node(src, 2, var, child, slow)
    src.emit(2, "return True")
    src.emit(1, f"except {src.constant(_DEFERRED)}:")  # exists: false under arrays, deep records
    src.emit(2, f"return {slow}(r)")
    params = ", ".join(f"{name}={name}" for name in src.constants)
    code = f"def match(r, {params}):\n" + "\n".join(src.lines) + "\n"
    namespace = dict(src.constants)
    exec(compile(code, "<esmd filter>", "exec"), namespace)
    match: Predicate = namespace["match"]
    match.__doc__ = code  # for whoever wonders what a pattern became
    return match


def _joined(src: _Source, depth: int, var: str, node: Node, slow: str) -> None:
    """Emit: a dict that spells several key parts as one key goes to the exact engine."""
    if node.joined:
        held = " or ".join(f"{src.constant(key)} in {var}" for key in sorted(node.joined))
        src.emit(depth, f"if {held}: return {slow}(r)")


def _fetch(src: _Source, depth: int, parent: str, key: str) -> str:
    var = f"v{len(src.lines)}"
    src.emit(depth, f"{var} = {parent}.get({src.constant(key)}, MISSING)")
    return var


def _payload_checks(src: _Source, depth: int, var: str, node: Node) -> None:
    if node.children:  # an object pattern never meets a payload that is not JSON
        src.emit(depth, f"if type({var}) is RawPayload: return False")
    if node.leaf is not None:  # a plain pattern never meets a JSON payload
        plain = f"{var} is not MISSING and {var} is not None and type({var}) is not RawPayload"
        src.emit(depth, f"if {plain}: return False")


def _node(src: _Source, depth: int, var: str, node: Node, slow: str) -> None:
    """Emit statements that return False unless the value in ``var`` meets ``node``."""
    fallback = src.constant(evaluator(node))
    if not node.children:
        assert node.leaf is not None
        _leaf(src, depth, var, node.leaf, fallback)
        return
    src.emit(depth, f"if type({var}) is dict:")
    if node.leaf is not None and not node.leaf.absent:
        src.emit(depth + 1, "return False")  # an object holds no value at its own key
        src.emit(depth, f"elif not {fallback}({var}): return False")
        return
    _joined(src, depth + 1, var, node, slow)
    for key, child in node.children.items():
        _node(src, depth + 1, _fetch(src, depth + 1, var, key), child, slow)
    src.emit(depth, f"elif not {fallback}({var}): return False")


def _leaf(src: _Source, depth: int, var: str, leaf: Leaf, fallback: str) -> None:
    kind = f"t{len(src.lines)}"
    strings, numbers = leaf.string_form(), leaf.number_form()
    if (strings is None or strings[0] == "none") and (numbers is None or numbers[0] == "none"):
        src.emit(depth, f"if not {fallback}({var}): return False")
        return
    src.emit(depth, f"{kind} = type({var})")
    keyword = "if"  # a "none" form is left to the fallback: no test spent on rare types
    if strings is not None and strings[0] != "none":
        src.emit(depth, f"if {kind} is str:")
        src.emit(depth + 1, _string_check(src, var, strings))
        keyword = "elif"
    if numbers is not None and numbers[0] != "none":
        guard = f"{kind} is int"
        if numbers[0] == "range" and not numbers[1].safe:  # big ints need event-ruler's check
            guard = f"({guard} and {-SAFE_INT} <= {var} <= {SAFE_INT})"
        src.emit(depth, f"{keyword} {kind} is float or {guard}:")
        src.emit(depth + 1, _number_check(src, var, numbers))
    src.emit(depth, f"elif not {fallback}({var}): return False")


def _string_check(src: _Source, var: str, form: tuple[str, Any]) -> str:
    how, arg = form
    if how == "set":
        return f"if {var} not in {src.constant(arg)}: return False"
    method = "startswith" if how == "prefix" else "endswith"
    return f"if not {var}.{method}({src.constant(arg)}): return False"


def _number_check(src: _Source, var: str, form: tuple[str, Any]) -> str:
    how, arg = form
    if how == "set":
        return f"if {var} not in {src.constant(arg)}: return False"
    low = "<" if arg.low_open else "<="
    high = "<" if arg.high_open else "<="
    bounds = f"{src.constant(arg.low)} {low} {var} {high} {src.constant(arg.high)}"
    return f"if not ({bounds}): return False"
