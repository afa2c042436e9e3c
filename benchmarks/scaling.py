"""Provisioned mode during a burst: pollers and offset lag over time.

One esmd daemon (in this process) runs a Kafka mapping with ProvisionedPollerConfig on a
fresh topic on the local broker; its handler takes a fixed time per batch, so a burst
builds lag. The producer sends `--waves` waves of records, then stops. Every half second
the benchmark prints the pool (current and desired pollers, from esm_pollers), the total
offset lag (esm_offset_lag summed over partitions) and the records delivered, until the pool
is back at its minimum after the cooldown.

    python benchmarks/scaling.py --partitions 8 --max-pollers 8 --waves 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.logs import configure_logging

delivered = 0
BATCH_SECONDS = 0.05


async def slow_handler(event: dict[str, Any], context: Any) -> None:
    """Takes BATCH_SECONDS a batch, as a handler that calls a database might."""
    global delivered
    await asyncio.sleep(BATCH_SECONDS)
    delivered += sum(len(records) for records in event["records"].values())


async def produce(bootstrap: str, topic: str, waves: int, per_wave: int, partitions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for wave in range(waves):
            futures = [
                await producer.send(
                    topic, orjson.dumps({"wave": wave, "i": i}), partition=i % partitions
                )
                for i in range(per_wave)
            ]
            await asyncio.gather(*futures)
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()


def gauge(daemon: Daemon, name: str, **labels: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        name, {"mapping": "burst", "source": "kafka", **labels}
    )
    return value or 0.0


async def main(args: argparse.Namespace) -> None:
    global delivered
    topic = f"burst-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, args.partitions, 1)])
    await admin.close()
    config = parse_config(
        {
            "server": {"listen": "127.0.0.1:0"},
            "scaling": {
                "period_seconds": args.period,
                "scale_up_after_seconds": args.up_after,
                "scale_down_cooldown_seconds": args.cooldown,
            },
            "functions": {"slow": {"python": "benchmarks.scaling:slow_handler"}},
            "mappings": [
                {
                    "Name": "burst",
                    "SelfManagedEventSource": {
                        "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [args.bootstrap]}
                    },
                    "Topics": [topic],
                    "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": topic},
                    "StartingPosition": "TRIM_HORIZON",
                    "FunctionName": "slow",
                    "BatchSize": args.batch_size,
                    "MaximumBatchingWindowInSeconds": 0.1,
                    "ProvisionedPollerConfig": {
                        "MinimumPollers": args.min_pollers,
                        "MaximumPollers": args.max_pollers,
                    },
                }
            ],
        },
        "scaling benchmark",
    )
    import benchmarks.scaling as handler_module  # where the handler counts

    handler_module.delivered = 0
    total = args.waves * args.per_wave
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(handle_signals=False))
    await asyncio.sleep(2)  # the first poller joins the group
    producer = asyncio.create_task(
        produce(args.bootstrap, topic, args.waves, args.per_wave, args.partitions)
    )
    print(
        f"burst of {total} records in {args.waves} waves; handler {BATCH_SECONDS * 1000:.0f} ms "
        f"a batch of {args.batch_size}; pollers {args.min_pollers}..{args.max_pollers}, "
        f"cooldown {args.cooldown:g} s"
    )
    print(f"{'t (s)':>6}{'pollers':>9}{'desired':>9}{'lag':>9}{'delivered':>11}")
    started = time.monotonic()
    peak = 0.0
    while True:
        now = time.monotonic() - started
        current = gauge(daemon, "esm_pollers", kind="current")
        peak = max(peak, current)
        lag = sum(gauge(daemon, "esm_offset_lag", partition=str(p)) for p in range(args.partitions))
        print(
            f"{now:6.1f}{current:9.0f}{gauge(daemon, 'esm_pollers', kind='desired'):9.0f}"
            f"{lag:9.0f}{handler_module.delivered:11d}",
            flush=True,
        )
        done = producer.done() and handler_module.delivered >= total and lag == 0
        if (done and current == args.min_pollers) or now > args.timeout:
            break
        await asyncio.sleep(0.5)
    daemon.request_stop()
    await task
    print(f"peak pollers {peak:.0f}; delivered {handler_module.delivered} of {total}")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--min-pollers", type=int, default=1)
    p.add_argument("--max-pollers", type=int, default=8)
    p.add_argument("--waves", type=int, default=10)
    p.add_argument("--per-wave", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--period", type=float, default=0.5)
    p.add_argument("--up-after", type=float, default=1.0)
    p.add_argument("--cooldown", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=120.0)
    configure_logging("WARNING")
    run_async(main(p.parse_args()))


if __name__ == "__main__":
    cli()
