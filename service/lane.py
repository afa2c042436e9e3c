"""Lane: the one path records take from a source to the target, for every source kind.

A lane takes raw records from its poller in source order, lets the source's codec convert and
filter them, batches the kept ones (:class:`BatchBuilder`) and hands each batch to the
:class:`Invoker`, which applies every delivery rule. Lanes differ only in how many batches
they may have in flight:

- **ordered** (a Kafka partition, a stream shard's key share, a FIFO message group): one batch
  at a time, so records reach the target in order;
- **unordered** (a standard SQS queue, an MQ queue): as many batches as ``slots`` (the
  mapping's MaximumConcurrency) allows.

Acknowledging is the source's business, in one of two ways. Position sources (Kafka,
streams) read :attr:`Lane.done_upto`: every record before it was delivered, filtered out or
given up on (and accepted by the OnFailure destination); nothing at or after it was
acknowledged. Message sources (SQS, MQ) get an :class:`Acker`, told which records were
filtered out, which batch settled (and which of its records were released back to the
source), and which were abandoned by a stop.

With a :class:`~service.windows.TumblingWindow` (Kinesis, DynamoDB Streams), batches do not
span windows, each invocation carries the window's ``state``, and a final invocation closes
the window; its records stay pending until then.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.batching import Batch, BatchBuilder, CloseReason
from service.invoke import Abandoned, Invoker, Record
from service.metrics import MappingMetrics

if TYPE_CHECKING:
    from service.filters import FilterCriteria
    from service.windows import TumblingWindow

#: (Lambda record, its size in the event JSON, its position)
Kept = tuple[dict[str, Any], int, int]


class Slots(Protocol):
    """What limits an unordered lane's batches in flight: an ``asyncio.Semaphore``, or a
    limit that a scaler resizes (service/sources/sqs_scaling.py's Concurrency)."""

    async def acquire(self) -> Any: ...

    def release(self) -> None: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: Any) -> Any: ...


