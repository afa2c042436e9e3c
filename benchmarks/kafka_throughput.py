"""End-to-end Kafka throughput of one esmd process against the raw aiokafka consume rate.

Produces N JSON records of ~1 KB to a fresh topic on the local broker, then measures, in the
same run and on the same topic:
  1. raw: an aiokafka consumer reading every record (no processing): the ceiling;
  2. esmd: one daemon, one mapping with a filter, an in-process python target, committing
     offsets, from its first record to the last record delivered;
  3. `esmd run` as a separate process, with server.workers = 1 and then = the usable
     cores (their pollers share the partitions in one consumer group), its rate between 10%
     and 90% of the records invoked, as its merged /metrics page reports them (so its start
     and most of the group's first rebalance, as the second worker joins, fall outside).
Prints MB/s and events/s for each, the ratio to raw, MB/s per poller next to the 5 MB/s at
which AWS counts a poller, and the cores the local broker used meanwhile (it shares the
machine: what it takes, the workers cannot have). `--profile` adds a cProfile of the esmd
run (the hot path: poll, filter, batch, invoke, commit).

    python benchmarks/kafka_throughput.py --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.devtools.servers import STATE
from service.gctune import tuned_for_throughput
from service.logs import configure_logging
from service.workers import usable_cores

ROOT = Path(__file__).resolve().parents[1]
AWS_POLLER_MB_S = 5.0

delivered = 0
#: the benchmark's filter: exact + numeric on the decoded JSON value (every record matches)
PATTERN = '{"value": {"type": ["order"], "amount": [{"numeric": [">=", 0]}]}}'


async def count_handler(event: dict[str, Any], context: Any) -> None:
    """The benchmark's target: count records, as a trivial Lambda handler would touch them."""
    global delivered
    for records in event["records"].values():
        delivered += len(records)


def record(i: int, size: int) -> bytes:
    body = {
        "id": i,
        "type": "order",
        "status": "COMPLETED" if i % 2 else "PENDING",
        "amount": i % 1000,
        "customer": f"c-{i % 9973}",
        "pad": "",
    }
    raw = orjson.dumps(body)
    body["pad"] = "x" * max(0, size - len(raw))
    return orjson.dumps(body)


async def prepare(bootstrap: str, topic: str, n: int, size: int, partitions: int) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    total = 0
    pending = []
    for i in range(n):
        value = record(i, size)
        total += len(value)
        pending.append(await producer.send(topic, value, partition=i % partitions))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await producer.stop()
    return total


async def raw_consume(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    await consumer.seek_to_beginning()
    seen = 0
    started = time.perf_counter()
    while seen < n:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            seen += len(records)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return elapsed


def mapping_config(bootstrap: str, topic: str, batch_size: int, listen: str) -> dict[str, Any]:
    return {
        "server": {"listen": listen},
        "functions": {"count": {"python": "benchmarks.kafka_throughput:count_handler"}},
        "mappings": [
            {
                "Name": "bench",
                "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
                "Topics": [topic],
                "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": f"bench-{uuid.uuid4()}"},
                "StartingPosition": "TRIM_HORIZON",
                "FunctionName": "count",
                "BatchSize": batch_size,
                "MaximumBatchingWindowInSeconds": 0,
                "FilterCriteria": {"Filters": [{"Pattern": PATTERN}]},
            }
        ],
    }


