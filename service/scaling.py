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
from typing import Any

import structlog

from service.metrics import MappingMetrics

#: makes one poller; it returns soon after its ``retire`` event is set (between two reads)
PollerFactory = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class PoolBounds:
    minimum: int
    maximum: int

    def clamp(self, n: int) -> int:
        return max(self.minimum, min(self.maximum, n))


class PollerPool:
    def __init__(
        self,
        factory: PollerFactory,
        bounds: PoolBounds,
        metrics: MappingMetrics,
        name: str = "poller",
    ) -> None:
        self._factory = factory
        self.bounds = bounds
        self._metrics = metrics
        self._name = name
        self._tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = []
        self._log = structlog.get_logger("esmd.scaling").bind(mapping=metrics.mapping)

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
            self._tasks.pop()[1].set()  # it finishes its read first: nothing is left hanging
        self._metrics.pollers("current").set(self.size)
        return target

    async def close(self) -> None:
        for task, _ in self._tasks:
            task.cancel()
        await asyncio.gather(*(task for task, _ in self._tasks), return_exceptions=True)
        self._tasks.clear()
        self._metrics.pollers("current").set(0)
