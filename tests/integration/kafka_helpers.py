"""Helpers for tests on the real broker: topics, producing, committed offsets, daemons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from service.config import parse_config
from service.daemon import Daemon


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def produce_json(
    bootstrap: str, topic: str, values: list[tuple[int, dict[str, Any]]]
) -> None:
    """Send (partition, value) pairs, each as JSON, and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                orjson.dumps(v),
                partition=p,
                key=f"k{i}".encode(),
                headers=[("source", b"test"), ("bin", b"\xff\x00")],
            )
            for i, (p, v) in enumerate(values)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def offsets(
    bootstrap: str, topic: str, group: str, partitions: int
) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offsets of the group, end offsets) per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
        ends = {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        return committed, ends
    finally:
        await consumer.stop()


def kafka_mapping(
    name: str, bootstrap: str, topic: str, group: str, **extra: Any
) -> dict[str, Any]:
    return {
        "Name": name,
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
        "Topics": [topic],
        "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": group},
        "StartingPosition": "TRIM_HORIZON",
        **extra,
    }


@contextlib.asynccontextmanager
async def running_daemon(config: dict[str, Any]) -> AsyncIterator[Daemon]:
    config.setdefault("server", {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5})
    daemon = Daemon(parse_config(config, "test"))
    task = asyncio.create_task(daemon.run(handle_signals=False))
    try:
        async with asyncio.timeout(10):
            while daemon._runner is None or not daemon._runner.addresses:
                await asyncio.sleep(0.01)
        yield daemon
    finally:
        daemon.request_stop()
        await task


async def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await _call(cond):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def _call(cond: Callable[[], Any]) -> Any:
    result = cond()
    return await result if asyncio.iscoroutine(result) else result


def scrape(text: str, mapping: str) -> dict[str, float]:
    """Counter totals for one mapping from a /metrics page."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("mapping") == mapping and s.name.endswith("_total"):
                out[s.name] = out.get(s.name, 0) + s.value
    return out