def scrape(port: int) -> dict[str, float]:
    """The merged counters and poller gauge of the benchmark mapping."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("mapping") == "bench" and sample.labels.get("kind") != "desired":
                out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def esmd_workers_run(
    bootstrap: str, topic: str, n: int, batch_size: int, workers: int
) -> tuple[float, float]:
    """(seconds, pollers) of `esmd run` with several worker processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = mapping_config(bootstrap, topic, batch_size, f"127.0.0.1:{port}")
    config["server"]["workers"] = workers
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False) as f:
        f.write(orjson.dumps(config))  # JSON is YAML
    argv = [sys.executable, "-m", "service", "run", "-c", f.name, "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    try:
        samples: list[tuple[float, float]] = []
        while (seen := scrape(port)).get("esm_invoked_events_total", 0) < n:
            samples.append((time.perf_counter(), seen.get("esm_invoked_events_total", 0)))
            time.sleep(0.1)  # a scrape costs the daemon: not too often
        samples.append((time.perf_counter(), n))
        return n / middle_rate(samples, n), seen.get("esm_pollers", 0)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        os.unlink(f.name)


def middle_rate(samples: list[tuple[float, float]], n: int) -> float:
    """Records/s between 10% and 90% of ``n`` in (time, count) samples: the workers' start
    and the consumer group's first rebalance (the second worker joining) mostly fall before."""
    t10, c10 = next((t, c) for t, c in samples if c >= 0.1 * n)
    t90, c90 = next((t, c) for t, c in samples if c >= 0.9 * n)
    return (c90 - c10) / max(t90 - t10, 1e-6)


def broker_cpu_seconds() -> float | None:
    """CPU seconds the local broker (scripts/services.py's kafka) has used; None when it is
    not ours to read."""
    try:
        pid = int((STATE / "kafka" / "pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def esmd_run(bootstrap: str, topic: str, n: int, batch_size: int) -> float:
    # the collector settings `esmd run` applies; the raw consumer keeps CPython's defaults,
    # as a plain aiokafka program has them
    with tuned_for_throughput():
        return await _esmd_run(bootstrap, topic, n, batch_size)


async def _esmd_run(bootstrap: str, topic: str, n: int, batch_size: int) -> float:
    config = parse_config(mapping_config(bootstrap, topic, batch_size, "127.0.0.1:0"), "bench")
    import benchmarks.kafka_throughput as handler_module  # where the target counts

    handler_module.delivered = 0
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(handle_signals=False))
    polled = daemon.metrics.polled.labels("bench", "kafka")
    while polled._value.get() == 0:
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    while handler_module.delivered < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    daemon.request_stop()
    await task
    return elapsed


async def main(args: argparse.Namespace) -> None:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    print(
        f"producing {args.records} records of ~{args.size} B to {topic} "
        f"({args.partitions} partitions)...",
        flush=True,
    )
    total = await prepare(args.bootstrap, topic, args.records, args.size, args.partitions)
    mb = total / 1e6
    profiler = cProfile.Profile() if args.profile else None
    names = ("raw", "esmd", "one worker", "workers")
    runs: dict[str, list[float]] = {name: [] for name in names}
    broker: dict[str, list[float]] = {name: [] for name in names}
    workers = args.workers or usable_cores()
    pollers = 0.0

    async def timed(name: str, run: Awaitable[float]) -> None:
        """One run's seconds, and the broker's cores over the whole call."""
        cpu, wall = broker_cpu_seconds(), time.perf_counter()
        runs[name].append(await run)
        after = broker_cpu_seconds()
        if cpu is not None and after is not None:
            broker[name].append((after - cpu) / (time.perf_counter() - wall))

    async def in_workers(count: int) -> float:
        nonlocal pollers
        seconds, found = await asyncio.to_thread(
            esmd_workers_run, args.bootstrap, topic, args.records, args.batch_size, count
        )
        if count == workers:
            pollers = found
        return seconds

    for _ in range(args.repeat):  # interleaved, so all see the same machine load
        await timed("raw", raw_consume(args.bootstrap, topic, args.records, args.partitions))
        if profiler:
            profiler.enable()
        await timed("esmd", esmd_run(args.bootstrap, topic, args.records, args.batch_size))
        if profiler:
            profiler.disable()
        await timed("one worker", in_workers(1))
        await timed("workers", in_workers(workers))
    raw_s = statistics.median(runs["raw"])
    print(
        f"runs (s): raw {[round(r, 2) for r in runs['raw']]}, "
        f"esmd {[round(r, 2) for r in runs['esmd']]}, "
        f"esmd run x1 {[round(r, 2) for r in runs['one worker']]}, "
        f"esmd run x{workers} {[round(r, 2) for r in runs['workers']]}; medians below; "
        f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    print()
    n = args.records
    print(
        f"{'':30}{'MB/s':>8}{'events/s':>11}{'seconds':>9}{'x raw':>7}"
        f"{'pollers':>9}{'MB/s/poller':>13}{'broker cores':>14}"
    )
    rows = [
        ("raw aiokafka consume", "raw", 1.0),
        ("esmd, one process", "esmd", 1.0),
        ("esmd run, 1 worker process", "one worker", 1.0),
        (f"esmd run, {workers} worker processes", "workers", pollers),
    ]
    for label, name, count in rows:
        secs = statistics.median(runs[name])
        per = mb / secs / count if count else 0.0
        cores = f"{statistics.median(broker[name]):14.2f}" if broker[name] else f"{'?':>14}"
        print(
            f"{label:30}{mb / secs:8.1f}{n / secs:11.0f}{secs:9.2f}{raw_s / secs:7.2f}"
            f"{count:9.0f}{per:13.1f}{cores}"
        )
    print(
        f"AWS counts a poller at {AWS_POLLER_MB_S:g} MB/s; target: >= 100 MB/s end to end "
        "(broker and benchmark share this machine's cores)"
    )
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="default: the usable cores")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    configure_logging("WARNING")
    run_async(main(args))


if __name__ == "__main__":
    cli()
