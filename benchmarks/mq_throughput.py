"""Amazon MQ throughput: esmd against a plain consume-and-ack loop on the same broker, in one run.

Per engine (``ENGINES``: RabbitMQ over AMQP 0-9-1, ActiveMQ over STOMP), both read the same
number of ~1 KB JSON messages from a fresh queue of the local broker (`make services`) with
the same prefetch: the plain loop acknowledges each message as it arrives; esmd decodes
each delivery into Lambda's record, filters it on ``data``, batches (BatchSize 100), invokes
an in-process handler and acknowledges the batch. Runs are interleaved (plain, esmd, plain,
esmd...) so both see the same machine load; the best of each is compared (target: esmd >=
0.8x the plain loop).

    python benchmarks/mq_throughput.py --engine rabbitmq --messages 20000 --repeat 3
    python benchmarks/mq_throughput.py --engine activemq --messages 20000 --repeat 3

The plain loops use the client esmd uses for the engine: aio-pika (over aiormq) for
RabbitMQ, stompman for ActiveMQ (``ack: client-individual``, ``activemq.prefetchSize``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.devtools import rabbitmq, servers
from service.logs import configure_logging

ARN = "arn:aws:mq:us-east-1:123456789012:broker:bench:b-00000000-0000-0000-0000-000000000000"
BATCH_SIZE = 100
CONCURRENCY = 2
#: the prefetch esmd uses (service.sources.mq): one batch filling, the others invoked
PREFETCH = BATCH_SIZE * (CONCURRENCY + 1)
BODY = json.dumps({"type": "order", "pad": "x" * 900}).encode()
delivered = 0


async def count_handler(event: dict[str, Any], context: Any) -> None:
    global delivered
    for messages in event.get("rmqMessagesByQueue", {}).values():
        delivered += len(messages)
    delivered += len(event.get("messages", []))  # ActiveMQ's shape


@dataclass(frozen=True)
class EngineBench:
    """One engine's part: its broker, how to fill a queue, the plain loop to compare with."""

    broker: Callable[[], dict[str, Any]]  # the mq.brokers entry (starts the broker)
    credentials: dict[str, str]
    fill: Callable[[str, int], Awaitable[None]]
    plain: Callable[[str, int], Awaitable[float]]  # seconds to consume and ack n messages
    plain_name: str


# --- RabbitMQ ---------------------------------------------------------------------------------


def _rabbit_url() -> str:
    host = servers.ensure_rabbitmq().removeprefix("amqp://")
    return f"amqp://{rabbitmq.USER}:{rabbitmq.PASSWORD}@{host}/{rabbitmq.VHOST}"


async def _rabbit_fill(queue: str, n: int) -> None:
    import aio_pika

    async with await aio_pika.connect(_rabbit_url()) as connection:
        channel = await connection.channel(publisher_confirms=False)
        await channel.declare_queue(queue, durable=True)
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(aio_pika.Message(BODY), routing_key=queue)
                    for _ in range(min(1000, n - start))
                )
            )
        # a confirmed channel's publish returns once the broker has all that came before
        confirmed = await connection.channel()
        await confirmed.default_exchange.publish(aio_pika.Message(BODY), routing_key=queue)


async def _rabbit_plain(queue: str, n: int) -> float:
    """aio-pika: one consumer, the same prefetch, each message acknowledged on arrival."""
    import aio_pika

    async with await aio_pika.connect(_rabbit_url()) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        declared = await channel.declare_queue(queue, durable=True)
        started, done = time.perf_counter(), 0
        async with declared.iterator() as messages:
            async for message in messages:
                await message.ack()
                done += 1
                if done >= n:
                    break
        return time.perf_counter() - started


RABBITMQ = EngineBench(
    broker=lambda: {"engine": "rabbitmq", "endpoints": [servers.ensure_rabbitmq()]},
    credentials={"username": rabbitmq.USER, "password": rabbitmq.PASSWORD},
    fill=_rabbit_fill,
    plain=_rabbit_plain,
    plain_name="plain consume+ack (aio-pika)",
)


# --- ActiveMQ ---------------------------------------------------------------------------------


def _stomp_servers() -> list[Any]:
    import stompman

    host, port = servers.ensure_activemq().removeprefix("stomp://").rsplit(":", 1)
    user, password = servers.ACTIVEMQ_USER, servers.ACTIVEMQ_PASSWORD
    return [stompman.ConnectionParameters(host, int(port), user, password)]


def _stomp_heartbeat() -> Any:
    """esmd's heart-beats (stompman's 1 s default loses connections on a loaded machine)."""
    import stompman

    from service.sources.mq_activemq import HEARTBEAT_MS

    return stompman.Heartbeat(HEARTBEAT_MS, HEARTBEAT_MS)


