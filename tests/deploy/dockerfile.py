"""A small reader of the project's Dockerfile and .dockerignore, enough for the tests to run
the image's own commands outside Docker and to check what the build context holds."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str  # the rest of the instruction, continuation lines joined
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of CMD/ENTRYPOINT/RUN, or None for the shell form."""
        text = self.args.strip()
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            return value
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}"
        return found[0]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs, in order (later wins), quotes removed, nothing expanded."""
        out: dict[str, str] = {}
        for inst in self.all("ENV"):
            for token in shlex.split(inst.args):
                key, sep, value = token.partition("=")
                assert sep, f"line {inst.line}: use ENV key=value"
                out[key] = value
        return out


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, args = whole.partition(" ")
        inst = Instruction(keyword.upper(), args.strip(), start)
        if inst.keyword == "FROM":
            parts = inst.args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        else:
            assert stages, f"line {start}: {inst.keyword} before FROM"
            stages[-1].instructions.append(inst)
    return stages


def copy_parts(inst: Instruction) -> tuple[dict[str, str], list[str], str]:
    """A COPY's --flags, sources and destination."""
    tokens = shlex.split(inst.args)
    flags = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, tokens[:-1], tokens[-1]


class DockerIgnore:
    """.dockerignore matching: a path is left out when the last pattern that matches it, or
    one of its parent folders, is not a ``!`` exception."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((keep, re.sub(r"^\./", "", pattern)))

    def excluded(self, path: str) -> bool:
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        out = False
        for keep, pattern in self.rules:
            if any(_match(p, pattern) for p in prefixes):
                out = not keep
        return out


def _match(path: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        return _match(path, pattern[3:]) or any(
            _match("/".join(path.split("/")[i:]), pattern[3:])
            for i in range(1, path.count("/") + 1)
        )
    return path.count("/") == pattern.count("/") and fnmatch.fnmatchcase(path, pattern)
