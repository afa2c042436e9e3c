"""SQS scaling: AWS's on-demand and provisioned figures, the ramp rule, the resizable limit."""

from __future__ import annotations

import asyncio
from typing import Any

from service.config import MappingConfig
from service.sources.sqs_scaling import (
    Capacity,
    Concurrency,
    Observed,
    SqsScaler,
    capacity_for,
    provisioned_pollers,
)

ARN = "arn:aws:sqs:us-east-1:000000000000:orders"
BACKLOG = Observed(available=True, failed_batches=0, peak=0)


def mapping(**extra: Any) -> MappingConfig:
    return MappingConfig.model_validate(
        {"Name": "m", "FunctionName": "f", "EventSourceArn": ARN, **extra}
    )


def test_on_demand_figures() -> None:
    assert capacity_for(mapping()) == Capacity(False, 5, 1000, 300, 100)
    capped = capacity_for(mapping(ScalingConfig={"MaximumConcurrency": 50}))
    assert (capped.floor, capped.ceiling) == (5, 50)
    assert capacity_for(mapping(ScalingConfig={"MaximumConcurrency": 2})).floor == 2
    # {} is on demand, as in AWS
    empty = mapping(ProvisionedPollerConfig={})
    assert provisioned_pollers(empty) is None and not capacity_for(empty).provisioned


def test_provisioned_figures() -> None:
    default_min = capacity_for(mapping(ProvisionedPollerConfig={"MaximumPollers": 8}))
    assert default_min == Capacity(True, 20, 80, 1000, 8)  # MinimumPollers 2 x 10
    big = capacity_for(
        mapping(ProvisionedPollerConfig={"MinimumPollers": 3, "MaximumPollers": 10000})
    )
    assert (big.floor, big.ceiling, big.max_pollers) == (30, 20_000, 10_000)
    # one poller per 10 concurrent invocations and per 1 MB/s, within the bounds
    assert big.pollers(30) == 3 and big.pollers(35) == 4
    assert big.pollers(30, bytes_per_second=12e6) == 12
    assert big.pollers(0) == 3
    assert default_min.pollers(10_000, 0) == 8


def test_worker_shares_divide_the_figures() -> None:
    cap = Capacity(True, 20, 80, 1000, 8)
    halves = [cap.share(lambda total, i=i: total // 2 + (i < total % 2)) for i in range(2)]
    assert [(h.floor, h.ceiling, h.per_minute, h.max_pollers) for h in halves] == [
        (10, 40, 500, 4),
        (10, 40, 500, 4),
    ]
    assert cap.share(lambda total: total) == cap


def test_on_demand_ramp_is_300_a_minute_up_to_the_ceiling() -> None:
    s = SqsScaler(Capacity(False, 5, 50, 300, 5), minute_seconds=60)
    current, t = 5, 0.0
    assert s.decide(t, current, BACKLOG) is None  # the first look starts the clock
    curve = []
    while t < 20:
        t += 1
        decision = s.decide(t, current, BACKLOG)
        if decision is not None:
            current = decision[0]
        curve.append(current)
    assert curve[:3] == [10, 15, 20]  # 300 a minute = 5 a second
    assert max(curve) == 50 and curve[-1] == 50


def test_provisioned_ramp_is_1000_a_minute_in_whole_pollers() -> None:
    s = SqsScaler(Capacity(True, 20, 20_000, 1000, 2000), minute_seconds=6)
    s.decide(0.0, 20, BACKLOG)
    # 1,000 a minute over a 6 s minute: 166.7 a second, added 10 at a time
    assert s.decide(1.0, 20, BACKLOG) == (180, "messages available: +160 (up to 1000/min)")
    decision = s.decide(2.0, 180, BACKLOG)
    assert decision is not None and decision[0] == 350  # the 6.7 left over carried


def test_no_growth_while_invocations_fail() -> None:
    s = SqsScaler(Capacity(False, 5, 1000, 300, 100), minute_seconds=1)
    s.decide(0.0, 5, BACKLOG)
    assert s.decide(1.0, 5, Observed(True, failed_batches=2, peak=5)) is None


def test_shrinks_after_an_idle_minute_to_what_was_used() -> None:
    s = SqsScaler(Capacity(True, 20, 800, 1000, 80), minute_seconds=10)
    calm = Observed(available=False, failed_batches=0, peak=0)
    s.decide(0.0, 400, Observed(False, 0, peak=33))
    assert s.decide(5.0, 400, calm) is None  # not a minute yet
    decision = s.decide(10.0, 400, calm)
    assert decision is not None and decision[0] == 40  # 33 in flight, rounded to pollers
    decision = s.decide(12.0, 40, BACKLOG)  # backlog again: it grows, the idle clock stops
    assert decision is not None and decision[0] == 240
    s.decide(13.0, 240, calm)
    assert s.decide(22.0, 240, calm) is None
    assert s.decide(23.0, 240, calm) == (20, "no backlog for a minute (10 s); at most 0 in flight")


async def test_concurrency_limit_resizes_while_held() -> None:
    slots = Concurrency(2)
    await slots.acquire()
    await slots.acquire()
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not third.done() and slots.waiting == 1
    slots.resize(3)
    await asyncio.sleep(0)
    assert third.done() and slots.held == 3 and slots.take_peak() == 3
    slots.resize(1)  # shrinking interrupts nothing; the next acquire waits
    slots.release()
    slots.release()
    fourth = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not fourth.done()
    slots.release()
    await asyncio.sleep(0)
    assert fourth.done() and slots.held == 1
    # a waiter cancelled while waiting leaves nothing behind
    fifth = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    fifth.cancel()
    await asyncio.gather(fifth, return_exceptions=True)
    assert slots.waiting == 0 and slots.held == 1
    slots.release()
    async with slots:
        assert slots.held == 1
    assert slots.held == 0


def test_a_period_without_evidence_is_credited_to_the_next() -> None:
    s = SqsScaler(Capacity(False, 5, 1000, 300, 100), minute_seconds=60)
    s.decide(0.0, 5, BACKLOG)
    unknown = Observed(available=None, failed_batches=0, peak=0)
    assert s.decide(1.0, 5, unknown) is None and s.decide(2.0, 5, unknown) is None
    decision = s.decide(3.0, 5, BACKLOG)  # 3 s at 300 a minute
    assert decision is not None and decision[0] == 20


def test_an_idle_queue_without_evidence_still_shrinks_and_saves_no_growth() -> None:
    """An idle queue's long polls rarely complete within a period: that counts as idle, and a
    later burst starts its ramp from then, not with the idle time as credit."""
    s = SqsScaler(Capacity(False, 5, 1000, 300, 100), minute_seconds=60)
    unknown = Observed(available=None, failed_batches=0, peak=0)
    s.decide(0.0, 200, Observed(False, 0, peak=0))
    assert s.decide(30.0, 200, unknown) is None
    assert s.decide(61.0, 200, unknown) == (
        5,
        "no backlog for a minute (60 s); at most 0 in flight",
    )
    s.decide(600.0, 5, unknown)
    decision = s.decide(601.0, 5, BACKLOG)
    assert decision is not None and decision[0] == 10  # one second's worth: +5
