"""EventBridge's limit on wildcard patterns: "Rule is too complex".

EventBridge refuses a pattern whose wildcards could make its matcher slow. It measures that
as event-ruler's README shows a service doing it: the sub-rules that hold a ``wildcard`` or
an ``anything-but`` ``wildcard`` go into one machine, ``MachineComplexityEvaluator`` gives
the machine's complexity, and a pattern above the limit is refused.

The complexity of one field's byte machine is the most *wildcard rule prefixes* a single
input keeps alive at once. The machine reads a value's JSON text byte by byte (a string
with its quotes), and after each byte a wildcard pattern may be alive at several of its
positions: ``"*a*a*"`` after the input ``"aa`` is alive after its first ``*``, its first
``a``, its second ``*``, its second ``a`` and its third ``*``. The evaluator counts, over
the machine states the input is in, the wildcard patterns each state leads to. States for
the *determinate* prefix of a pattern (up to its first ``*``) are shared by the patterns
that have it (such a state counts each pattern through it once); past a ``*`` each pattern
has states of its own, counted once each. The complexity of the pattern is that of its
most complex field machine; sub-rules share a field's machine when event-ruler's NameState
reuse puts them at one NameState (see :func:`_machines`).

event-ruler finds the maximum by visiting every set of states an input can reach, which
grows exponentially (20 patterns like ``*ab*`` exhaust a gigabyte of heap). esmd computes
the same maximum directly (:func:`machine_complexity`), and tests/filters_differential
compares it with event-ruler 2.1.0's evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Final

from service.filters.core import InvalidPatternError
from service.filters.grammar import SubRule
from service.filters.text import wildcard_parts

#: The most wildcard complexity EventBridge accepts in a pattern (docs/filters.md)
MAX_COMPLEXITY: Final = 100

_STAR: Final = -1
_ABSENT: Final = ("{", (("exists", ("=", False)),))  # grammar._identity of exists: false
Tokens = tuple[int, ...]  # a wildcard's JSON text as bytes, _STAR for each "*"


def check(rules: list[SubRule]) -> None:
    """Refuse a pattern whose wildcard complexity is above :data:`MAX_COMPLEXITY`."""
    worst = complexity(rules)
    if worst > MAX_COMPLEXITY:
        raise InvalidPatternError(
            "Rule is too complex - try using fewer wildcard characters or fewer repeating"
            " character sequences after a wildcard character (its wildcard complexity is"
            f" {worst}, above the limit of {MAX_COMPLEXITY})"
        )


def complexity(rules: list[SubRule]) -> int:
    """The pattern's wildcard complexity as event-ruler's evaluator has it (uncapped)."""
    return max((machine_complexity(m) for m in _machines(rules)), default=0)


def tokens(text: str) -> Tokens:
    """The bytes a wildcard's string value is matched by, as event-ruler parses it: the
    quotes, the UTF-8 bytes of each literal part, a star between the parts."""
    out: list[int] = [ord('"')]
    for i, part in enumerate(wildcard_parts(text)):
        if i:
            out.append(_STAR)
        out.extend(part.encode("utf-8", "surrogatepass"))
    out.append(ord('"'))
    return tuple(out)


def java_set_order(values: tuple[str, ...]) -> list[str]:
    """The order in which a Java ``HashSet<String>`` of these values lists them: by hash
    bucket (``String.hashCode``, spread as ``HashMap.hash``, over a table that doubles
    from 16 past three quarters full), then in the order they were added."""
    unique = list(dict.fromkeys(values))
    capacity = 16
    while len(unique) > capacity * 3 // 4:
        capacity *= 2

    def bucket(value: str) -> int:
        h = 0
        data = value.encode("utf-16-be", "surrogatepass")
        for at in range(0, len(data), 2):
            h = (31 * h + int.from_bytes(data[at : at + 2], "big")) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & (capacity - 1)

    return sorted(unique, key=bucket)


class _FieldMachine:
    """One field's ByteMachine at one NameState, as far as wildcard complexity needs it.

    Its states are simulated as ``ByteMachine.addMatchValue`` builds them for wildcards: a
    value reuses the states of the values added before it as far as it may, then has
    states of its own. It may reuse every state up to its first ``*`` and each ``*``; past
    a ``*`` it may not step into a state on a byte that starts a character when the state
    it steps from also goes on with a ``*``, or when the character has an upper and a lower
    case (``canReuseNextByteState``). So a wildcard added again can get states, a match and
    a next NameState of its own. States are kept by their token prefix (``"*a``, ``"*a*``);
    a prefix's *weight* sums, over its states, the distinct conditions through each; a
    value's end is a match, and live matches equal as ``ByteMatch`` (condition and next
    NameState) count once.
    """

    def __init__(self) -> None:
        self.toks: list[Tokens] = []  # every value added, in order
        self.paths: list[list[int]] = []  # value, tokens consumed -> prefix
        self.children: list[dict[int, int]] = [{}]  # the prefixes, as a trie
        self.values: dict[Hashable, int] = {}  # conditions other than wildcards -> NameState
        # event-ruler's states: prefix, star children, byte children, conditions through
        self.prefix_of: list[int] = [0]
        self.stars: list[list[int]] = [[]]
        self.bytes: list[dict[int, list[int]]] = [{}]
        self.through: list[set[Hashable]] = [set()]
        self.matches: dict[tuple[int, Hashable], int] = {}  # (state, condition) -> NameState
        self.match_keys: dict[int, set[tuple[Hashable, int]]] = {}  # prefix -> its matches
        self.weight: list[int] = []

    def add_value(self, condition: Hashable, candidate: int | None, new: Callable[[], int]) -> int:
        if condition not in self.values:
            self.values[condition] = new() if candidate is None else candidate
        return self.values[condition]

    def add_wildcard(
        self,
        condition: Hashable,
        texts: tuple[str, ...],
        candidate: int | None,
        new: Callable[[], int],
    ) -> int:
        for text in java_set_order(texts):
            candidate = self._add(condition, tokens(text), candidate, new)
        assert candidate is not None
        return candidate

    def _state(self, prefix: int) -> int:
        self.prefix_of.append(prefix)
        self.stars.append([])
        self.bytes.append({})
        self.through.append(set())
        return len(self.prefix_of) - 1

    def _add(
        self, condition: Hashable, toks: Tokens, candidate: int | None, new: Callable[[], int]
    ) -> int:
        node, path = 0, [0]
        for token in toks:
            if token not in self.children[node]:
                self.children[node][token] = len(self.children)
                self.children.append({})
            node = self.children[node][token]
            path.append(node)
        self.toks.append(toks)
        self.paths.append(path)
        first = toks.index(_STAR) if _STAR in toks else len(toks)
        state, shared = 0, True
        for p, token in enumerate(toks[:-1]):  # the last token (the quote) leads to a match
            reuse: list[int] = []
            if shared:
                if token == _STAR:
                    reuse = self.stars[state][:1]
                elif p < first or not _blocked(toks, p, self._goes_on_with_star(state, toks, p)):
                    reuse = self.bytes[state].get(token, [])[:1]
                shared = bool(reuse)
            if shared:
                state = reuse[0]
            else:
                made = self._state(path[p + 1])
                if token == _STAR:
                    self.stars[state].append(made)
                else:
                    self.bytes[state].setdefault(token, []).append(made)
                state = made
            self.through[state].add(condition)
        key = (state, condition)
        if key not in self.matches:
            self.matches[key] = new() if candidate is None else candidate
            self.match_keys.setdefault(path[-1], set()).add((condition, self.matches[key]))
        return self.matches[key]

    def _goes_on_with_star(self, state: int, toks: Tokens, p: int) -> bool:
        """The state has a ``*`` transition to another state (a star's own loop aside)."""
        return bool(self.stars[state]) and not (p > 0 and toks[p - 1] == _STAR)

    def settle(self) -> _FieldMachine:
        self.weight = [0] * len(self.children)
        for state in range(1, len(self.prefix_of)):
            self.weight[self.prefix_of[state]] += len(self.through[state])
        return self

    def is_match(self, node: int) -> bool:
        return not self.children[node]

    def count(self, nodes: set[int]) -> int:
        matches: set[tuple[Hashable, int]] = set()
        alive = 0
        for node in nodes:
            if self.is_match(node):
                matches |= self.match_keys.get(node, set())
            else:
                alive += self.weight[node]
        return alive + len(matches)


def _blocked(toks: Tokens, p: int, goes_on_with_star: bool) -> bool:
    """``ByteMachine.doMultipleTransitionsConvergeForInputByte`` for the byte at p."""
    if 0x80 <= toks[p] <= 0xBF:  # inside a character
        return False
    if goes_on_with_star:
        return True
    char = bytearray()
    for token in toks[p : p + 3]:
        if token == _STAR or (char and not 0x80 <= token <= 0xBF):
            break
        char.append(token)
    text = char.decode("utf-8", "replace")
    return text.lower() != text.upper()


def _machines(rules: list[SubRule]) -> list[_FieldMachine]:
    """The field machines of the event-ruler machine holding the pattern's wildcard
    sub-rules, each with its wildcards added as event-ruler adds them.

    ``GenericMachine.addStep`` walks a sub-rule's fields in order from the start NameState;
    each condition of a field leads from the field's machine to a next NameState: the one
    the machine already has for the condition, else the one the field's previous condition
    led to, else a new one. Sub-rules meet at a NameState, and share the machine of the
    field that follows, when they agree so far.
    """
    count = [0]

    def new() -> int:
        count[0] += 1
        return count[0]

    machines: dict[tuple[int, str], _FieldMachine] = {}
    absent: dict[tuple[int, str], int] = {}  # exists: false (a NameMatcher, not a machine)
    todo = [(0, rule, 0) for rule in rules if any(f.leaf.wildcards for f in rule)]
    todo.reverse()
    while todo:
        state, rule, at = todo.pop()
        name, leaf = rule[at].name, rule[at].leaf
        machine = machines.setdefault((state, name), _FieldMachine())
        wild = dict(leaf.wildcards)
        reached: dict[int, None] = {}
        last: int | None = None
        for condition in leaf.conditions:
            if condition == _ABSENT:
                last = absent.setdefault((state, name), new() if last is None else last)
            elif condition in wild:
                last = machine.add_wildcard(condition, wild[condition], last, new)
            else:
                last = machine.add_value(condition, last, new)
            reached[last] = None
        if at + 1 < len(rule):
            todo.extend((below, rule, at + 1) for below in reversed(reached))
    return [m.settle() for m in machines.values() if m.toks]


def machine_complexity(machine: _FieldMachine) -> int:
    """The most wildcard rule prefixes an input keeps alive at once in one field machine.

    An input either still spells the beginning of some patterns' determinate prefixes (a
    path in their shared trie: those few inputs are simulated one by one), or it has left
    them all. Then no determinate state is alive, and the patterns alive are those whose
    determinate prefix the input began with, *activated* by it. Every ``*`` of an activated
    pattern can be kept alive at once (a star's state loops on any byte, so feeding each
    pattern's literal parts in turn reaches all of them), so the most is: all their stars,
    plus the most states inside literal parts that one input can end on, that is, whose
    literal text is a suffix of the input (an Aho-Corasick count over the literal parts).
    """
    firsts = [t.index(_STAR) if _STAR in t else len(t) for t in machine.toks]
    return max(_determinate_most(machine, firsts), _activated_most(machine, firsts))


def _determinate_most(trie: _FieldMachine, firsts: list[int]) -> int:
    """The most alive while the input spells a determinate prefix."""
    toks = trie.toks

    def closure(live: set[tuple[int, int]]) -> set[tuple[int, int]]:
        return live | {(i, p + 1) for i, p in live if p < len(toks[i]) and toks[i][p] == _STAR}

    children: list[dict[int, int]] = [{}]  # the trie of determinate prefixes
    for i, t in enumerate(toks):
        node = 0
        for byte in t[: firsts[i]]:
            if byte not in children[node]:
                children[node][byte] = len(children)
                children.append({})
            node = children[node][byte]
    most = 0
    todo = [(0, {(i, 0) for i in range(len(toks))})]
    while todo:
        node, live = todo.pop()
        for byte, child in children[node].items():
            after = {(i, p) for i, p in live if p and toks[i][p - 1] == _STAR}
            after |= {(i, p + 1) for i, p in live if p < len(toks[i]) and toks[i][p] == byte}
            after = closure(after)
            most = max(most, trie.count({trie.paths[i][p] for i, p in after}))
            todo.append((child, after))
    return most


def _activated_most(trie: _FieldMachine, firsts: list[int]) -> int:
    """The most alive once the input has left the determinate prefixes (see
    :func:`machine_complexity`), over each way of activating patterns."""
    toks = trie.toks
    starred = [i for i, t in enumerate(toks) if firsts[i] < len(t)]
    most = 0
    for d in {toks[i][: firsts[i]] for i in starred}:
        active = [i for i in starred if d[: firsts[i]] == toks[i][: firsts[i]]]
        stars = {
            trie.paths[i][p]
            for i in active
            for p in range(1, len(toks[i]) + 1)
            if toks[i][p - 1] == _STAR
        }
        texts = _Texts()  # the literal parts, and the states each prefix of one leads to
        for i in active:
            at = 0
            for p in range(firsts[i] + 1, len(toks[i])):
                at = 0 if toks[i][p] == _STAR else texts.step(at, toks[i][p])
                if at:
                    texts.ends[at].add(trie.paths[i][p + 1])
        alive = sum(trie.weight[node] for node in stars)
        most = max(most, alive + texts.most_alive(trie))
    return most


class _Texts:
    """A trie of literal texts, each node with the machine states its text leads to."""

    def __init__(self) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.ends: list[set[int]] = [set()]

    def step(self, node: int, byte: int) -> int:
        if byte not in self.children[node]:
            self.children[node][byte] = len(self.children)
            self.children.append({})
            self.ends.append(set())
        return self.children[node][byte]

    def most_alive(self, trie: _FieldMachine) -> int:
        """The most states alive at once: over strings s, those whose text is a suffix of
        s (Aho-Corasick: a text's states, and those of its failure link, its longest proper
        suffix among the texts). States differ from text to text, so their counts add up;
        matches count once per condition."""
        children = self.children
        fail = [0] * len(children)
        alive = [0] * len(children)
        matches: list[frozenset[tuple[Hashable, int]]] = [frozenset()] * len(children)
        for node, states in enumerate(self.ends):
            for state in states:
                if trie.is_match(state):
                    matches[node] |= trie.match_keys.get(state, set())
                else:
                    alive[node] += trie.weight[state]
        queue = list(children[0].values())
        most = 0
        for node in queue:  # breadth first: a node's failure link is settled before it
            alive[node] += alive[fail[node]]
            if matches[fail[node]]:
                matches[node] |= matches[fail[node]]
            most = max(most, alive[node] + len(matches[node]))
            for byte, child in children[node].items():
                link = fail[node]
                while link and byte not in children[link]:
                    link = fail[link]
                fail[child] = children[link].get(byte, 0)
                queue.append(child)
        return most
