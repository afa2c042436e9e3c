"""Soak: `esmd run` for N minutes under a steady load, watched for leaks and lost records.

Two mappings in one `esmd run` subprocess (one process, `server.workers: 1`), both with a
filter that drops 10% of the records and an HTTP target (service/devtools/sink.py, in this
process) that fails 10% of its invocations:

- Kafka (local broker, 3 partitions): MaximumRetryAttempts 1 and an OnFailure destination,
  a Kafka topic (`kafka://<topic>-failures`), for batches that fail twice;
- SQS (ElasticMQ): a failed batch comes back after its 5 s visibility timeout; the queue's
  redrive policy moves a message received twice to a dead-letter queue (SQS has no OnFailure
  destination in Lambda: the DLQ is its place for records given up on).

Every `--every` seconds it samples the process group's RSS and open file descriptors, the
daemon's asyncio task count (`esmd_asyncio_tasks` on /metrics) and the lag (Kafka: the sum of
`esm_offset_lag`; SQS: the queue's visible and in-flight messages). At the end it stops the
producers, lets both mappings drain, and checks:

- slopes after warm-up (the first `--warmup` minutes are left out): RSS, fds, tasks, lags;
- no record lost: every id produced is delivered, in the destination/DLQ, or filtered out;
- the counters balance exactly (service/devtools/balance.py states the identities).

It writes a PNG of RSS and lag over time (`--plot`, matplotlib) and exits 1 when a record was
lost or a counter does not balance.

    python benchmarks/soak.py --minutes 30 --rate 100 --plot soak.png
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.devtools.balance import Counters, imbalances
from service.devtools.esmd_process import EsmdProcess, free_port
from service.devtools.given_up import kafka_topic_ids, sqs_queue_ids
from service.devtools.servers import ensure_elasticmq, ensure_kafka
from service.devtools.sink import Sink

PARTITIONS = 3
KEEP = '{"keep": [true]}'  # 1 record in 10 has keep: false and is filtered out
PAD = "x" * 400
#: ElasticMQ takes any credentials; botocore needs some
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}


def payload(i: int) -> bytes:
    return orjson.dumps({"id": i, "keep": i % 10 != 9, "pad": PAD})


def kept(ids: range) -> set[int]:
    return {i for i in ids if i % 10 != 9}


@dataclass
class Sample:
    t: float  # seconds since the start
    rss_mb: float
    fds: int
    tasks: float
    kafka_lag: float
    sqs_lag: float


@dataclass
class Load:
    """What the producers sent: ids 0..n-1 per source."""

    kafka: int = 0
    sqs: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)


# --- the sources ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sqs_client(endpoint: str) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    ) as client:
        yield client


async def make_queues(sqs: Any, name: str) -> tuple[str, str]:
    """The source queue (5 s visibility, redrive after 2 receives) and its DLQ's URL."""
    dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    redrive = {"deadLetterTargetArn": f"arn:aws:sqs:us-east-1:000000000000:{name}-dlq",
               "maxReceiveCount": "2"}  # fmt: skip
    attributes = {"VisibilityTimeout": "5", "RedrivePolicy": orjson.dumps(redrive).decode()}
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    return url, dlq


async def produce_kafka(producer: AIOKafkaProducer, topic: str, rate: int, load: Load) -> None:
    """``rate`` records a second, in ten bursts, until told to stop."""
    started = time.monotonic()
    while not load.stop.is_set():
        due = int((time.monotonic() - started) * rate)
        futures = [await producer.send(topic, payload(i)) for i in range(load.kafka, due)]
        await asyncio.gather(*futures)
        load.kafka = max(load.kafka, due)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.stop.wait(), 0.1)


async def produce_sqs(sqs: Any, url: str, rate: int, load: Load) -> None:
    started = time.monotonic()
    while not load.stop.is_set():
        due = int((time.monotonic() - started) * rate)
        while load.sqs < due:
            ids = range(load.sqs, min(due, load.sqs + 10))
            entries = [{"Id": str(i), "MessageBody": payload(i).decode()} for i in ids]
            await sqs.send_message_batch(QueueUrl=url, Entries=entries)
            load.sqs = ids.stop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.stop.wait(), 0.1)


