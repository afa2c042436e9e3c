"""SQS scaling on ElasticMQ: the on-demand ramp and provisioned mode, with AWS's minute
compressed to a few seconds (``scaling.sqs_minute_seconds``), and the configuration AWS
refuses."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.integration import sqs_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.test_sqs import config, make_queue, metric, queue_empty, send

pytestmark = pytest.mark.integration

MINUTE = 6.0  # seconds standing for AWS's minute
PERIOD = 0.2


@pytest.fixture
async def sqs(elasticmq_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=elasticmq_endpoint
    ) as client:
        yield client


@dataclass
class Sample:
    t: float  # seconds since just before the daemon started
    limit: float
    pollers: float


async def ramp(
    sqs: Any, endpoint: str, fn: str, messages: int, floor: int, **mapping: Any
) -> list[Sample]:
    """Run a paced handler over a backlog; sample the concurrency limit and the pollers
    until every message is processed and the mapping is back at ``floor`` after idling."""
    url, arn = await make_queue(sqs, fn)
    await send(sqs, url, [{"seq": i} for i in range(messages)])
    cfg = config(endpoint, fn, "paced", arn, **mapping)
    cfg["scaling"] = {"sqs_period_seconds": PERIOD, "sqs_minute_seconds": MINUTE}
    samples: list[Sample] = []
    started = time.monotonic()
    async with running_daemon(cfg) as daemon:

        def sample() -> bool:
            pollers = daemon.metrics.registry.get_sample_value(
                "esm_pollers", {"mapping": fn, "source": "sqs", "kind": "current"}
            )
            limit = metric(daemon, "esm_invoke_concurrency_limit", fn)
            if limit:
                samples.append(Sample(time.monotonic() - started, limit, pollers or 0))
            done = len(sqs_handlers.seen[fn]) >= messages
            return done and limit == floor and samples[-1].t > samples[0].t

        await wait_for(sample, 60, f"{messages} messages, then the concurrency back at {floor}")
        await wait_for(lambda: queue_empty(sqs, url), 10, "the queue to empty")
    assert sorted(b["seq"] for b in sqs_handlers.seen[fn]) == list(range(messages))
    return samples


def within_rate(samples: list[Sample], floor: int, per_minute: int, step: int) -> bool:
    """Never above what ``per_minute`` allows since the daemon started (one step of slack)."""
    return all(s.limit <= floor + per_minute * s.t / MINUTE + step for s in samples)


async def test_on_demand_starts_at_five_and_grows_300_a_minute_up_to_maximum_concurrency(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    fn = f"ondemand-{unique}"
    samples = await ramp(
        sqs, elasticmq_endpoint, fn, 2000, 5, ScalingConfig={"MaximumConcurrency": 60}
    )
    limits = [s.limit for s in samples]
    assert limits[0] == 5 and samples[0].pollers == 1  # one poller per 10 concurrent batches
    assert max(limits) == 60  # grew while the backlog lasted, to MaximumConcurrency
    assert within_rate(samples, 5, 300, 1)
    assert max(s.pollers for s in samples) == 6
    assert sqs_handlers.most_in_flight[fn] <= 60
    assert limits[-1] == 5  # back after an idle minute


async def test_provisioned_starts_at_min_pollers_times_ten_and_grows_faster(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    fn = f"provisioned-{unique}"
    samples = await ramp(
        sqs,
        elasticmq_endpoint,
        fn,
        4000,
        20,
        ProvisionedPollerConfig={"MinimumPollers": 2, "MaximumPollers": 30},
    )
    limits = [s.limit for s in samples]
    assert limits[0] == 20 and samples[0].pollers == 2
    assert max(limits) <= 300 and max(s.pollers for s in samples) <= 30
    assert sqs_handlers.most_in_flight[fn] <= 300
    assert within_rate(samples, 20, 1000, 10)
    # faster than on demand could have grown in the same time
    assert any(s.limit - 20 > 300 * s.t / MINUTE for s in samples)
    assert all(s.limit % 10 == 0 for s in samples)  # whole pollers of 10
    assert limits[-1] == 20


def test_scaling_config_with_provisioned_pollers_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text(
        "mappings:\n"
        "  - Name: orders\n"
        "    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:orders\n"
        "    FunctionName: f\n"
        "    ScalingConfig: {MaximumConcurrency: 50}\n"
        "    ProvisionedPollerConfig: {MinimumPollers: 2, MaximumPollers: 10}\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "service", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "mapping 'orders': ScalingConfig: an SQS mapping takes ScalingConfig" in out.stderr


async def test_empty_provisioned_config_is_on_demand(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    fn = f"empty-{unique}"
    url, arn = await make_queue(sqs, fn)
    await send(sqs, url, [{"seq": 1}])
    cfg = config(elasticmq_endpoint, fn, "collect", arn, ProvisionedPollerConfig={})
    async with running_daemon(cfg) as daemon:
        await wait_for(lambda: len(sqs_handlers.seen[fn]) == 1, 30, "the message")
        assert metric(daemon, "esm_invoke_concurrency_limit", fn) == 5
