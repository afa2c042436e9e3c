"""``esmd demo``: a sample Kafka mapping end to end on a local broker, with a live summary.

It produces sample orders to a 4-partition topic, keeps the COMPLETED ones with a filter,
invokes the bundled handler ``service.examples.handlers:handle`` and serves /metrics, printing
polled / filtered / invoked / lag once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.config import parse_config
from service.daemon import Daemon
from service.examples import handlers
from service.metrics import Metrics

TOPIC = "esmd-demo-orders"
STATUSES = ("COMPLETED", "PENDING", "CANCELLED", "COMPLETED")


def local_broker() -> str:
    """Start the local Kafka broker (from Maven Central on first use) and return it."""
    from service.devtools.servers import ensure_kafka  # dev tooling: only the demo needs it

    print("starting the local Kafka broker (the first run fetches it from Maven Central)...")
    return ensure_kafka()


def demo_config(bootstrap: str, listen: str) -> dict[str, object]:
    return {
        "server": {"listen": listen, "shutdown_grace_seconds": 5},
        "functions": {"orders-handler": {"python": "service.examples.handlers:handle"}},
        "mappings": [
            {
                "Name": "demo-orders",
                "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
                "Topics": [TOPIC],
                "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": "esmd-demo"},
                "StartingPosition": "TRIM_HORIZON",
                "FunctionName": "orders-handler",
                "BatchSize": 100,
                "MaximumBatchingWindowInSeconds": 1,
                "FilterCriteria": {
                    "Filters": [{"Pattern": '{"value": {"status": ["COMPLETED"]}}'}]
                },
            }
        ],
    }


async def ensure_topic(bootstrap: str, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(TOPIC, partitions, 1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, per_second: int, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    n = 0
    try:
        while not stop.is_set():
            for _ in range(per_second // 10):
                n += 1
                order = {
                    "orderId": n,
                    "status": random.choice(STATUSES),
                    "amount": round(random.uniform(5, 500), 2),
                    "customer": f"c{n % 97}",
                }
                await producer.send(TOPIC, orjson.dumps(order), key=str(n % 97).encode())
            await asyncio.sleep(0.1)
    finally:
        await producer.stop()


def summary(metrics: Metrics, elapsed: float) -> str:
    def total(name: str) -> int:
        value = metrics.registry.get_sample_value(
            name, {"mapping": "demo-orders", "source": "kafka"}
        )
        return int(value or 0)

    lag = sum(
        s.value
        for family in metrics.registry.collect()
        if family.name == "esm_offset_lag"
        for s in family.samples
    )
    return (
        f"[{elapsed:5.1f}s] demo-orders  polled={total('esm_polled_events_total')} "
        f"filtered_out={total('esm_filtered_out_events_total')} "
        f"invoked={total('esm_invoked_events_total')} lag={int(lag)} "
        f"handler_seen={handlers.seen['records']}"
    )


async def run_demo(bootstrap: str | None, seconds: float | None, listen: str) -> int:
    if bootstrap is None:
        bootstrap = await asyncio.to_thread(local_broker)
    await ensure_topic(bootstrap)
    config = parse_config(demo_config(bootstrap, listen), "demo")
    daemon = Daemon(config)
    stop_producing = asyncio.Event()
    print(
        f"esmd demo: topic {TOPIC} on {bootstrap}; metrics on http://{listen}/metrics; "
        "Ctrl-C to stop"
    )
    producer = asyncio.create_task(produce(bootstrap, 2000, stop_producing))
    runner = asyncio.create_task(daemon.run())
    started = time.monotonic()
    try:
        while not runner.done():
            await asyncio.wait({runner}, timeout=1.0)
            elapsed = time.monotonic() - started
            print(summary(daemon.metrics, elapsed), flush=True)
            if seconds is not None and elapsed >= seconds:
                stop_producing.set()
                await producer
                await asyncio.sleep(1.5)  # let the last batches through before stopping
                daemon.request_stop()
    finally:
        stop_producing.set()
        await asyncio.gather(producer, return_exceptions=True)
        await runner
    print(summary(daemon.metrics, time.monotonic() - started))
    print("demo stopped", file=sys.stderr)
    return 0
