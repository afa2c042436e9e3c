"""A target that fails 30% of its invocations, with an OnFailure destination (a Kafka topic)
and MaximumRetryAttempts 1, while `esmd run` is also SIGKILLed twice: every record is
delivered or in the destination, and the counters balance with the retries counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.devtools.sink import Sink
from tests.chaos.harness import chaos_run
from tests.chaos.sources import KafkaSource

pytestmark = pytest.mark.integration


async def test_kafka_target_failing_30_percent(
    kafka_bootstrap: str, unique: str, sink: Sink, seed: int, tmp_path: Path
) -> None:
    sink.failure_rate = 0.3
    source = KafkaSource(kafka_bootstrap, f"chaos-fail-{unique}", destination=True)
    outcome = await chaos_run(source, sink, tmp_path, rate=100, seed=seed, kills=2)
    assert outcome.given_up > 0, "no batch failed twice: the destination went untested"
    assert outcome.counters.failed_invoke > 0
