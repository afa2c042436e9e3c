"""End-to-end Kafka throughput of one esmd process against the raw aiokafka consume rate.

Produces N JSON records of ~1 KB to a fresh topic on the local broker, then measures, in the
same run and on the same topic:
  1. raw: an aiokafka consumer reading every record (no processing): the ceiling;
  2. esmd: one daemon, one mapping with a filter, an in-process python target, committing
     offsets, from its first record to the last record delivered.
Prints MB/s and events/s for both and their ratio. `--profile` adds a cProfile of the esmd
run (the hot path: poll, filter, batch, invoke, commit).

    python benchmarks/kafka_throughput.py --records 200000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.logs import configure_logging

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


async def esmd_run(bootstrap: str, topic: str, n: int, batch_size: int) -> float:
    config = parse_config(
        {
            "server": {"listen": "127.0.0.1:0"},
            "functions": {"count": {"python": "benchmarks.kafka_throughput:count_handler"}},
            "mappings": [
                {
                    "Name": "bench",
                    "SelfManagedEventSource": {
                        "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}
                    },
                    "Topics": [topic],
                    "SelfManagedKafkaEventSourceConfig": {
                        "ConsumerGroupId": f"bench-{uuid.uuid4()}"
                    },
                    "StartingPosition": "TRIM_HORIZON",
                    "FunctionName": "count",
                    "BatchSize": batch_size,
                    "MaximumBatchingWindowInSeconds": 0,
                    "FilterCriteria": {"Filters": [{"Pattern": PATTERN}]},
                }
            ],
        },
        "bench",
    )
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
    raw_runs, esmd_runs = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        raw_runs.append(await raw_consume(args.bootstrap, topic, args.records, args.partitions))
        if profiler:
            profiler.enable()
        esmd_runs.append(await esmd_run(args.bootstrap, topic, args.records, args.batch_size))
        if profiler:
            profiler.disable()
    raw_s, esmd_s = statistics.median(raw_runs), statistics.median(esmd_runs)
    print(
        f"runs (s): raw {[round(r, 2) for r in raw_runs]}, "
        f"esmd {[round(r, 2) for r in esmd_runs]}; medians below"
    )
    print()
    print(f"{'':24}{'MB/s':>10}{'events/s':>12}{'seconds':>10}")
    print(f"{'raw aiokafka consume':24}{mb / raw_s:10.1f}{args.records / raw_s:12.0f}{raw_s:10.2f}")
    print(f"{'esmd end to end':24}{mb / esmd_s:10.1f}{args.records / esmd_s:12.0f}{esmd_s:10.2f}")
    print(f"ratio esmd/raw: {raw_s / esmd_s:.2f}x   (target: >= 100 MB/s and >= 0.6x raw)")
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
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    configure_logging("WARNING")
    run_async(main(args))


if __name__ == "__main__":
    cli()
