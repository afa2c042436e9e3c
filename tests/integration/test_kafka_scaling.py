"""Provisioned mode on the real broker: the Kafka poller pool follows a burst up and back down."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest

from service.daemon import Daemon
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)

pytestmark = pytest.mark.integration
PARTITIONS = 8
seen: dict[str, set[tuple[int, int]]] = collections.defaultdict(set)


async def slow(event: dict[str, Any], context: Any) -> None:
    """A handler that takes 50 ms a batch, so one poller falls behind a burst."""
    await asyncio.sleep(0.05)
    for records in event["records"].values():
        seen[context.function_name].update((r["partition"], r["offset"]) for r in records)


def pollers(daemon: Daemon, name: str, kind: str = "current") -> float:
    value = daemon.metrics.registry.get_sample_value(
        "esm_pollers", {"mapping": name, "source": "kafka", "kind": kind}
    )
    return value or 0.0


def total_lag(daemon: Daemon, name: str) -> float:
    return sum(
        daemon.metrics.registry.get_sample_value(
            "esm_offset_lag", {"mapping": name, "source": "kafka", "partition": str(p)}
        )
        or 0.0
        for p in range(PARTITIONS)
    )


async def test_pool_grows_on_a_burst_and_returns_to_the_minimum(
    kafka_bootstrap: str, unique: str
) -> None:
    name, topic = f"scale-{unique}", f"scale-{unique}"
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    cooldown = 3.0
    config = {
        "scaling": {
            "period_seconds": 0.5,
            "scale_up_after_seconds": 1.0,
            "scale_down_cooldown_seconds": cooldown,
        },
        "functions": {name: {"python": f"{__name__}:slow"}},
        "mappings": [
            kafka_mapping(
                name,
                kafka_bootstrap,
                topic,
                f"group-{unique}",
                FunctionName=name,
                BatchSize=10,
                MaximumBatchingWindowInSeconds=0.1,
                ProvisionedPollerConfig={"MinimumPollers": 1, "MaximumPollers": 8},
            )
        ],
    }
    produced = 0
    async with running_daemon(config) as daemon:
        await wait_for(lambda: pollers(daemon, name) == 1, 10, "the first poller")
        # the burst: 8 waves of 2,000 records, 0.5 s apart, faster than one poller drains
        started = time.monotonic()
        peak = peak_desired = 0.0
        for wave in range(8):
            values = [(i % PARTITIONS, {"wave": wave, "i": i}) for i in range(2000)]
            await produce_json(kafka_bootstrap, topic, values)
            produced += len(values)
            peak = max(peak, pollers(daemon, name))
            peak_desired = max(peak_desired, pollers(daemon, name, "desired"))
            await asyncio.sleep(0.5)
        while peak < 4 and time.monotonic() - started < 10:
            peak = max(peak, pollers(daemon, name))
            peak_desired = max(peak_desired, pollers(daemon, name, "desired"))
            await asyncio.sleep(0.1)
        assert peak >= 4, f"the pool reached only {peak} pollers within 10 s of the burst"
        assert peak_desired >= peak, "esm_pollers{kind=desired} led the pool up"

        await wait_for(lambda: len(seen[name]) >= produced, 90, f"all {produced} records")
        await wait_for(lambda: total_lag(daemon, name) == 0, 30, "the lag to drain to zero")
        drained = time.monotonic()
        await wait_for(lambda: pollers(daemon, name) == 1, cooldown + 20, "one poller again")
        assert time.monotonic() - drained >= cooldown - 1.0, "shrank before the cooldown"
        assert pollers(daemon, name, "desired") == 1
        status = daemon.mappings[0].status()["poller"]
        assert status["pollers"] == 1

    committed, ends = await offsets(kafka_bootstrap, topic, f"group-{unique}", PARTITIONS)
    assert committed == ends, "every record's offset is committed"
    assert len(seen[name]) == produced
