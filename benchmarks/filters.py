"""Filter decisions per second on one core: esmd's compiled FilterCriteria.

Prints records/s for a 3-field pattern (exact + prefix + numeric) on already-decoded records,
and records/s including the JSON decoding of ~1 KB records (as a poller does it), with a
naive reference (the same pattern written as plain dict code) measured in the same run.

    python benchmarks/filters.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.filters import FilterCriteria, parse_payload

PATTERN = (
    '{"value": {"status": ["COMPLETED"], "customer": [{"prefix": "c-1"}], '
    '"amount": [{"numeric": [">", 100, "<=", 900]}]}}'
)


def records(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = {
            "id": i,
            "status": "COMPLETED" if i % 2 else "PENDING",
            "amount": i % 1000,
            "customer": f"c-{i % 97}",
            "items": [{"sku": f"s{j}", "q": j} for j in range(3)],
        }
        raw = orjson.dumps(body)
        body["pad"] = "x" * max(0, 1024 - len(raw) - 10)
        out.append(orjson.dumps(body))
    return out


def handwritten(view: dict[str, Any]) -> bool:
    """What a person would write for PATTERN: the floor any engine competes with."""
    v = view.get("value")
    if type(v) is not dict:
        return False
    a = v.get("amount")
    c = v.get("customer")
    return (
        v.get("status") == "COMPLETED"
        and isinstance(c, str)
        and c.startswith("c-1")
        and type(a) in (int, float)
        and 100 < a <= 900
    )


def rate(fn: Callable[[Any], bool], items: list[Any], rounds: int = 5) -> tuple[float, int]:
    best = float("inf")
    hits = 0
    for _ in range(rounds):
        started = time.perf_counter()
        hits = sum(1 for item in items if fn(item))
        best = min(best, time.perf_counter() - started)
    return len(items) / best, hits


def main() -> None:
    raw = records(200_000)
    decoded = [{"value": orjson.loads(r)} for r in raw]
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": PATTERN}]})
    match = criteria.matcher

    esmd_decoded, hits = rate(match, decoded)
    hand_decoded, hand_hits = rate(handwritten, decoded)
    assert hits == hand_hits, (hits, hand_hits)
    esmd_raw, _ = rate(lambda r: match({"value": parse_payload(r)}), raw)
    hand_raw, _ = rate(lambda r: handwritten({"value": orjson.loads(r)}), raw)
    print(f"pattern: {PATTERN}  ({hits} of {len(raw)} records match)")
    print(f"{'':34}{'records/s':>14}{'vs hand-written':>18}")
    print(f"{'esmd, decoded records':34}{esmd_decoded:14,.0f}{esmd_decoded / hand_decoded:17.2f}x")
    print(f"{'hand-written, decoded records':34}{hand_decoded:14,.0f}{1:17.2f}x")
    print(f"{'esmd, with JSON decoding (1 KB)':34}{esmd_raw:14,.0f}{esmd_raw / hand_raw:17.2f}x")
    print(f"{'hand-written, with JSON decoding':34}{hand_raw:14,.0f}{1:17.2f}x")
    print("targets: >= 1,000,000 decisions/s decoded, >= 300,000 records/s with decoding")


if __name__ == "__main__":
    main()
