"""How an SQS mapping scales: Lambda's two capacity models, in concurrent invocations.

Lambda sizes an SQS mapping by how many batches it invokes at once; its pollers follow.

- **On demand** (no ``ProvisionedPollerConfig``, or ``{}``): five concurrent batches to
  start; while messages are available, up to 300 more per minute; never above 1,000 or
  ``ScalingConfig.MaximumConcurrency``; back to five once the queue has been idle a minute.
- **Provisioned** (``ProvisionedPollerConfig``): MinimumPollers (default 2) to
  MaximumPollers (default 200) pollers, each carrying up to 10 concurrent invocations and
  1 MB/s, so concurrency is pollers x 10; while messages are available, up to 1,000 more
  concurrent invocations per minute (three times on demand's rate), never above 20,000.

In esmd a poller is one long-polling receiver, and concurrency is the number of batches the
queue's lane may have in flight (:class:`Concurrency`). :class:`SqsScaler` decides the
concurrency every ``scaling.sqs_period_seconds``; the receivers follow it, one per 10
concurrent invocations (and, provisioned, one per 1 MB/s received). AWS's minute is
``scaling.sqs_minute_seconds`` long (60 s), so tests and benchmarks can compress time
without changing the shape of the ramp.

Sources: the Lambda developer guide, "Configuring scaling behavior for SQS event source
mappings" (services-sqs-scaling), and the API reference's ProvisionedPollerConfig.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from service.config import MappingConfig, ProvisionedPollers

#: on demand: concurrent batches to start with and to come back to
ON_DEMAND_START = 5
#: on demand: added concurrent invocations per minute while messages are available
ON_DEMAND_PER_MINUTE = 300
#: on demand: the most concurrent invocations of one mapping (the issue and the older guide;
#: the guide now also mentions 1,250)
ON_DEMAND_MAX = 1000
#: provisioned: AWS's defaults for SQS (Kafka's MinimumPollers default is 1)
PROVISIONED_MIN_DEFAULT = 2
#: provisioned: concurrent invocations one poller carries
INVOKES_PER_POLLER = 10
#: provisioned: bytes per second one poller carries (1 MB/s)
BYTES_PER_POLLER = 1_000_000
#: provisioned: added concurrent invocations per minute while messages are available
PROVISIONED_PER_MINUTE = 1000
#: provisioned: the most concurrent invocations of one mapping
PROVISIONED_MAX_CONCURRENCY = 20_000


def provisioned_pollers(cfg: MappingConfig) -> ProvisionedPollers | None:
    """The mapping's ProvisionedPollerConfig, or None for on demand (absent or ``{}``)."""
    given = cfg.ProvisionedPollerConfig
    return given if given is not None and given.model_fields_set else None


def minimum_pollers(given: ProvisionedPollers) -> int:
    """MinimumPollers as AWS reads it for SQS: 2 unless given (Kafka's default is 1)."""
    if "MinimumPollers" in given.model_fields_set:
        return given.MinimumPollers
    return PROVISIONED_MIN_DEFAULT


def provisioned_view(cfg: MappingConfig) -> dict[str, int] | None:
    """ProvisionedPollerConfig as the API shows an SQS mapping's: AWS's SQS defaults filled
    in, and nothing for on demand (``{}``), so a read-modify-write keeps the mode."""
    given = provisioned_pollers(cfg)
    if given is None:
        return None
    return {"MinimumPollers": minimum_pollers(given), "MaximumPollers": given.MaximumPollers}


