"""PollerPool: a mapping's pollers, kept between a minimum and a maximum.

The pool runs ``count`` copies of one poller coroutine and resizes on request; the rule that
decides the size lives with each source (SQS: backlog and errors; Kafka: lag), since only
the source knows what "more work waiting" means. Every change is logged with its reason and
shown in ``esm_pollers{kind="current"|"desired"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog
from prometheus_client import Gauge

#: makes one poller; it returns soon after its ``retire`` event is set (between two reads)
PollerFactory = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
_Group = TypeVar("_Group")


class PoolGauges(Protocol):
    """Where a pool shows its size: a mapping's esm_pollers (MappingMetrics), or a poller
    group's esm_poller_group_pollers (GroupMetrics)."""

    @property
    def log_context(self) -> dict[str, str]: ...

    def pollers(self, kind: str) -> Gauge: ...


@dataclass(frozen=True, slots=True)
class PoolBounds:
    """A pool's size limits. A minimum of 0 is a worker process's share of a mapping whose
    MinimumPollers another worker holds: it runs no poller until lag shows up."""

    minimum: int
    maximum: int

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(f"pool bounds need 0 <= minimum <= maximum, not {self}")

    def clamp(self, n: int) -> int:
        return max(self.minimum, min(self.maximum, n))


class PollerPool:
    def __init__(
        self,
        factory: PollerFactory,
        bounds: PoolBounds,
        metrics: PoolGauges,
        name: str = "poller",
    ) -> None:
        self._factory = factory
        self.bounds = bounds
        self._metrics = metrics
        self._name = name
        self._tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        # retired pollers still finishing their work (Kafka: in-flight batches, a commit)
        self._retiring: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("esmd.scaling").bind(**metrics.log_context)

    @property
    def size(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self.resize(self.bounds.minimum, "start: the minimum")

    def resize(self, desired: int, reason: str) -> int:
        """Grow or shrink to ``desired`` (clamped to the bounds); returns the new size."""
        target = self.bounds.clamp(desired)
        self._metrics.pollers("desired").set(target)
        if target == self.size:
            return target
        self._log.info("scaling pollers", before=self.size, after=target, reason=reason)
        while self.size < target:
            retire = asyncio.Event()
            task = asyncio.create_task(self._factory(retire), name=f"{self._name} {self.size}")
            self._tasks.append((task, retire))
        while self.size > target:
            task, retire = self._tasks.pop()
            retire.set()  # it finishes its read first: nothing is left hanging
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self._metrics.pollers("current").set(self.size)
        return target

    async def retire_all(self) -> None:
        """Retire every poller and wait for each to finish its work (a gentle close)."""
        for _, retire in self._tasks:
            retire.set()
        tasks = [task for task, _ in self._tasks] + list(self._retiring)
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._metrics.pollers("current").set(0)

    async def close(self) -> None:
        tasks = [task for task, _ in self._tasks] + list(self._retiring)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._metrics.pollers("current").set(0)


@dataclass(frozen=True, slots=True)
class Load:
    """What a pool's pollers measured over one evaluation period."""

    lag: int  # records waiting (Kafka: high watermark minus the lanes' done positions)
    records_per_second: float
    bytes_per_second: float


class LagScaler:
    """The rule of a lag-driven pool (Kafka): how many pollers the load needs.

    - Throughput: a poller is counted at ``capacity`` bytes/s (AWS: 5 MB/s), so the pool
      never has fewer than the measured rate needs.
    - Up: lag that lasts ``up_after`` seconds and does not shrink doubles the pool (at least
      to the throughput need); then it waits ``up_after`` again, for the group to rebalance
      and the new pollers to show their effect.
    - Down: only after ``cooldown`` seconds without lag, straight to what the throughput
      needs, so a burst that ended gives back its pollers in one step.
    - Never more than ``limit`` (Kafka: the topic's partitions; a poller past that is idle).

    Lag is "sustained" when it exceeds both one batch and one period's worth of records at
    the current rate: a steady stream always has a batching window of records in flight.
    """

    def __init__(
        self,
        bounds: PoolBounds,
        *,
        capacity_bytes: float,
        up_after: float,
        cooldown: float,
        batch_size: int,
    ) -> None:
        self.bounds = bounds
        self._capacity = capacity_bytes
        self._up_after = up_after
        self._cooldown = cooldown
        self.batch_size = batch_size
        self._lag_since: float | None = None
        self._lag_at_last_step = 0
        self._calm_since: float | None = None

    def decide(self, now: float, current: int, load: Load, limit: int) -> tuple[int, str] | None:
        """A new pool size and its reason, or None to stay."""
        top = max(self.bounds.minimum, min(self.bounds.maximum, limit))
        need = -(-int(load.bytes_per_second) // int(self._capacity))  # 0 when nothing flows
        if load.lag > max(self.batch_size, load.records_per_second):
            self._calm_since = None
            if self._lag_since is None:
                self._lag_since, self._lag_at_last_step = now, load.lag
                return None
            lasting = now - self._lag_since >= self._up_after
            shrinking = load.lag < 0.8 * self._lag_at_last_step
            if lasting and not shrinking and current < top:
                self._lag_since, self._lag_at_last_step = now, load.lag
                wanted = min(top, max(current * 2, need, 1))
                return wanted, f"lag {load.lag} records for {self._up_after:g}s, not draining"
            if lasting:
                self._lag_since, self._lag_at_last_step = now, load.lag
            return None
        self._lag_since = None
        if self._calm_since is None:
            self._calm_since = now
        wanted = max(self.bounds.minimum, min(top, need))
        rate = f"{load.bytes_per_second / 1e6:.2f} MB/s needs {need} at {self._capacity / 1e6:g}"
        if wanted > current:
            self._calm_since = now  # the cooldown counts from the last growth
            return wanted, f"throughput: {rate} MB/s each"
        if wanted < current and now - self._calm_since >= self._cooldown:
            self._calm_since = now
            return wanted, f"no lag for {self._cooldown:g}s; {rate} MB/s each"
        if current > top:
            return top, f"above the limit of {limit} (partitions)"
        return None


class PollerGroups:
    """The poller groups of one process (PollerGroupName), by name: the first mapping of a
    group makes it, the last one to leave drops it. The daemon owns one and hands it to every
    mapping; what a group is belongs to its source (service/sources/kafka_groups.py), so
    this registry stays free of any source's imports."""

    def __init__(self) -> None:
        self._groups: dict[str, object] = {}

    def get(self, name: str, make: Callable[[], _Group], kind: type[_Group]) -> _Group:
        found = self._groups.get(name)
        if found is None or not isinstance(found, kind):
            made = self._groups[name] = make()
            return made
        return found

    def drop(self, name: str, group: object) -> None:
        if self._groups.get(name) is group:
            del self._groups[name]

    def __len__(self) -> int:
        return len(self._groups)
