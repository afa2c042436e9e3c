"""esmd against a peer a user could pick: Benthos v4.27.0, Kafka -> filter -> HTTP.

Both read the same topic from its start (each in its own consumer group), apply the same
filter (esmd: FilterCriteria on the decoded JSON value; Benthos: the same test in Bloblang,
deleting what fails it; half the records pass), batch per partition so that each POST
carries the same number of kept records, keep as many records in flight per partition
(esmd's lane queue, Benthos's checkpoint_limit), and POST each batch to the same counting
sink (benchmarks/counting_sink.py, its own process). Benthos's output may have 64 batches in
flight (its default), esmd one per partition (Lambda's order per partition).
esmd posts Lambda's Kafka event (base64 values, as its http target always does); Benthos
posts a JSON array of the batch's messages.

Throughput is measured at the sink, from the moment 10% of the kept records arrived to the
moment 90% had, so start-up, group join and the last partial batches do not count; it is
given as topic records (kept and filtered) per second and topic MB/s. The runs alternate
(esmd, Benthos, esmd, ...) in one invocation, so both see the same machine load; the table
shows medians and the ratio.

Benthos is built on first use (benchmarks/benthos_build.py, about two minutes).

    python benchmarks/peer_benthos.py --records 200000
    python benchmarks/peer_benthos.py --baseline /tmp/esmd-before   # an older checkout beside
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.benthos_build import VERSION, benthos_binary
from benchmarks.kafka_throughput import prepare
from service.cli import run_async

ROOT = Path(__file__).resolve().parents[1]
#: the filter, twice: every other record is kept (status), and the numeric test is read too
PATTERN = '{"value": {"status": ["COMPLETED"], "amount": [{"numeric": [">=", 0]}]}}'
BLOBLANG = 'root = if !(this.status == "COMPLETED" && this.amount >= 0) { deleted() }'


def kept_by_filter(i: int) -> bool:
    """Whether record ``i`` of benchmarks.kafka_throughput.record passes the filter."""
    return i % 2 == 1


KEPT_FRACTION = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def esmd_config(args: argparse.Namespace, topic: str, sink: str) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{free_port()}", "workers": args.workers},
        "functions": {"sink": {"url": sink}},
        "mappings": [
            {
                "Name": "peer",
                "SelfManagedEventSource": {
                    "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [args.bootstrap]}
                },
                "Topics": [topic],
                "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": f"peer-{uuid.uuid4()}"},
                "StartingPosition": "TRIM_HORIZON",
                "FunctionName": "sink",
                "BatchSize": args.batch_size,
                "MaximumBatchingWindowInSeconds": 0,
                "FilterCriteria": {"Filters": [{"Pattern": PATTERN}]},
            }
        ],
    }


def benthos_config(args: argparse.Namespace, topic: str, sink: str) -> dict[str, Any]:
    return {
        "http": {"enabled": False},
        "logger": {"level": "WARN"},
        "metrics": {"none": {}},
        "input": {
            "kafka_franz": {
                "seed_brokers": [args.bootstrap],
                "topics": [topic],
                "consumer_group": f"peer-{uuid.uuid4()}",
                "start_from_oldest": True,
                # records in flight per partition: esmd's lane holds up to this many too
                "checkpoint_limit": max(10_000, 4 * args.batch_size),
                # per partition, as esmd's lanes batch; Benthos counts a batch before the
                # filter, esmd after it: this many read make batch_size kept, so both POST
                # batches of the same size
                "batching": {"count": round(args.batch_size / KEPT_FRACTION), "period": "100ms"},
            }
        },
        "pipeline": {"processors": [{"mutation": BLOBLANG}, {"archive": {"format": "json_array"}}]},
        "output": {"http_client": {"url": sink, "verb": "POST", "max_in_flight": 64}},
    }


@contextmanager
def running(argv: list[str], config: dict[str, Any], **kwargs: Any) -> Iterator[None]:
    """A process started with ``argv + [its config file]``, terminated on the way out."""
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as f:
        f.write(orjson.dumps(config))  # JSON is YAML
    proc = subprocess.Popen([*argv, f.name], **kwargs)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(f.name)


def sink_state(sink: str) -> dict[str, Any]:
    with urllib.request.urlopen(sink, timeout=10) as reply:
        state: dict[str, Any] = orjson.loads(reply.read())
    return state


def wait_for(sink: str, expected: int, timeout: float) -> list[list[float]]:
    """The sink's arrival log once ``expected`` records came (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while (state := sink_state(sink))["count"] < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sink}: {state['count']} of {expected} records")
        time.sleep(0.05)
    log: list[list[float]] = state["log"]
    return log