async def queue_depth(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return sum(int(attrs[n]) for n in names)


# --- measuring ------------------------------------------------------------------------------


def gauge_sum(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


async def sample(esmd: EsmdProcess, sqs: Any, url: str, started: float) -> Sample:
    text = await asyncio.to_thread(esmd.metrics)
    return Sample(
        t=time.monotonic() - started,
        rss_mb=esmd.rss_bytes() / 2**20,
        fds=esmd.open_fds(),
        tasks=gauge_sum(text, "esmd_asyncio_tasks"),
        kafka_lag=gauge_sum(text, "esm_offset_lag"),
        sqs_lag=await queue_depth(sqs, url),
    )


def progress(s: Sample) -> str:
    return (
        f"{s.t / 60:5.1f} min  rss {s.rss_mb:6.1f} MB  fds {s.fds:3d}  tasks {s.tasks:4.0f}  "
        f"lag kafka {s.kafka_lag:5.0f} sqs {s.sqs_lag:4.0f}"
    )


def slope_per_minute(samples: list[Sample], attr: str) -> float:
    if len(samples) < 3:
        return 0.0
    xs = [s.t / 60 for s in samples]
    ys = [float(getattr(s, attr)) for s in samples]
    return statistics.linear_regression(xs, ys).slope


def plot(samples: list[Sample], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t / 60 for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    top.plot(minutes, [s.rss_mb for s in samples], label="RSS (MB)")
    top.set_ylabel("RSS (MB)")
    top.set_title(title)
    bottom.plot(minutes, [s.kafka_lag for s in samples], label="Kafka offset lag")
    bottom.plot(minutes, [s.sqs_lag for s in samples], label="SQS messages queued")
    bottom.set_ylabel("lag (records)")
    bottom.set_xlabel("minutes")
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the run --------------------------------------------------------------------------------


def esmd_config(
    port: int, sink_url: str, bootstrap: str, topic: str, elasticmq: str, queue: str
) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 1},
        "aws": {"region": "us-east-1", "endpoints": {"sqs": elasticmq}},
        "retry": {"initial_backoff_seconds": 0.2, "max_backoff_seconds": 2},
        "functions": {"kafka": {"url": f"{sink_url}/kafka"}, "sqs": {"url": f"{sink_url}/sqs"}},
        "mappings": [
            {
                "Name": "soak-kafka",
                "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
                "Topics": [topic],
                "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": f"{topic}-group"},
                "StartingPosition": "TRIM_HORIZON",
                "FunctionName": "kafka",
                "BatchSize": 50,
                "MaximumBatchingWindowInSeconds": 0.5,
                "MaximumRetryAttempts": 1,
                "FilterCriteria": {"Filters": [{"Pattern": '{"value": ' + KEEP + "}"}]},
                "DestinationConfig": {"OnFailure": {"Destination": f"kafka://{topic}-failures"}},
            },
            {
                "Name": "soak-sqs",
                "EventSourceArn": f"arn:aws:sqs:us-east-1:000000000000:{queue}",
                "FunctionName": "sqs",
                "BatchSize": 10,
                "FilterCriteria": {"Filters": [{"Pattern": '{"body": ' + KEEP + "}"}]},
            },
        ],
    }


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}-failures", 1, 1)]
        await admin.create_topics(topics)
    finally:
        await admin.close()


def lost_and_duplicates(
    produced: int, delivered: dict[int, int], given_up: list[int]
) -> tuple[set[int], int]:
    """(ids kept by the filter that are nowhere, deliveries beyond one per id)."""
    seen = set(delivered) | set(given_up)
    lost = kept(range(produced)) - seen
    duplicates = sum(delivered.values()) + len(given_up) - len(seen)
    return lost, duplicates


