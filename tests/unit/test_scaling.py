from __future__ import annotations

import asyncio

import pytest

from service.metrics import Metrics
from service.scaling import LagScaler, Load, PollerPool, PoolBounds


async def test_pool_stays_in_bounds_and_retires_pollers_gently() -> None:
    metrics = Metrics()
    running: set[int] = set()
    ids = iter(range(100))

    async def poller(retire: asyncio.Event) -> None:
        me = next(ids)
        running.add(me)
        try:
            await retire.wait()  # a real poller finishes its current read first
        finally:
            running.discard(me)

    pool = PollerPool(poller, PoolBounds(2, 5), metrics.for_mapping("m", "sqs"))
    pool.start()
    await asyncio.sleep(0)
    assert pool.size == 2 and len(running) == 2
    assert pool.resize(50, "burst") == 5
    await asyncio.sleep(0)
    assert len(running) == 5
    assert pool.resize(0, "idle") == 2
    await asyncio.sleep(0.01)
    assert len(running) == 2
    current = metrics.registry.get_sample_value(
        "esm_pollers", {"mapping": "m", "source": "sqs", "kind": "current"}
    )
    assert current == 2
    await pool.close()
    assert not running


def scaler(cooldown: float = 10.0) -> LagScaler:
    return LagScaler(
        PoolBounds(1, 8), capacity_bytes=5e6, up_after=2.0, cooldown=cooldown, batch_size=100
    )


def test_sustained_lag_doubles_the_pool_but_a_blip_does_not() -> None:
    s = scaler()
    backlog = Load(lag=10_000, records_per_second=1_000, bytes_per_second=1e6)
    assert s.decide(0.0, 1, backlog, limit=8) is None  # lag seen for the first time
    assert s.decide(1.0, 1, backlog, limit=8) is None  # not yet lasting
    assert s.decide(2.0, 1, backlog, limit=8) == (2, "lag 10000 records for 2s, not draining")
    assert s.decide(3.0, 2, backlog, limit=8) is None  # waits again after a step
    decision = s.decide(4.0, 2, backlog, limit=8)
    assert decision is not None and decision[0] == 4
    # a batch's worth of lag in a steady stream is not backlog
    calm = scaler()
    steady = Load(lag=90, records_per_second=5_000, bytes_per_second=1e6)
    for t in range(10):
        assert calm.decide(float(t), 1, steady, limit=8) is None


def test_draining_lag_holds_and_the_partitions_cap_the_pool() -> None:
    s = scaler()
    s.decide(0.0, 2, Load(10_000, 1_000, 1e6), limit=8)
    assert s.decide(2.0, 2, Load(5_000, 1_000, 1e6), limit=8) is None  # halving: enough pollers
    s2 = scaler()
    s2.decide(0.0, 2, Load(10_000, 1_000, 1e6), limit=3)
    assert s2.decide(2.0, 2, Load(12_000, 1_000, 1e6), limit=3) == (
        3,
        "lag 12000 records for 2s, not draining",
    )
    assert s2.decide(4.0, 3, Load(20_000, 1_000, 1e6), limit=3) is None  # at the cap


def test_throughput_sets_a_floor_and_shrinking_waits_for_the_cooldown() -> None:
    s = scaler(cooldown=10.0)
    busy = Load(lag=0, records_per_second=20_000, bytes_per_second=22e6)  # needs 5 at 5 MB/s
    decision = s.decide(0.0, 1, busy, limit=8)
    assert decision is not None and decision[0] == 5
    quiet = Load(lag=0, records_per_second=0, bytes_per_second=0)
    assert s.decide(1.0, 5, quiet, limit=8) is None
    assert s.decide(9.5, 5, quiet, limit=8) is None  # 9.5 s since it grew: not yet
    decision = s.decide(10.5, 5, quiet, limit=8)
    assert decision is not None and decision[0] == 1
    assert decision[1].startswith("no lag for 10s")


def test_a_share_of_zero_grows_from_the_groups_lag_and_returns_to_zero() -> None:
    """A worker process whose share of MinimumPollers is 0 runs no poller; the group's lag
    (read without a consumer) grows it, and after the burst it gives every poller back."""
    s = LagScaler(PoolBounds(0, 4), capacity_bytes=5e6, up_after=2.0, cooldown=5.0, batch_size=100)
    idle = Load(lag=0, records_per_second=0, bytes_per_second=0)
    assert s.decide(0.0, 0, idle, limit=8) is None
    backlog = Load(lag=5_000, records_per_second=0, bytes_per_second=0)
    assert s.decide(1.0, 0, backlog, limit=8) is None
    assert s.decide(3.0, 0, backlog, limit=8) == (1, "lag 5000 records for 2s, not draining")
    assert s.decide(4.0, 1, idle, limit=8) is None
    decision = s.decide(9.5, 1, idle, limit=8)
    assert decision is not None and decision[0] == 0


def test_pool_bounds_refuse_a_minimum_above_the_maximum() -> None:
    with pytest.raises(ValueError, match="minimum"):
        PoolBounds(3, 2)
