from __future__ import annotations

import asyncio

from service.metrics import Metrics
from service.scaling import PollerPool, PoolBounds


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
