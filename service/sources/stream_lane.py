"""KeyLane: one ordered share of a shard (a ParallelizationFactor slot) through the pipeline.

A shard worker hashes each record's partition key (Kinesis) or item key (DynamoDB) to one of
ParallelizationFactor lanes, so records of a key stay in order while up to that many batches
of the shard are in flight. A lane batches its records (BatchSize, the batching window, the
6 MB cap) and delivers one batch at a time through :class:`StreamDelivery`.

``first_pending`` is what the worker's checkpoint reads: the ordinal of the lane's earliest
record not yet delivered, filtered or given up on (None when the lane has nothing pending).

With TumblingWindowInSeconds, records are grouped by the window their arrival time falls in;
each invocation carries the window and the ``state`` the previous one returned, and a final
invocation (``isFinalInvokeForWindow``) closes the window. The window's records count as
pending until that final invocation succeeds, so a restart replays the whole window.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from service.config import MAX_PAYLOAD_BYTES
from service.sources.stream_delivery import Abandoned, Item, StreamDelivery

_COMPACT_AT = 4096


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyLane:
    def __init__(
        self,
        delivery: StreamDelivery,
        batch_size: int,
        window_seconds: float,
        envelope_bytes: int,
        on_taken: Callable[[], None],
        on_done: Callable[[], int],
        durable: Callable[[int], Awaitable[None]],
        tumbling: TumblingWindow | None = None,
    ) -> None:
        self._delivery = delivery
        self._batch_size = batch_size
        self._window = window_seconds
        self._budget = MAX_PAYLOAD_BYTES - envelope_bytes
        self._on_taken = on_taken
        self._on_done = on_done
        self._durable = durable
        # checkpoint writes that will cover the last two batches: a batch starts only once
        # the one two before it is durable, so a crash replays at most two batches a lane
        self._marks: list[int] = []
        self._tumbling = tumbling
        self._items: list[Item] = []
        self._head = 0
        self._inflight_first: int | None = None
        self._opened_at = 0.0
        self._wakeup = asyncio.Event()
        self._stopping = False

    # --- feeding and reading, from the worker ---------------------------------------------

    def put(self, items: list[Item]) -> None:
        if self._head == len(self._items):
            self._opened_at = time.monotonic()
        if self._head >= _COMPACT_AT and self._head * 2 >= len(self._items):
            del self._items[: self._head]
            self._head = 0
        self._items.extend(items)
        self._wakeup.set()

    @property
    def queued(self) -> int:
        return len(self._items) - self._head

    def first_pending(self) -> int | None:
        if self._inflight_first is not None:
            return self._inflight_first
        if self._tumbling is not None and self._tumbling.first is not None:
            return self._tumbling.first
        return self._items[self._head][2] if self._head < len(self._items) else None

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver batches until stopped; a batch abandoned by the stop stays pending."""
        try:
            while not self._stopping:
                wait = self._until_ready()
                if wait is None:
                    await self._deliver(self._take())
                    continue
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
        except Abandoned:
            pass

    def _until_ready(self) -> float | None:
        """None when a batch should go now; else how long to wait (inf: for records)."""
        queued = self.queued
        if self._tumbling is not None and self._tumbling.due(self._items, self._head):
            return None
        if not queued:
            return self._tumbling.until_end() if self._tumbling is not None else 3600.0
        if queued >= self._batch_size or self._window <= 0:
            return None
        return max(0.0, self._opened_at + self._window - time.monotonic()) or None

    def _take(self) -> list[Item]:
        """Up to BatchSize records within the payload cap (and the current window)."""
        items, i, end = (
            self._items,
            self._head,
            min(len(self._items), self._head + self._batch_size),
        )
        if self._tumbling is not None:
            end = self._tumbling.clip(items, i, end)
        budget = self._budget
        while i < end:
            size = items[i][1]
            if size > budget and i > self._head:
                break
            budget -= size
            i += 1
        batch = items[self._head : i]
        self._head = i
        if batch:
            reason = "size" if len(batch) == self._batch_size else "bytes" if i < end else "window"
            self._delivery.metrics.batch_closed(len(batch), reason)
            self._inflight_first = (
                self._tumbling.first
                if self._tumbling and self._tumbling.first is not None
                else batch[0][2]
            )
        if self._head < len(items):
            self._opened_at = time.monotonic()
        self._on_taken()
        return batch

    async def _deliver(self, batch: list[Item]) -> None:
        if len(self._marks) == 2:
            await self._durable(self._marks.pop(0))
        if self._tumbling is None:
            await self._delivery.deliver(batch, self._progress)
        else:
            await self._tumbling.deliver(self._delivery, batch, self._progress)
        self._inflight_first = None
        self._marks.append(self._on_done())

    def _progress(self, ordinal: int | None) -> None:
        if self._tumbling is None or self._tumbling.first is None:
            self._inflight_first = ordinal


class TumblingWindow:
    """The window and ``state`` of one lane (TumblingWindowInSeconds)."""

    def __init__(
        self,
        seconds: int,
        arrival: Callable[[dict[str, Any]], float],
        shard_id: str,
        source_arn: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._seconds = seconds
        self._arrival = arrival
        self._shard_id = shard_id
        self._arn = source_arn
        self._clock = clock
        self.start: float | None = None
        self.first: int | None = None  # ordinal of the window's first record: pending
        self.state: dict[str, Any] = {}
        self._log = structlog.get_logger("esmd.window").bind(shard=shard_id)

    def window_of(self, record: dict[str, Any]) -> float:
        t = self._arrival(record)
        return t - t % self._seconds

    def due(self, items: list[Item], head: int) -> bool:
        """The open window must close: a later window's record is next, or time is up."""
        if self.start is None:
            return False
        if head < len(items) and self.window_of(items[head][0]) != self.start:
            return True
        return head >= len(items) and self._clock() >= self.start + self._seconds

    def until_end(self) -> float:
        if self.start is None:
            return 3600.0
        return max(0.05, self.start + self._seconds - self._clock())

    def clip(self, items: list[Item], i: int, end: int) -> int:
        """End of the run of items[i:end] in the window of items[i] (the open one)."""
        if i >= end:
            return i
        window = self.window_of(items[i][0]) if self.start is None else self.start
        j = i
        while j < end and self.window_of(items[j][0]) == window:
            j += 1
        return j

    async def deliver(
        self, delivery: StreamDelivery, batch: list[Item], progress: Callable[[int | None], None]
    ) -> None:
        """A batch of the open window, or (empty batch) the final invocation closing it."""
        if not batch:
            await self._close(delivery, progress)
            return
        if self.start is None:
            self.start = self.window_of(batch[0][0])
            self.first = batch[0][2]
        payload = await delivery.deliver(batch, progress, self._extra(final=False))
        if isinstance(payload, dict) and isinstance(payload.get("state"), dict):
            self.state = payload["state"]

    async def _close(
        self, delivery: StreamDelivery, progress: Callable[[int | None], None]
    ) -> None:
        if self.start is None:
            return
        await delivery.deliver([], progress, self._extra(final=True))
        self.start, self.first, self.state = None, None, {}

    def _extra(self, *, final: bool) -> dict[str, Any]:
        assert self.start is not None
        return {
            "window": {"start": _iso(self.start), "end": _iso(self.start + self._seconds)},
            "state": self.state,
            "shardId": self._shard_id,
            "eventSourceARN": self._arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": False,
        }
