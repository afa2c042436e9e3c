"""Filter decisions per second on one core: esmd against LocalStack's engine and event-ruler.

    python benchmarks/filters.py [--records N] [--quick]

One 3-field pattern (exact + prefix + numeric range) on Kafka-style filter views. Prints
records/s on already-decoded records, and records/s including the orjson decoding of ~1 KB
JSON payloads (what a poller does per record), for:

- esmd (``FilterCriteria``, compiled once);
- LocalStack's pure-Python engine (PyPI ``localstack-core``,
  ``localstack.services.events.event_rule_engine``), if installed;
- AWS's event-ruler in its JVM (tests/filters_differential), if java, javac and mvn are
  present: its own timing of ``rulesForJSONEvent`` on parsed events and on JSON text,
  measured in the same run after JIT warm-up.

Targets (issue 3): >= 1,000,000 decisions/s decoded, >= 300,000 records/s with decoding,
and at least 10x LocalStack's engine.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.filters import FilterCriteria, parse_payload

PATTERN = {
    "value": {
        "status": ["COMPLETED"],
        "customer": [{"prefix": "c-1"}],
        "amount": [{"numeric": [">", 100, "<=", 900]}],
    }
}
TARGET_DECODED = 1_000_000
TARGET_WITH_DECODING = 300_000
TARGET_VS_LOCALSTACK = 10


def payloads(count: int) -> list[bytes]:
    """~1 KB JSON payloads; about one in twenty matches PATTERN."""
    out = []
    for i in range(count):
        body: dict[str, Any] = {
            "id": i,
            "status": "COMPLETED" if i % 2 else "PENDING",
            "amount": i % 1000,
            "customer": f"c-{i % 97}",
            "items": [{"sku": f"s{j}", "q": j} for j in range(3)],
        }
        body["pad"] = "x" * max(0, 1024 - len(orjson.dumps(body)) - 10)
        out.append(orjson.dumps(body))
    return out


def rate(decide: Callable[[Any], bool], items: list[Any], rounds: int) -> tuple[float, int]:
    """The best items/s over ``rounds`` passes, and how many items matched."""
    best, hits = float("inf"), 0
    gc.collect()
    for _ in range(rounds):
        started = time.perf_counter()
        hits = sum(1 for item in items if decide(item))
        best = min(best, time.perf_counter() - started)
    return len(items) / best, hits


def measure_esmd(raws: list[bytes], rounds: int) -> dict[str, float]:
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": orjson.dumps(PATTERN).decode()}]})
    match = criteria.matcher
    decoded = [{"value": orjson.loads(raw)} for raw in raws]
    fast, hits = rate(match, decoded, rounds)
    with_decoding, hits_raw = rate(lambda raw: match({"value": parse_payload(raw)}), raws, rounds)
    assert hits == hits_raw
    return {"decoded": fast, "raw": with_decoding, "hits": hits, "records": len(raws)}


def measure_localstack(raws: list[bytes], rounds: int) -> dict[str, float] | str:
    try:
        from localstack.services.events.event_rule_engine import (
            EventPatternCompiler,
            EventRuleEngine,
        )
    except ImportError:
        return "not installed (pip install localstack-core)"
    compiled = EventPatternCompiler().compile_event_pattern(event_pattern=PATTERN)
    engine = EventRuleEngine()

    def decide(view: dict[str, Any]) -> bool:
        return bool(engine.evaluate_pattern_on_event(compiled_event_pattern=compiled, event=view))

    decoded = [{"value": orjson.loads(raw)} for raw in raws]
    fast, hits = rate(decide, decoded, rounds)
    with_decoding, _ = rate(lambda raw: decide({"value": orjson.loads(raw)}), raws, rounds)
    return {"decoded": fast, "raw": with_decoding, "hits": hits, "records": len(raws)}


def measure_event_ruler(raws: list[bytes], seconds: float) -> dict[str, float] | str:
    from tests.filters_differential.ruler import Ruler, tools_present

    if not tools_present():
        return "not available (needs java, javac and mvn)"
    events = [b'{"value":' + raw + b"}" for raw in raws]
    with Ruler() as ruler:
        result = ruler.bench(orjson.dumps(PATTERN).decode(), [e.decode() for e in events], seconds)
    return {**result, "records": len(raws)}


def report(
    results: dict[str, dict[str, float] | str], records: int, expected: Callable[[int], int]
) -> list[str]:
    """The table; ``expected(n)`` is esmd's match count on the first n records."""
    esmd = results["esmd"]
    assert isinstance(esmd, dict)
    lines = [
        f"pattern: {orjson.dumps(PATTERN).decode()}",
        f"records: {records} (~1 KB JSON payloads), {esmd['hits']:.0f} match",
        "",
        f"{'engine':<22}{'decoded rec/s':>16}{'esmd is':>10}{'with decoding':>16}{'esmd is':>10}",
    ]
    for name, result in results.items():
        if isinstance(result, str):
            lines.append(f"{name:<22}{result}")
            continue
        if result["hits"] != expected(int(result["records"])):
            lines.append(f"{name:<22}DISAGREES with esmd: {result['hits']:.0f} matches")
        ratio_decoded = esmd["decoded"] / result["decoded"]
        ratio_raw = esmd["raw"] / result["raw"]
        lines.append(
            f"{name:<22}{result['decoded']:>16,.0f}{ratio_decoded:>9.1f}x"
            f"{result['raw']:>16,.0f}{ratio_raw:>9.1f}x"
        )
    return lines


def verdicts(results: dict[str, dict[str, float] | str]) -> list[str]:
    esmd = results["esmd"]
    assert isinstance(esmd, dict)
    checks = [
        (f"decoded >= {TARGET_DECODED:,}/s", esmd["decoded"] >= TARGET_DECODED),
        (f"with decoding >= {TARGET_WITH_DECODING:,}/s", esmd["raw"] >= TARGET_WITH_DECODING),
    ]
    local = results.get("LocalStack (Python)")
    if isinstance(local, dict):
        ratio = esmd["decoded"] / local["decoded"]
        checks.append((f">= {TARGET_VS_LOCALSTACK}x LocalStack", ratio >= TARGET_VS_LOCALSTACK))
    return [f"target {name}: {'met' if ok else 'MISSED'}" for name, ok in checks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter JVM timing")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    raws = payloads(args.records)
    results: dict[str, dict[str, float] | str] = {"esmd": measure_esmd(raws, rounds)}
    # LocalStack is two orders slower: a tenth of the records keeps its run short.
    tenth = raws[: len(raws) // 10]
    results["LocalStack (Python)"] = measure_localstack(tenth, max(2, rounds // 2))
    results["event-ruler (Java)"] = measure_event_ruler(raws, 1.0 if args.quick else 3.0)
    match = FilterCriteria.parse({"Filters": [{"Pattern": orjson.dumps(PATTERN).decode()}]}).matcher

    def expected(count: int) -> int:
        return sum(1 for raw in raws[:count] if match({"value": orjson.loads(raw)}))

    print("\n".join([*report(results, len(raws), expected), "", *verdicts(results)]))


if __name__ == "__main__":
    main()