async def _activemq_fill(queue: str, n: int) -> None:
    """TextMessages; the last one's receipt: the broker has them all."""
    import stompman

    headers = {"amq-msg-type": "text"}
    async with stompman.Client(_stomp_servers(), heartbeat=_stomp_heartbeat()) as client:
        for _ in range(n - 1):
            await client.send(BODY, f"/queue/{queue}", headers=headers)
        await client.send(BODY, f"/queue/{queue}", headers=headers, receipt_timeout=120)


async def _activemq_plain(queue: str, n: int) -> float:
    """stompman: one subscription, the same prefetch, each message acknowledged on arrival."""
    import stompman

    done, count = asyncio.Event(), 0

    async def handle(frame: stompman.AckableMessageFrame) -> None:
        nonlocal count
        await frame.ack()
        count += 1
        if count >= n:
            done.set()

    async with stompman.Client(
        _stomp_servers(), heartbeat=_stomp_heartbeat(), max_concurrent_handlers=None
    ) as client:
        started = time.perf_counter()
        subscription = await client.subscribe_with_manual_ack(
            f"/queue/{queue}", handle, headers={"activemq.prefetchSize": str(PREFETCH)}
        )
        await done.wait()
        elapsed = time.perf_counter() - started
        await subscription.unsubscribe()
    return elapsed


ACTIVEMQ = EngineBench(
    broker=lambda: {"engine": "activemq", "endpoints": [servers.ensure_activemq()]},
    credentials={"username": servers.ACTIVEMQ_USER, "password": servers.ACTIVEMQ_PASSWORD},
    fill=_activemq_fill,
    plain=_activemq_plain,
    plain_name="plain consume+ack (stompman)",
)

ENGINES = {"rabbitmq": RABBITMQ, "activemq": ACTIVEMQ}


# --- esmd, the same for every engine ----------------------------------------------------------


async def esmd_run(bench: EngineBench, engine: str, queue: str, n: int) -> float:
    import benchmarks.mq_throughput as handler_module

    handler_module.delivered = 0
    os.environ["ESMD_BENCH_MQ"] = json.dumps(bench.credentials)
    access = [{"Type": "BASIC_AUTH", "URI": "env:ESMD_BENCH_MQ"}]
    if engine == "rabbitmq":
        access.append({"Type": "VIRTUAL_HOST", "URI": rabbitmq.VHOST})
    config = parse_config(
        {
            "server": {"listen": "127.0.0.1:0"},
            "mq": {"brokers": {ARN: bench.broker()}},
            "functions": {"count": {"python": "benchmarks.mq_throughput:count_handler"}},
            "mappings": [
                {
                    "Name": "bench",
                    "EventSourceArn": ARN,
                    "Queues": [queue],
                    "FunctionName": "count",
                    "BatchSize": BATCH_SIZE,
                    "ScalingConfig": {"MaximumConcurrency": CONCURRENCY},
                    "SourceAccessConfigurations": access,
                    "FilterCriteria": {"Filters": [{"Pattern": '{"data": {"type": ["order"]}}'}]},
                }
            ],
        },
        "bench",
    )
    daemon = Daemon(config)
    started = time.perf_counter()
    task = asyncio.create_task(daemon.run(handle_signals=False))
    mapping = daemon.mappings[0]
    while mapping.poller is None or mapping.poller.status()["acknowledged"] < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    daemon.request_stop()
    await task
    assert handler_module.delivered >= n
    return elapsed


async def main(args: argparse.Namespace) -> None:
    bench = ENGINES[args.engine]
    plain_runs, esmd_runs = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        await bench.fill(queue, args.messages)
        plain_runs.append(await bench.plain(queue, args.messages))
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        await bench.fill(queue, args.messages)
        esmd_runs.append(await esmd_run(bench, args.engine, queue, args.messages))
    plain, esmd = min(plain_runs), min(esmd_runs)
    n = args.messages
    print(
        f"{args.engine}: {n} messages of ~1 KB, prefetch {PREFETCH}, best of {args.repeat} "
        f"(plain {', '.join(f'{n / s:.0f}' for s in plain_runs)}; "
        f"esmd {', '.join(f'{n / s:.0f}' for s in esmd_runs)} msgs/s)"
    )
    print(f"{'':36}{'messages/s':>12}{'seconds':>10}")
    print(f"{bench.plain_name:36}{n / plain:12.0f}{plain:10.2f}")
    print(f"{'esmd (filter, batch, invoke, ack)':36}{n / esmd:12.0f}{esmd:10.2f}")
    print(f"ratio esmd/plain: {plain / esmd:.2f}x   (target: >= 0.8x)")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engine", choices=sorted(ENGINES), default="rabbitmq")
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    configure_logging("WARNING")
    run_async(main(args))


if __name__ == "__main__":
    cli()
