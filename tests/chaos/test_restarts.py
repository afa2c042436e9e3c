"""The source's server stopped and started again under a running `esmd run`: the Kafka
broker, ElasticMQ. Private instances (tests/chaos/conftest.py): other tests keep the shared
ones. The daemon rides it out: nothing lost, duplicates only from what was in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.devtools import servers
from service.devtools.sink import Sink
from tests.chaos.harness import Disruption, chaos_run
from tests.chaos.sources import KafkaSource, SqsSource

pytestmark = pytest.mark.integration


def restart(server: servers.Server, down: float) -> Disruption:
    """Stop the server (SIGTERM, as an operator or an orchestrator would), leave it down
    ``down`` seconds, start it again on the same state folder."""

    async def disrupt() -> None:
        await asyncio.to_thread(servers.stop, server)
        print(f"  {server.name} stopped; down {down}s")
        await asyncio.sleep(down)
        await asyncio.to_thread(servers.ensure, server)
        print(f"  {server.name} back")

    return disrupt


async def test_kafka_broker_restarted(
    private_kafka: servers.Server, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    source = KafkaSource(private_kafka.address, f"chaos-broker-{unique}")
    await chaos_run(
        source,
        sink,
        tmp_path,
        rate=100,
        seed=seed,
        disruptions=[restart(private_kafka, 3)],
        timeout=180,
    )


async def test_elasticmq_restarted(
    private_elasticmq: servers.Server, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    source = SqsSource(private_elasticmq.address, f"chaos-sqs-{unique}")
    await chaos_run(
        source,
        sink,
        tmp_path,
        rate=100,
        seed=seed,
        disruptions=[restart(private_elasticmq, 3)],
        timeout=180,
    )
