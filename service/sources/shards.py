"""Shard machinery shared by Kinesis and DynamoDB Streams (whose APIs mirror each other).

:class:`ShardPoller` is the Poller of a stream mapping. Every ``period`` it lists the shards,
lets the :mod:`checkpoint store <service.checkpoints>` create leases for new ones, renews,
takes and rebalances leases, and runs a :class:`ShardWorker` for each held shard whose parents
are finished: a child shard of a split or merge starts only after every record of its
parents was processed. A worker reaching the end of a closed shard checkpoints ``SHARD_END``
and wakes the poller at once, so children do not wait for the next period.

A :class:`ShardWorker` runs the GetRecords loop of one shard (at most 5 calls a second, as
Kinesis allows, once a second while idle, backing off when throttled), converts and filters
the records, hashes them to ParallelizationFactor :class:`KeyLane` s and checkpoints, once a
second, the sequence number before the earliest record any lane still has pending.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.checkpoints import SHARD_END, LeaseStore, ShardInfo, make_store, ready_shards
from service.invoke import Backoff
from service.sources.stream_delivery import Item, RecordFields, StreamDelivery
from service.sources.stream_lane import KeyLane, TumblingWindow

if TYPE_CHECKING:
    from service.filters import FilterCriteria
    from service.mapping import Mapping


class Throttled(Exception):
    """The shard's read limit was hit (ProvisionedThroughputExceeded, LimitExceeded)."""


class IteratorExpired(Exception):
    """The shard iterator is too old; get a new one from the last record read."""