def middle_rate(log: list[list[float]], expected: int) -> float:
    """Records per second at the sink between 10% and 90% of ``expected``."""
    t10, c10 = next((t, count) for t, count in log if count >= 0.1 * expected)
    t90, c90 = next((t, count) for t, count in log if count >= 0.9 * expected)
    return (c90 - c10) / max(t90 - t10, 1e-6)


def run_esmd(
    args: argparse.Namespace, topic: str, sink: str, kept: int, checkout: Path = ROOT
) -> float:
    argv = [sys.executable, "-m", "service", "run", "--log-level", "WARNING", "-c"]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    with running(argv, esmd_config(args, topic, sink), cwd=checkout, env=env):
        return middle_rate(wait_for(sink, kept, args.timeout), kept)


def run_benthos(args: argparse.Namespace, topic: str, sink: str, kept: int) -> float:
    argv = [str(benthos_binary()), "-c"]
    with running(argv, benthos_config(args, topic, sink)):
        return middle_rate(wait_for(sink, kept, args.timeout), kept)


@contextmanager
def counting_sink() -> Iterator[str]:
    """The sink process; yields its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.counting_sink", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the counting sink did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def contenders(args: argparse.Namespace) -> dict[str, Callable[[str, str, int], float]]:
    """Each contender's name and how to run it once: (topic, sink URL, kept) -> records/s."""
    workers = f"{args.workers} worker process{'es' if args.workers > 1 else ''}"
    runs: dict[str, Callable[[str, str, int], float]] = {
        f"esmd, {workers}": functools.partial(run_esmd, args)
    }
    if args.baseline is not None:
        runs[f"esmd at {args.baseline.name}"] = functools.partial(
            run_esmd, args, checkout=args.baseline
        )
    runs[f"Benthos {VERSION}"] = functools.partial(run_benthos, args)
    return runs


def main(args: argparse.Namespace) -> None:
    benthos_binary()  # built before anything is timed
    topic = f"peer-{uuid.uuid4().hex[:8]}"
    n = args.records
    print(f"producing {n} records of ~{args.size} B to {topic} ({args.partitions} partitions)...")
    total = run_async(prepare(args.bootstrap, topic, n, args.size, args.partitions))
    kept = sum(1 for i in range(n) if kept_by_filter(i))
    per_topic_record = n / kept  # topic records behind each record at the sink
    runs = contenders(args)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    with counting_sink() as base:
        for i in range(args.repeat):  # alternating, so all see the same machine load
            for j, (name, run) in enumerate(runs.items()):
                rates[name].append(run(topic, f"{base}/{j}-{i}", kept) * per_topic_record)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    for name, found in rates.items():
        print(f"runs, {name} (topic records/s): {[round(r) for r in found]}")
    medians = {name: statistics.median(found) for name, found in rates.items()}
    benthos = medians[f"Benthos {VERSION}"]
    mb_per_record = total / n / 1e6
    print()
    print(f"{'':32}{'records/s':>11}{'MB/s':>8}{'x Benthos':>11}")
    for name, rate in medians.items():
        print(f"{name:32}{rate:11.0f}{rate * mb_per_record:8.1f}{rate / benthos:11.2f}")
    print(f"(batch size {args.batch_size}, {kept} of {n} records kept by the filter)")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="esmd's server.workers")
    p.add_argument("--timeout", type=float, default=600, help="seconds per run, at most")
    p.add_argument(
        "--baseline",
        type=Path,
        help="another esmd checkout to run beside this one (a before/after comparison)",
    )
    main(p.parse_args())


if __name__ == "__main__":
    cli()