@dataclass(frozen=True, slots=True)
class Capacity:
    """The concurrency bounds and growth rate of one SQS mapping (or one worker's share)."""

    provisioned: bool
    floor: int  # concurrency to start with and to shrink back to
    ceiling: int  # the most concurrency
    per_minute: int  # concurrency added per minute while messages are available
    max_pollers: int  # provisioned: MaximumPollers (throughput may need more than ceiling/10)

    @property
    def step(self) -> int:
        """Concurrency moves in whole pollers when provisioned, one batch on demand."""
        return INVOKES_PER_POLLER if self.provisioned else 1

    def pollers(self, concurrency: int, bytes_per_second: float = 0.0) -> int:
        """Receivers for a concurrency: one per 10 concurrent invocations and, provisioned,
        at least one per 1 MB/s received, within MinimumPollers..MaximumPollers."""
        need = max(1, math.ceil(concurrency / INVOKES_PER_POLLER))
        if not self.provisioned:
            return need
        need = max(need, math.ceil(bytes_per_second / BYTES_PER_POLLER))
        return min(max(need, self.floor // INVOKES_PER_POLLER), self.max_pollers)

    def share(self, part: Callable[[int], int]) -> Capacity:
        """One worker process's share, ``part`` dividing a whole-daemon figure (see
        Worker.part); every share keeps at least one poller's worth, so it can grow."""

        def divide(value: int) -> int:
            return max(1, part(value // self.step)) * self.step

        floor = divide(self.floor)
        return replace(
            self,
            floor=floor,
            ceiling=max(floor, divide(self.ceiling)),
            per_minute=max(1, part(self.per_minute)),
            max_pollers=max(1, part(self.max_pollers)),
        )


def capacity_for(cfg: MappingConfig) -> Capacity:
    """AWS's figures for the mapping's mode (see the module docstring)."""
    provisioned = provisioned_pollers(cfg)
    if provisioned is None:
        limit = cfg.ScalingConfig.MaximumConcurrency if cfg.ScalingConfig else None
        ceiling = min(ON_DEMAND_MAX, limit or ON_DEMAND_MAX)
        pollers = math.ceil(ceiling / INVOKES_PER_POLLER)
        return Capacity(
            False, min(ON_DEMAND_START, ceiling), ceiling, ON_DEMAND_PER_MINUTE, pollers
        )
    floor = minimum_pollers(provisioned) * INVOKES_PER_POLLER
    ceiling = min(provisioned.MaximumPollers * INVOKES_PER_POLLER, PROVISIONED_MAX_CONCURRENCY)
    return Capacity(
        True, floor, max(floor, ceiling), PROVISIONED_PER_MINUTE, provisioned.MaximumPollers
    )


class Concurrency:
    """A counting limit on batches in flight whose size can change while they run.

    It is what the lane's ``slots`` are for an SQS queue. Shrinking never interrupts a batch:
    the limit applies to the next acquire. ``peak`` is the most held at once since the last
    :meth:`take_peak`, what the scaler shrinks to.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held = 0
        self._peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def held(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def resize(self, limit: int) -> None:
        self._limit = limit
        self._wake()

    def take_peak(self) -> int:
        peak, self._peak = self._peak, self._held
        return peak

    async def acquire(self) -> None:
        if self._held >= self._limit or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # _wake counted us in
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # granted and cancelled at once: give it on
                else:
                    self._waiters.remove(waiter)
                raise
            return
        self._take()

    def release(self) -> None:
        self._held -= 1
        self._wake()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def _take(self) -> None:
        self._held += 1
        self._peak = max(self._peak, self._held)

    def _wake(self) -> None:
        while self._waiters and self._held < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class Observed:
    """What the SQS poller saw over one evaluation period."""

    #: receives came back full, or received messages wait for a slot; None: no receive
    #: completed and nothing waits (a starved process, a slow endpoint), so no evidence
    available: bool | None
    failed_batches: int
    peak: int  # most batches in flight at once
    bytes_per_second: float = 0.0


class SqsScaler:
    """Lambda's SQS rule in time steps: grow at the mode's rate while messages are
    available and invocations succeed; after a whole minute without a backlog, shrink to the
    most batches that minute had in flight (at least the floor).

    Growth is credited by elapsed time (``per_minute`` x elapsed / minute), so any period
    gives the same ramp; provisioned growth comes in whole pollers (10 at a time).
    """

    def __init__(self, capacity: Capacity, minute_seconds: float = 60.0) -> None:
        self.capacity = capacity
        self._minute = minute_seconds
        self._credit = 0.0
        self._last: float | None = None
        self._backlog = False  # what the last period with evidence showed
        self._calm_since: float | None = None
        self._calm_peak = 0

    def decide(self, now: float, current: int, seen: Observed) -> tuple[int, str] | None:
        """A new concurrency and its reason, or None to stay. A period without evidence
        (``available`` None) continues the last state: during a backlog its time is credited
        to the next period that has some; otherwise it counts toward the idle minute."""
        if seen.available is None and self._backlog:
            return None
        backlog = bool(seen.available)
        elapsed = now - self._last if self._last is not None else 0.0
        self._last, self._backlog = now, backlog
        if backlog:
            self._calm_since = None
            return self._grow(current, seen, elapsed)
        return self._shrink(now, current, seen)

    def _grow(self, current: int, seen: Observed, elapsed: float) -> tuple[int, str] | None:
        cap = self.capacity
        if seen.failed_batches or current >= cap.ceiling:
            self._credit = 0.0
            return None
        self._credit += cap.per_minute * elapsed / self._minute
        grow = int(self._credit // cap.step) * cap.step
        if grow <= 0:
            return None
        self._credit -= grow
        wanted = min(cap.ceiling, current + grow)
        return wanted, f"messages available: +{wanted - current} (up to {cap.per_minute}/min)"

    def _shrink(self, now: float, current: int, seen: Observed) -> tuple[int, str] | None:
        self._credit = 0.0
        if self._calm_since is None:
            self._calm_since, self._calm_peak = now, seen.peak
            return None
        self._calm_peak = max(self._calm_peak, seen.peak)
        if now - self._calm_since < self._minute:
            return None
        peak = self._calm_peak
        self._calm_since, self._calm_peak = now, 0
        cap = self.capacity
        wanted = max(cap.floor, min(current, cap.step * math.ceil(peak / cap.step)))
        if wanted >= current:
            return None
        return wanted, f"no backlog for a minute ({self._minute:g} s); at most {peak} in flight"
