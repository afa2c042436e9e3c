"""Instructions per record of esmd's Kafka hot path, counted by callgrind: immune to load.

The hot path without broker or network: aiokafka records of 1 KB JSON, decoded and filtered
by the Kafka codec, batched by a BatchBuilder, made into events (as a lane does), under the
garbage-collector settings `esmd run` applies. Timing is useless on a busy shared machine;
callgrind counts the instructions executed, so two checkouts compare exactly. Each count is
the difference of a run with N records and one with none, less the cost of making the
records, divided by N.

    python benchmarks/kafka_hot_path.py                       # this checkout
    python benchmarks/kafka_hot_path.py --checkout /tmp/old   # another, e.g. before a change
    python benchmarks/kafka_hot_path.py --peer-filter         # peer_benthos.py's filter

The default filter keeps every record; ``--peer-filter`` uses benchmarks/peer_benthos.py's,
which keeps every other one (``status``), as that benchmark's records are.

Needs valgrind. One measurement takes a minute or two (Python under callgrind is slow).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERN = '{"value": {"type": ["order"], "amount": [{"numeric": [">=", 0]}]}}'
#: benchmarks/peer_benthos.py's filter (not imported: its module needs the Benthos build)
PEER_PATTERN = '{"value": {"status": ["COMPLETED"], "amount": [{"numeric": [">=", 0]}]}}'


def workload(n: int, process: bool, peer: bool = False) -> int:
    """Make ``n`` records in chunks of 2,000; with ``process``, run them through the path.
    ``peer``: peer_benthos.py's filter, and records half of which it keeps."""
    import orjson
    from aiokafka.structs import ConsumerRecord

    from service.batching import BatchBuilder
    from service.filters import FilterCriteria
    from service.sources.kafka import KafkaCodec

    try:  # absent from checkouts before it existed
        from service.gctune import tune_for_throughput

        tune_for_throughput()
    except ImportError:
        pass
    pattern = PEER_PATTERN if peer else PATTERN
    criteria = FilterCriteria.parse({"Filters": [{"Pattern": pattern}]})
    codec = KafkaCodec({"eventSource": "SelfManagedKafka", "bootstrapServers": "b"}, "t", 0)
    builder = BatchBuilder(1000, 0, codec.envelope_bytes)
    delivered = 0

    def record(i: int) -> ConsumerRecord[bytes, bytes]:
        body: dict[str, object] = {"id": i, "type": "order", "amount": i % 1000}
        if peer:
            body["status"] = "COMPLETED" if i % 2 else "PENDING"
        value = orjson.dumps({**body, "pad": "x" * (960 - 20 * peer)})
        return ConsumerRecord("t", 0, i, 1_700_000_000_000 + i, 0, None, value, None, -1, 1024, ())

    for start in range(0, n, 2000):
        raws = [record(i) for i in range(start, min(n, start + 2000))]
        if not process:
            continue
        kept, _, _ = codec.decode(raws, criteria)
        i = 0
        while i < len(kept):
            i = builder.fill(kept, i, len(kept))
            if builder.full:
                event = codec.make_event(builder.flush("size").records)
                delivered += sum(len(records) for records in event["records"].values())
    return delivered


def instructions(checkout: Path, n: int, process: bool, peer: bool) -> int:
    """Instructions callgrind counts for one run of :func:`workload` in ``checkout``."""
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, __file__, "--run", str(n), "--process" if process else "--no-process",
        *(["--peer-filter"] if peer else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{proc.stderr}")
    return int(found.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkout", type=Path, default=ROOT, help="the esmd checkout to measure")
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--peer-filter", action="store_true", help="peer_benthos.py's filter")
    p.add_argument("--run", type=int, help=argparse.SUPPRESS)  # inside callgrind
    p.add_argument("--process", action=argparse.BooleanOptionalAction, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.run is not None:
        sys.path.insert(0, os.environ["PYTHONPATH"])
        workload(args.run, args.process, args.peer_filter)
        return
    n, peer = args.records, args.peer_filter
    empty = instructions(args.checkout, 0, True, peer)
    made = instructions(args.checkout, n, False, peer) - instructions(args.checkout, 0, False, peer)
    total = instructions(args.checkout, n, True, peer) - empty
    print(f"{args.checkout}: {(total - made) / n:,.0f} instructions per record")


if __name__ == "__main__":
    main()
