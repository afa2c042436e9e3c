"""Provisioned mode on the real broker: the Kafka poller pool follows a burst up and back down."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any

import pytest

from service.daemon import Daemon
from service.scaling import LagScaler, Load
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


@dataclass(frozen=True)
class Decision:
    at: float
    current: int
    wanted: int
    reason: str


@pytest.fixture
def decisions(monkeypatch: pytest.MonkeyPatch) -> list[Decision]:
    """Every resize the scaler decides, recorded where it is decided (LagScaler.decide): a
    record of what the pool was asked for, independent of the gauges the pool sets."""
    made: list[Decision] = []
    decide = LagScaler.decide

    def recording(
        self: LagScaler, now: float, current: int, load: Load, limit: int
    ) -> tuple[int, str] | None:
        decision = decide(self, now, current, load, limit)
        if decision is not None:
            made.append(Decision(now, current, *decision))
        return decision

    monkeypatch.setattr(LagScaler, "decide", recording)
    return made


def total_lag(daemon: Daemon, name: str) -> float:
    return sum(
        daemon.metrics.registry.get_sample_value(
            "esm_offset_lag", {"mapping": name, "source": "kafka", "partition": str(p)}
        )
        or 0.0
        for p in range(PARTITIONS)
    )


async def test_pool_grows_on_a_burst_and_returns_to_the_minimum(
    kafka_bootstrap: str, unique: str, decisions: list[Decision]
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
        peak = 0.0

        def sample() -> float:
            """The pool's peak size so far; checks on the way that esm_pollers{kind=desired}
            shows the scaler's latest decision (the minimum before the first one)."""
            nonlocal peak
            decided = decisions[-1].wanted if decisions else 1
            desired = pollers(daemon, name, "desired")
            assert desired == decided, f"desired gauge {desired}, the scaler decided {decided}"
            peak = max(peak, pollers(daemon, name))
            return peak

        # the burst: 8 waves of 2,000 records, 0.5 s apart, faster than one poller drains
        started = time.monotonic()
        for wave in range(8):
            values = [(i % PARTITIONS, {"wave": wave, "i": i}) for i in range(2000)]
            await produce_json(kafka_bootstrap, topic, values)
            produced += len(values)
            sample()
            await asyncio.sleep(0.5)  # the pace of the burst, not a wait for the daemon
        left = max(0.1, started + 10 - time.monotonic())
        await wait_for(lambda: sample() >= 4, left, "4 pollers within 10 s of the burst")
        # the pool grew by the lag rule: each step doubles it (the throughput rule needs one
        # poller for these few kB/s), and nothing else resized it meanwhile
        grown = [d for d in decisions if d.wanted > d.current]
        assert [d.wanted for d in grown][:2] == [2, 4], decisions
        for d in grown:
            assert d.wanted == min(PARTITIONS, 2 * d.current), d
            assert d.reason.startswith("lag "), d

        await wait_for(lambda: len(seen[name]) >= produced, 90, f"all {produced} records")
        await wait_for(lambda: total_lag(daemon, name) == 0, 30, "the lag to drain to zero")
        drained = time.monotonic()
        await wait_for(lambda: pollers(daemon, name) == 1, cooldown + 20, "one poller again")
        assert time.monotonic() - drained >= cooldown - 1.0, "shrank before the cooldown"
        assert pollers(daemon, name, "desired") == 1
        last = decisions[-1]
        assert (last.wanted, last.reason.split(";")[0]) == (1, f"no lag for {cooldown:g}s"), last
        status = daemon.mappings[0].status()["poller"]
        assert status["pollers"] == 1

    committed, ends = await offsets(kafka_bootstrap, topic, f"group-{unique}", PARTITIONS)
    assert committed == ends, "every record's offset is committed"
    assert len(seen[name]) == produced
