"""`esmd run` SIGKILLed as a whole process group at random moments, three times a run, then
run to the end: no record lost, duplicates only from what was in flight, counters balance."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.devtools.sink import Sink
from tests.chaos.harness import chaos_run
from tests.chaos.sources import KafkaSource, KinesisSource, SqsSource

pytestmark = pytest.mark.integration
KILLS = 3


async def test_kafka(
    kafka_bootstrap: str, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    source = KafkaSource(kafka_bootstrap, f"chaos-kill-{unique}")
    await chaos_run(source, sink, tmp_path, rate=100, seed=seed, kills=KILLS)


async def test_sqs(
    elasticmq_endpoint: str, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    source = SqsSource(elasticmq_endpoint, f"chaos-kill-{unique}")
    await chaos_run(source, sink, tmp_path, rate=100, seed=seed, kills=KILLS)


async def test_kinesis(
    moto_endpoint: str, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    source = KinesisSource(moto_endpoint, f"chaos-kill-{unique}", tmp_path / "state.db")
    await chaos_run(source, sink, tmp_path, rate=60, seed=seed, kills=KILLS)
