"""``esmd test-filter``: which records a mapping's FilterCriteria keeps, and by which filter.

Each sample goes through the mapping's own lane codec (:mod:`service.ops.samples`) with the
whole FilterCriteria (kept or filtered out, exactly as the running mapping decides) and with
each filter alone (which ones matched). Lambda has no such test for ESM filters; a wrong
filter silently deletes SQS messages.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from service.config import MappingConfig
from service.filters import FilterCriteria
from service.ops.samples import SampleError, Samples


@dataclass(frozen=True)
class Verdict:
    where: str  # "line 3" or the source position
    record: str  # the sample's label: topic-partition@offset, messageId, eventID
    kept: bool
    matched: list[int] = field(default_factory=list)  # indexes of the filters that match


class FilterCheck:
    """The mapping's filters, compiled once as a whole and one by one."""

    def __init__(self, cfg: MappingConfig, samples: Samples) -> None:
        criteria = cfg.FilterCriteria.model_dump() if cfg.FilterCriteria else {}
        self.patterns: list[str] = [f["Pattern"] for f in criteria.get("Filters") or []]
        self._whole = FilterCriteria.parse(criteria)
        self._each = [FilterCriteria.parse({"Filters": [{"Pattern": p}]}) for p in self.patterns]
        self._samples = samples

    def verdict(self, where: str, raw: Any) -> Verdict:
        s = self._samples
        kept = s.decide(raw, self._whole)
        matched = [i for i, one in enumerate(self._each) if s.decide(raw, one)]
        return Verdict(where, s.label(raw), kept, matched)


def read_lines(lines: Iterable[str], samples: Samples) -> Iterator[tuple[str, Any]]:
    """(``line N``, raw record) per non-blank line; SampleError names the bad line."""
    index = 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = orjson.loads(text)
            if not isinstance(line, dict):
                raise SampleError("not a JSON object")
            raw = samples.parse(line, index)
        except orjson.JSONDecodeError as exc:
            raise SampleError(f"line {number}: not JSON: {exc}") from None
        except SampleError as exc:
            raise SampleError(f"line {number}: {exc}") from None
        index += 1
        yield f"line {number}", raw


def render(verdicts: list[Verdict], patterns: list[str], out: TextIO | None = None) -> None:
    """One line per record, then a count."""
    out = out or sys.stdout
    width = max((len(v.record) for v in verdicts), default=0)
    for v in verdicts:
        decision = "KEPT        " if v.kept else "FILTERED OUT"
        if not patterns:
            why = "no FilterCriteria: every record is kept"
        elif v.matched:
            why = "; ".join(f"filter {i}: {patterns[i]}" for i in v.matched)
        else:
            why = "no filter matched"
        out.write(f"{v.where:<9} {v.record:<{width}}  {decision}  {why}\n")
    kept = sum(v.kept for v in verdicts)
    out.write(
        f"{len(verdicts)} record(s): {kept} kept, {len(verdicts) - kept} filtered out "
        f"({len(patterns)} filter(s))\n"
    )


def render_json(verdicts: list[Verdict], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for v in verdicts:
        out.write(
            orjson.dumps(
                {"where": v.where, "record": v.record, "kept": v.kept, "matched": v.matched}
            ).decode()
            + "\n"
        )