async def settle(esmd: EsmdProcess, sqs: Any, url: str, timeout: float) -> None:
    """Until the Kafka lag and the SQS queue are empty and the counters stop moving."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(esmd.metrics)
        counters = str(Counters.from_metrics(text, "soak-kafka")) + str(
            Counters.from_metrics(text, "soak-sqs")
        )
        idle = gauge_sum(text, "esm_offset_lag") == 0 and await queue_depth(sqs, url) == 0
        if idle and counters == last:
            return
        last = counters
        await asyncio.sleep(3)
    print(f"warning: not settled after {timeout:.0f}s")


async def run(args: argparse.Namespace) -> int:
    bootstrap, elasticmq = ensure_kafka(), ensure_elasticmq()
    name = f"soak-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, name)
    folder = Path(tempfile.mkdtemp(prefix="esmd-soak-"))
    sink = Sink(failure_rate=0.1, seed=args.seed)
    sink_url = await sink.start()
    load = Load()
    samples: list[Sample] = []
    async with sqs_client(elasticmq) as sqs:
        url, dlq = await make_queues(sqs, name)
        config = esmd_config(free_port(), sink_url, bootstrap, name, elasticmq, name)
        esmd = EsmdProcess(config, folder, "ERROR", LOCAL_CREDENTIALS)
        esmd.start()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
        await producer.start()
        started = time.monotonic()
        producers = [
            asyncio.create_task(produce_kafka(producer, name, args.rate, load)),
            asyncio.create_task(produce_sqs(sqs, url, args.rate // 2, load)),
        ]
        print(f"soak {name}: {args.minutes} min, Kafka {args.rate}/s, SQS {args.rate // 2}/s; "
              f"esmd pid {esmd.pid}, log {folder}/esmd.log")  # fmt: skip
        try:
            while time.monotonic() - started < args.minutes * 60:
                await asyncio.sleep(args.every)
                samples.append(s := await sample(esmd, sqs, url, started))
                if len(samples) % max(1, int(60 / args.every)) == 0:
                    print(progress(s), flush=True)
        finally:
            load.stop.set()
            await asyncio.gather(*producers)
            await producer.stop()
        await settle(esmd, sqs, url, timeout=120)
        text = await asyncio.to_thread(esmd.metrics)
        status = esmd.stop()
        dead = await sqs_queue_ids(sqs, dlq)
    failed = await kafka_topic_ids(bootstrap, f"{name}-failures")
    await sink.close()
    return report(args, samples, load, sink, text, failed, dead, status)


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    load: Load,
    sink: Sink,
    text: str,
    failed: list[int],
    dead: list[int],
    status: int,
) -> int:
    warm = [s for s in samples if s.t >= args.warmup * 60]
    print(f"\nslopes after {args.warmup} min of warm-up ({len(warm)} samples, per minute):")
    for attr, unit in [("rss_mb", "MB"), ("fds", "fds"), ("tasks", "tasks"),
                       ("kafka_lag", "records"), ("sqs_lag", "messages")]:  # fmt: skip
        values = [getattr(s, attr) for s in warm] or [0]
        print(f"  {attr:10s} {slope_per_minute(warm, attr):+9.3f} {unit}/min   "
              f"(min {min(values):.1f}, max {max(values):.1f})")  # fmt: skip
    problems = []
    for source, produced, given_up, redelivery in [
        ("kafka", load.kafka, failed, False),
        ("sqs", load.sqs, dead, True),
    ]:
        counters = Counters.from_metrics(text, f"soak-{source}")
        delivered = sink.delivered.get(source, {})
        lost, duplicates = lost_and_duplicates(produced, dict(delivered), given_up)
        print(f"\n{source}: produced {produced}, delivered {len(delivered)} ids "
              f"({sink.successes(source)} deliveries), given up {len(given_up)} "
              f"({'DLQ' if redelivery else 'OnFailure topic'}), lost {len(lost)}, "
              f"duplicates {duplicates}")  # fmt: skip
        print(f"  counters: {counters}")
        wrong = imbalances(counters, sink.successes(source), redelivery=redelivery)
        problems += [f"{source}: {w}" for w in wrong]
        if lost:
            problems.append(f"{source}: {len(lost)} records lost, e.g. {sorted(lost)[:10]}")
    if args.plot:
        plot(samples, Path(args.plot), f"esmd soak, {args.minutes} min")
        print(f"\nplot: {args.plot}")
    if status != 0:
        problems.append(f"esmd exited with {status} after SIGTERM")
    print("\n" + ("\n".join(problems) if problems else "counters balance, no record lost"))
    return 1 if problems else 0


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=100, help="Kafka records/s (SQS: half)")
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="minutes (default: a fifth)")
    parser.add_argument("--plot", default="soak.png")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.minutes / 5
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    cli()
