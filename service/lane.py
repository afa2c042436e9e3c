"""Lane: the ordered path of one partition (or shard, or message group) through the pipeline.

A lane takes raw records from its poller in source order, lets the source's codec turn them
into Lambda records and filter them, batches the kept ones, and invokes one batch at a time,
so records of a lane reach the target in order with at most one batch in flight. Lanes of a
mapping run concurrently.

``done_upto`` is the lane's checkpoint: every record before that position was delivered,
filtered out, or given up on (and accepted by the OnFailure destination when there is one);
nothing at or after it was acknowledged. The poller commits it. Retries, record age, partial
batch responses and bisection happen inside :meth:`Invoker.process`, so a batch leaves the
lane only settled or abandoned, never half-done.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.batching import Batch, BatchBuilder, CloseReason
from service.invoke import Invoker, Outcome
from service.metrics import MappingMetrics

if TYPE_CHECKING:
    from service.filters import FilterCriteria

#: (Lambda record, its size in the event JSON, its position)
Kept = tuple[dict[str, Any], int, int]


class Codec(Protocol):
    """What a source supplies to a lane: record conversion, filtering and the event envelope."""

    envelope_bytes: int

    def decode(
        self, raws: Sequence[Any], filters: FilterCriteria | None
    ) -> tuple[list[Kept], int, int]:
        """Convert a chunk: (kept records, number filtered out, position after the chunk)."""
        ...

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]: ...


class LaneStopped(Exception):
    """Unwinds a lane whose in-flight batch was abandoned by a stop."""


class Lane:
    def __init__(
        self,
        key: str,
        codec: Codec,
        filters: FilterCriteria | None,
        builder: BatchBuilder,
        invoker: Invoker,
        metrics: MappingMetrics,
        *,
        max_queued: int = 20_000,
        on_backpressure: Callable[[bool], None] = lambda paused: None,
    ) -> None:
        self.key = key
        self.done_upto: int | None = None
        self._codec = codec
        self._filters = filters
        self._builder = builder
        self._invoker = invoker
        self._metrics = metrics
        self._max_queued = max_queued
        self._on_backpressure = on_backpressure
        self._chunks: collections.deque[Sequence[Any]] = collections.deque()
        self._queued = 0
        self._paused = False
        self._consumed_upto: int | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("esmd.lane").bind(mapping=metrics.mapping, lane=key)

    # --- feeding, from the poller ---------------------------------------------------------

    def put(self, raws: Sequence[Any]) -> None:
        if self._stopping or not raws:
            return  # not acknowledged: the next owner of the lane reads them again
        self._chunks.append(raws)
        self._queued += len(raws)
        self._wakeup.set()
        if not self._paused and self._queued >= self._max_queued:
            self._paused = True
            self._on_backpressure(True)

    @property
    def queued(self) -> int:
        return self._queued

    # --- running ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lane {self.key}")

    async def stop(self, grace: float) -> None:
        """Stop taking records; let the in-flight batch finish for up to ``grace`` seconds."""
        self._stopping = True
        self._wakeup.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=grace)
        if not done:
            self._log.warning("abandoning in-flight batch", grace=grace)
            self._task.cancel("lane stop: grace period over")
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        try:
            while not self._stopping:
                if self._chunks:
                    await self._process(self._take())
                else:
                    await self._wait_for_records()
        except LaneStopped:
            pass
        except Exception:
            self._log.exception("lane failed")
            raise

    def _take(self) -> Sequence[Any]:
        chunk = self._chunks.popleft()
        self._queued -= len(chunk)
        if self._paused and self._queued <= self._max_queued // 2:
            self._paused = False
            self._on_backpressure(False)
        return chunk

    async def _wait_for_records(self) -> None:
        timeout = self._builder.until_next()
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            await self._invoke(self._builder.flush("window"))
            self._settle()

    async def _process(self, raws: Sequence[Any]) -> None:
        kept, filtered, end = self._codec.decode(raws, self._filters)
        self._metrics.polled.inc(len(raws))
        if filtered:
            self._metrics.filtered_out.inc(filtered)
        builder = self._builder
        i, n = 0, len(kept)
        while i < n:
            i = builder.fill(kept, i)
            if builder.full:
                await self._invoke(builder.flush("size"))
            elif i < n:
                await self._invoke(builder.flush("bytes"))
        self._consumed_upto = end
        self._settle()
        if builder.until_next() == 0:
            await self._invoke(builder.flush("window"))
            self._settle()

    def _settle(self) -> None:
        """Everything consumed is done, except the open batch."""
        first = self._builder.first_position
        self.done_upto = first if first is not None else self._consumed_upto

    async def _invoke(self, batch: Batch) -> None:
        if self._stopping:
            raise LaneStopped
        self.done_upto = batch.first_position
        self._metrics.batch_closed(len(batch), batch.reason)
        if await self._invoker.process(batch) is Outcome.ABANDONED:
            raise LaneStopped
        self.done_upto = batch.last_position + 1
        if self._consumed_upto is None or self._consumed_upto < self.done_upto:
            self._consumed_upto = self.done_upto


__all__ = ["CloseReason", "Codec", "Kept", "Lane", "LaneStopped"]