class StreamApi(Protocol):
    """The read side of Kinesis or DynamoDB Streams, in the terms both share."""

    max_limit: int  # GetRecords Limit cap

    async def list_shards(self) -> list[ShardInfo]: ...

    async def iterator(self, shard_id: str, position: str) -> str:
        """A shard iterator at a position: an iterator type, or after a sequence number."""
        ...

    async def get_records(
        self, iterator: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """(raw records, next iterator); None once a closed shard has been read to its end."""
        ...


class StreamCodec(Protocol):
    """A source's record conversion: raw API record -> Lambda record and what the shard
    worker needs from it."""

    fields: RecordFields
    envelope_bytes: int

    def convert(self, raw: dict[str, Any], shard_id: str) -> tuple[dict[str, Any], int, Any, str]:
        """(Lambda record, its size in the event, its ordering key, its sequence number)."""
        ...

    def filter_view(self, record: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StreamSource:
    """What a ShardPoller is made of, per source kind."""

    kind: str
    api: StreamApi
    codec: StreamCodec
    arn: str


def is_position(value: str) -> bool:
    """A sequence number, as opposed to an iterator type such as TRIM_HORIZON."""
    return value.isdigit()


class ShardWorker:
    """Reads one shard and delivers it through its lanes; see the module docstring."""

    min_call_interval = 0.2  # Kinesis: 5 GetRecords per shard per second
    idle_interval = 1.0  # Lambda polls an idle shard once a second
    checkpoint_interval = 1.0  # at the latest; normally right after each batch

    def __init__(
        self, mapping: Mapping, source: StreamSource, store: LeaseStore, shard_id: str, start: str
    ) -> None:
        cfg = mapping.config
        self.shard_id = shard_id
        self._mapping = mapping
        self._api = source.api
        self._codec = source.codec
        self._store = store
        self._start = start
        self._filters: FilterCriteria | None = mapping.filters
        self.stopping = asyncio.Event()
        self.lost = False
        delivery = StreamDelivery(mapping, shard_id, source.codec.fields, self.stopping)
        self._room = asyncio.Event()
        self._progressed = asyncio.Event()  # a lane finished a batch: checkpoint soon
        self._writes_started = 0  # checkpoint writes begun, and finished (or given up)
        self._writes_done = 0
        self._wrote = asyncio.Event()
        self._max_queued = max(10_000, 4 * cfg.batch_size * cfg.ParallelizationFactor)
        self._lanes = [
            KeyLane(
                delivery,
                cfg.batch_size,
                cfg.batching_window_seconds,
                source.codec.envelope_bytes,
                self._room.set,
                self._batch_done,
                self._until_durable,
                TumblingWindow(
                    cfg.TumblingWindowInSeconds, source.codec.fields.arrival, shard_id, source.arn
                )
                if cfg.TumblingWindowInSeconds
                else None,
            )
            for _ in range(cfg.ParallelizationFactor)
        ]
        # sequence numbers of records read and not yet checkpointed, by ordinal from _base
        self._seqs: collections.deque[str] = collections.deque()
        self._base = 0
        self._next = 0
        self._done_seq: str | None = None
        self._written: str | None = None
        self._last_read: str | None = None
        self._log = structlog.get_logger("esmd.shard").bind(mapping=cfg.Name, shard=shard_id)

    def stop(self) -> None:
        self.stopping.set()

    @property
    def queued(self) -> int:
        return sum(lane.queued for lane in self._lanes)

    # --- running --------------------------------------------------------------------------

    async def run(self) -> bool:
        """Process the shard until stopped, the lease is lost, or its end; True at the end
        (SHARD_END checkpointed)."""
        lanes = [
            asyncio.create_task(lane.run(), name=f"lane {self.shard_id}") for lane in self._lanes
        ]
        checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")
        ended = False
        try:
            ended = await self._read(lanes)
            if ended:
                ended = await self._drained(lanes)
        finally:
            for lane in self._lanes:
                lane.stop()
            _, pending = (
                await asyncio.wait(lanes, timeout=self._mapping.shutdown_grace)
                if lanes
                else (set(), set())
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            checkpointer.cancel()
            await asyncio.gather(checkpointer, return_exceptions=True)
            await self._final_checkpoint(ended)
        return ended

    async def _read(self, lanes: list[asyncio.Task[None]]) -> bool:
        api, limit = self._api, self._api.max_limit
        iterator = await self._iterator()
        throttles = 0
        backoff = Backoff(1.0, 10.0)
        last_call = 0.0
        while not self.stopping.is_set():
            _raise_failed(lanes)
            if self.queued >= self._max_queued:
                self._room.clear()
                await self._sleep(1.0, self._room)
                continue
            await self._sleep(last_call + self.min_call_interval - time.monotonic())
            last_call = time.monotonic()
            try:
                raws, iterator_next = await api.get_records(iterator, limit)
            except Throttled:
                await self._sleep(backoff.delay(throttles))
                throttles += 1
                continue
            except IteratorExpired:
                iterator = await self._iterator()
                continue
            throttles = 0
            if raws:
                self._ingest(raws)
            if iterator_next is None:
                return True
            iterator = iterator_next
            if not raws:
                await self._sleep(self.idle_interval)
        return False

    async def _iterator(self) -> str:
        position = self._last_read or self._start
        return await self._api.iterator(self.shard_id, position)

    def _ingest(self, raws: list[dict[str, Any]]) -> None:
        """Convert, filter and hash a GetRecords page to the lanes: the hot path."""
        convert, shard = self._codec.convert, self.shard_id
        match = self._filters.matcher if self._filters is not None else None
        view = self._codec.filter_view
        lanes = self._lanes
        n = len(lanes)
        shares: list[list[Item]] = [[] for _ in lanes]
        seqs = self._seqs
        ordinal = self._next
        filtered = 0
        seq = ""
        for raw in raws:
            record, size, key, seq = convert(raw, shard)
            seqs.append(seq)
            if match is not None and not match(view(record)):
                filtered += 1
            else:
                shares[hash(key) % n if n > 1 else 0].append((record, size, ordinal))
            ordinal += 1
        self._next = ordinal
        self._last_read = seq
        metrics = self._mapping.metrics
        metrics.polled.inc(len(raws))
        if filtered:
            metrics.filtered_out.inc(filtered)
        for lane, share in zip(lanes, shares, strict=True):
            if share:
                lane.put(share)

    async def _drained(self, lanes: list[asyncio.Task[None]]) -> bool:
        """At the shard's end: wait until every lane is done; False if stopped first."""
        while not self.stopping.is_set():
            _raise_failed(lanes)
            if all(lane.first_pending() is None for lane in self._lanes):
                return True
            await self._sleep(0.05)
        return False

    async def _sleep(self, seconds: float, event: asyncio.Event | None = None) -> None:
        """Sleep, cut short by a stop (or by ``event``)."""
        if seconds <= 0:
            return
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()

    # --- checkpoints ----------------------------------------------------------------------

    def done_sequence(self) -> str | None:
        """The sequence number of the last record before the earliest pending one."""
        done = self._next
        for lane in self._lanes:
            pending = lane.first_pending()
            if pending is not None and pending < done:
                done = pending
        seqs = self._seqs
        while self._base < done:
            self._done_seq = seqs.popleft()
            self._base += 1
        return self._done_seq

    def _batch_done(self) -> int:
        """A lane finished a batch: returns the number of the checkpoint write covering it."""
        self._progressed.set()
        return self._writes_started + 1

    async def _until_durable(self, write: int) -> None:
        """Until checkpoint write number ``write`` finished (or the shard stops)."""
        while self._writes_done < write and not self.stopping.is_set():
            self._wrote.clear()
            await self._sleep(self.checkpoint_interval, self._wrote)

    async def _checkpoint_loop(self) -> None:
        """Checkpoint after every batch, as Lambda does; batches that finish while a write is
        under way are folded into the next one, so a slow store never holds the lanes up.
        Filtered-out records move the checkpoint too, on a timer."""
        while not self.stopping.is_set():
            self._progressed.clear()
            self._writes_started += 1
            try:
                await self._checkpoint(self.done_sequence())
            finally:
                self._writes_done = self._writes_started
                self._wrote.set()
            await self._sleep(self.checkpoint_interval, self._progressed)

    async def _checkpoint(self, position: str | None) -> None:
        if position is None or position == self._written or self.lost:
            return
        try:
            ok = await asyncio.shield(self._store.checkpoint(self.shard_id, position))
        except Exception as exc:
            self._mapping.metrics.error("commit")
            self._log.warning("checkpoint failed", error=repr(exc))
            return
        if not ok:
            self._log.warning("lease lost: stopping the shard")
            self.lost = True
            self.stopping.set()
            return
        self._written = position

    async def _final_checkpoint(self, ended: bool) -> None:
        await self._checkpoint(SHARD_END if ended else self.done_sequence())


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    """A lane that died of a bug takes its worker down (the poller restarts it)."""
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class ShardPoller:
    """The Poller of a Kinesis or DynamoDB Streams mapping; see the module docstring."""

    def __init__(self, mapping: Mapping, source: StreamSource) -> None:
        self._mapping = mapping
        self._source = source
        cfg = mapping.config
        checkpoints = mapping.esmd.checkpoints
        self._store = make_store(checkpoints, cfg.Name, mapping.aws_client)
        self.period = min(5.0, checkpoints.lease_duration_seconds / 3)
        self._start = cfg.StartingPosition.value if cfg.StartingPosition else "TRIM_HORIZON"
        self._workers: dict[str, tuple[ShardWorker, asyncio.Task[bool]]] = {}
        self._held: set[str] = set()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._log = structlog.get_logger(f"esmd.{source.kind}").bind(mapping=cfg.Name)

    async def run(self) -> None:
        await self._store.open()
        self._log.info("polling", stream=self._source.arn, owner=self._store.owner)
        try:
            while not self._stopping.is_set():
                await self._cycle()
                self._wakeup.clear()
                waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self._wakeup)]
                await asyncio.wait(waits, timeout=self.period, return_when=asyncio.FIRST_COMPLETED)
                for w in waits:
                    w.cancel()
        finally:
            await self._stop_workers(list(self._workers))
            self._count_pollers()
            await self._store.release(sorted(self._held))
            await self._store.close()
            self._log.info("stopped")

    def stop(self) -> None:
        self._stopping.set()
        for worker, _ in self._workers.values():
            worker.stop()

    def status(self) -> dict[str, Any]:
        return {
            "owner": self._store.owner,
            "shards": {
                shard: {"queued": w.queued, "checkpoint": w._written}
                for shard, (w, _) in sorted(self._workers.items())
            },
        }

    # --- one cycle ------------------------------------------------------------------------

    async def _cycle(self) -> None:
        self._reap()
        shards = await self._source.api.list_shards()
        await self._store.sync(shards, self._start)
        held, leases = await self._store.acquire()
        self._held = held
        lost = [s for s in self._workers if s not in held]
        if lost:
            self._log.info("shards lost to another replica", shards=lost)
            await self._stop_workers(lost)
        finished = [s for s in held if leases[s].finished]
        if finished:
            await self._store.release(finished)
        for shard_id in ready_shards(leases, held):
            if shard_id not in self._workers and not self._stopping.is_set():
                self._start_worker(shard_id, leases[shard_id].checkpoint)
        self._count_pollers()

    def _count_pollers(self) -> None:
        """esm_pollers for a stream: one GetRecords loop per shard this replica reads."""
        for kind in ("current", "desired"):
            self._mapping.metrics.pollers(kind).set(len(self._workers))

    def _start_worker(self, shard_id: str, position: str) -> None:
        worker = ShardWorker(self._mapping, self._source, self._store, shard_id, position)
        task = asyncio.create_task(worker.run(), name=f"shard {shard_id}")
        task.add_done_callback(lambda _: self._wakeup.set())
        self._workers[shard_id] = (worker, task)
        self._log.info("shard started", shard=shard_id, position=position)

    def _reap(self) -> None:
        """Forget finished workers; a worker that failed is restarted by this cycle."""
        for shard_id, (_, task) in list(self._workers.items()):
            if not task.done():
                continue
            del self._workers[shard_id]
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                self._mapping.metrics.error("polling")
                self._log.error("shard worker failed", shard=shard_id, error=repr(exc))
            elif task.result():
                self._log.info("shard finished", shard=shard_id)

    async def _stop_workers(self, shard_ids: Sequence[str]) -> None:
        entries = [self._workers.pop(s) for s in shard_ids if s in self._workers]
        for worker, _ in entries:
            worker.stop()
        await asyncio.gather(*(task for _, task in entries), return_exceptions=True)