class Codec(Protocol):
    """What a source supplies to a lane: record conversion, filtering and the event envelope."""

    envelope_bytes: int

    def decode(
        self, raws: Sequence[Any], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        """Convert a chunk: (kept records, the raws filtered out, position after the chunk)."""
        ...

    def position(self, raw: Any) -> int:
        """A raw record's position in the lane (offset, ordinal)."""
        ...

    def make_event(self, records: list[Record]) -> dict[str, Any]: ...


class Acker(Protocol):
    """How a message source (SQS, MQ) acknowledges; position sources read ``done_upto``."""

    def filtered(self, raws: list[Any]) -> None:
        """Filtered out: acknowledge (SQS: delete)."""
        ...

    def settled(self, records: list[Record], released: list[Record]) -> None:
        """A batch settled: acknowledge all but ``released``, which go back to the source."""
        ...

    def abandoned(self, records: list[Any]) -> None:
        """Never invoked or not settled before a stop: give back unacknowledged."""
        ...


class LaneStopped(Exception):
    """Unwinds an ordered lane whose in-flight batch was abandoned by a stop."""


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
        acker: Acker | None = None,
        ordered: bool = True,
        slots: Slots | None = None,
        fifo: bool = False,
        window: TumblingWindow | None = None,
        max_queued: int = 20_000,
        on_backpressure: Callable[[bool], None] = lambda paused: None,
        on_settled: Callable[[], None] = lambda: None,
        before_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.key = key
        self._codec = codec
        self._filters = filters
        self._builder = builder
        self._invoker = invoker
        self._metrics = metrics
        self._acker = acker
        self._ordered = ordered
        self._slots = slots
        self._fifo = fifo  # a released record releases everything queued behind it
        self._window = window
        self._max_queued = max_queued
        self._on_backpressure = on_backpressure
        self._on_settled = on_settled
        self._before_batch = before_batch
        self._chunks: collections.deque[Sequence[Any]] = collections.deque()
        self._chunk_starts: collections.deque[int] = collections.deque()
        self._queued = 0
        self._paused = False
        self._consumed_upto: int | None = None
        self._inflight_first: int | None = None
        self._inflight: set[asyncio.Task[bool]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("esmd.lane").bind(mapping=metrics.mapping, lane=key)

    # --- feeding, from the poller ---------------------------------------------------------

    def put(self, raws: Sequence[Any]) -> None:
        if self._stopping or not raws:
            if raws and self._acker is not None:
                self._acker.abandoned(list(raws))
            return  # not acknowledged: the next owner of the lane reads them again
        self._chunks.append(raws)
        if self._ordered:
            self._chunk_starts.append(self._codec.position(raws[0]))
        self._queued += len(raws)
        self._wakeup.set()
        if not self._paused and self._queued >= self._max_queued:
            self._paused = True
            self._on_backpressure(True)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def paused(self) -> bool:
        """Over ``max_queued``: the poller should stop reading for this lane."""
        return self._paused

    def failure(self) -> BaseException | None:
        """The exception the lane died of (a bug), if it did."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def idle(self) -> bool:
        """Nothing queued, batched or in flight: the lane may be retired."""
        return (
            not self._chunks
            and not len(self._builder)
            and self._inflight_first is None
            and not self._inflight
            and (self._window is None or self._window.first is None)
        )

    def first_pending(self) -> int | None:
        """Position of the first record not yet settled; None when everything put is."""
        candidates = [
            p
            for p in (
                self._inflight_first,
                self._window.first if self._window is not None else None,
                self._builder.first_position,
                self._chunk_starts[0] if self._chunk_starts else None,
            )
            if p is not None
        ]
        return min(candidates) if candidates else None

    @property
    def done_upto(self) -> int | None:
        """The lane's checkpoint (ordered lanes): every record before it is settled."""
        first = self.first_pending()
        return first if first is not None else self._consumed_upto

    # --- running ------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run the lane; its poller watches the task (a lane that dies of a bug must take
        the poller down, to be restarted, rather than hold its records forever)."""
        self._task = asyncio.create_task(self._run(), name=f"lane {self.key}")
        return self._task

    async def stop(self, grace: float) -> None:
        """Stop taking records; let in-flight batches finish for up to ``grace`` seconds;
        give back what was never settled."""
        self._stopping = True
        self._wakeup.set()
        tasks = {t for t in (self._task, *self._inflight) if t is not None}
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                self._log.warning("abandoning in-flight batch", grace=grace)
                for task in pending:
                    task.cancel("lane stop: grace period over")
                await asyncio.gather(*pending, return_exceptions=True)
        if self._acker is not None:
            leftovers = [r for chunk in self._chunks for r in chunk]
            leftovers += self._builder.flush("stop").records
            self._chunks.clear()
            if leftovers:
                self._acker.abandoned(leftovers)

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
        if self._ordered:
            self._chunk_starts.popleft()
        self._queued -= len(chunk)
        if self._paused and self._queued <= self._max_queued // 2:
            self._paused = False
            self._on_backpressure(False)
        return chunk

    async def _wait_for_records(self) -> None:
        timeout = self._builder.until_next()
        window = self._window
        if window is not None and window.start is not None:
            end = window.until_end()
            timeout = end if timeout is None else min(timeout, end)
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            if len(self._builder):
                await self._invoke(self._builder.flush("window"))
            if window is not None and window.over():
                await self._close_window()

    async def _process(self, raws: Sequence[Any]) -> None:
        kept, filtered, end = self._codec.decode(raws, self._filters)
        if filtered:
            self._metrics.filtered_out.inc(len(filtered))
            if self._acker is not None:
                self._acker.filtered(filtered)
        if self._window is not None:
            await self._fill_windowed(kept)
        else:
            await self._fill(kept, 0, len(kept))
        if self._ordered:
            # only now: a stop while filling leaves the unbatched rest unacknowledged
            self._consumed_upto = end
        builder = self._builder
        if len(builder) and builder.until_next() == 0:
            await self._invoke(builder.flush("window"))

    async def _fill(self, kept: list[Kept], i: int, n: int) -> None:
        builder = self._builder
        while i < n:
            i = builder.fill(kept, i, n)
            if builder.full:
                gave_back = await self._invoke(builder.flush("size"))
            elif i < n:
                gave_back = await self._invoke(builder.flush("bytes"))
            else:
                return
            if gave_back and i < n and self._acker is not None:
                # FIFO: the rest of this chunk is behind the failed record too
                self._acker.settled([], [k[0] for k in kept[i:n]])
                return

    async def _fill_windowed(self, kept: list[Kept]) -> None:
        """Batch run by run of records in the same tumbling window; a record of a later
        window closes the open one first."""
        window = self._window
        assert window is not None
        i, n = 0, len(kept)
        while i < n:
            starts = window.window_of(kept[i][0])
            if window.start is not None and starts != window.start:
                if len(self._builder):
                    await self._invoke(self._builder.flush("window"))
                await self._close_window()
            if window.start is None:
                window.open(starts, kept[i][2])
            end = window.run_end(kept, i, n)
            await self._fill(kept, i, end)
            i = end

    async def _close_window(self) -> None:
        window = self._window
        assert window is not None
        await self._invoke(Batch([], window.first or 0, window.first or 0, 0, "window"))
        window.reset()

    # --- invoking -------------------------------------------------------------------------

    async def _invoke(self, batch: Batch) -> bool:
        """Deliver (ordered: wait for it) or start (unordered) a batch; True when a FIFO lane
        gave back what was queued behind a failed record."""
        if self._ordered:
            # pending from now, before any wait, and for good if the lane stops: the batch
            # has left the builder, and nothing may be acknowledged past its first record
            self._inflight_first = batch.first_position
        if self._stopping:
            if self._acker is not None:
                self._acker.abandoned(batch.records)
            raise LaneStopped
        if batch.records:
            self._metrics.batch_closed(len(batch), batch.reason)
        if self._ordered:
            if self._before_batch is not None:
                await self._before_batch()
            if self._slots is None:
                return await self._deliver(batch)
            async with self._slots:
                return await self._deliver(batch)
        if self._slots is not None:
            await self._slots.acquire()
        task = asyncio.create_task(self._deliver(batch))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        return False

    def _finished(self, task: asyncio.Task[bool]) -> None:
        self._inflight.discard(task)
        if self._slots is not None:
            self._slots.release()

    async def _deliver(self, batch: Batch) -> bool:
        window = self._window
        extra = window.extra(final=not batch.records) if window is not None else None
        progress = functools.partial(self._advance, batch) if self._ordered else None
        try:
            settlement = await self._invoker.process(batch, extra, progress)
        except Abandoned:
            if self._acker is not None:
                self._acker.abandoned(batch.records)
            if self._ordered:
                raise LaneStopped from None
            return False
        if window is not None:
            window.took(settlement.payload)
        released = settlement.released
        gave_back = bool(released) and self._fifo
        if gave_back:
            released = released + self._release_queued()
        if self._acker is not None:
            self._acker.settled(batch.records, released)
        if self._ordered:
            self._inflight_first = None
            if self._consumed_upto is None or self._consumed_upto <= batch.last_position:
                self._consumed_upto = batch.last_position + 1
        self._on_settled()
        return gave_back

    def _advance(self, batch: Batch, record: Record) -> None:
        """Every record of ``batch`` before ``record`` is settled: the checkpoint may pass
        them while the rest is retried."""
        if not batch.positions:
            return
        for i, r in enumerate(batch.records):
            if r is record:
                self._inflight_first = batch.positions[i]
                return

    def _release_queued(self) -> list[Any]:
        """FIFO: a group whose batch failed gives back everything queued behind it, so no
        later message of the group is invoked before the failed one."""
        rest = [r for chunk in self._chunks for r in chunk]
        rest += self._builder.flush("stop").records
        self._chunks.clear()
        self._chunk_starts.clear()
        self._queued = 0
        return rest


__all__ = ["Acker", "CloseReason", "Codec", "Kept", "Lane", "LaneStopped"]
