"""Shard machinery shared by Kinesis and DynamoDB Streams (whose APIs mirror each other).

:class:`ShardPoller` is the Poller of a stream mapping. Every ``period`` it lists the shards,
lets the :mod:`checkpoint store <service.checkpoints>` create leases for new ones, renews,
takes and rebalances leases, and runs a :class:`ShardWorker` for each held shard whose parents
are finished: a child shard of a split or merge starts only after every record of its
parents was processed. A worker reaching the end of a closed shard checkpoints ``SHARD_END``
and wakes the poller at once, so children do not wait for the next period.

A :class:`ShardWorker` runs the GetRecords loop of one shard (at most 5 calls a second, as
Kinesis allows, once a second while idle, backing off when throttled), converts the records,
hashes them by partition key (Kinesis) or item key (DynamoDB) to ParallelizationFactor
ordered :class:`~service.lane.Lane` s, so records of a key stay in order while up to that
many batches of the shard are in flight, and checkpoints, after every settled batch, the
sequence number before the earliest record any lane still has pending.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.checkpoints import SHARD_END, LeaseStore, ShardInfo, make_store, ready_shards
from service.context import MappingContext
from service.invoke import Backoff
from service.lane import Kept
from service.windows import TumblingWindow

if TYPE_CHECKING:
    from service.filters import FilterCriteria

#: (Lambda record, its size in the event JSON, its ordinal in the shard)
Item = Kept


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


class ShardLaneCodec:
    """The codec of a shard's lanes: records arrive converted (the worker hashes them by key),
    so the lane only filters them on the source's filter view."""

    def __init__(self, codec: StreamCodec) -> None:
        self.envelope_bytes = codec.envelope_bytes
        self._view = codec.filter_view

    def position(self, item: Item) -> int:
        return item[2]

    def decode(
        self, items: Sequence[Item], filters: FilterCriteria | None
    ) -> tuple[list[Kept], list[Any], int]:
        end = items[-1][2] + 1
        if filters is None:
            return list(items), [], end
        match, view = filters.matcher, self._view
        kept: list[Kept] = []
        filtered: list[Any] = []
        for item in items:
            (kept if match(view(item[0])) else filtered).append(item)
        return kept, filtered, end

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": records}


def is_position(value: str) -> bool:
    """A sequence number, as opposed to an iterator type such as TRIM_HORIZON."""
    return value.isdigit()


class ShardWorker:
    """Reads one shard and delivers it through its lanes; see the module docstring."""

    min_call_interval = 0.2  # Kinesis: 5 GetRecords per shard per second
    idle_interval = 1.0  # Lambda polls an idle shard once a second
    checkpoint_interval = 1.0  # at the latest; normally right after each batch

    def __init__(
        self,
        context: MappingContext,
        source: StreamSource,
        store: LeaseStore,
        shard_id: str,
        start: str,
    ) -> None:
        cfg = context.config
        self.shard_id = shard_id
        self._context = context
        self._api = source.api
        self._codec = source.codec
        self._store = store
        self._start = start
        self.stopping = asyncio.Event()
        self.lost = False
        self._room = asyncio.Event()  # a paused lane drained: read again
        self._progressed = asyncio.Event()  # a lane settled a batch: checkpoint now
        self._writes_started = 0  # checkpoint writes begun, and finished (or given up)
        self._writes_done = 0
        self._wrote = asyncio.Event()
        # the lanes stop with the shard, not only with the mapping; what they give up on
        # names the shard in its invocation record
        give_up = functools.partial(context.policy.give_up, shard_id=shard_id)
        lane_context = dataclasses.replace(
            context,
            stopping=self.stopping,
            policy=dataclasses.replace(context.policy, give_up=give_up),
        )
        lane_codec = ShardLaneCodec(source.codec)
        created_at = context.policy.traits.created_at
        self._lanes = []
        for i in range(cfg.ParallelizationFactor):
            marks: list[int] = []
            window = (
                TumblingWindow(cfg.TumblingWindowInSeconds, created_at, shard_id, source.arn)
                if cfg.TumblingWindowInSeconds
                else None
            )
            self._lanes.append(
                lane_context.new_lane(
                    f"{shard_id}#{i}",
                    lane_codec,
                    window=window,
                    on_backpressure=self._backpressure,
                    on_settled=functools.partial(self._batch_done, marks),
                    before_batch=functools.partial(self._two_behind_durable, marks),
                )
            )
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
        for lane in self._lanes:
            lane.start()
        checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")
        ended = False
        try:
            ended = await self._read()
            if ended:
                ended = await self._drained()
        finally:
            self.stopping.set()
            grace = self._context.shutdown_grace
            await asyncio.gather(*(lane.stop(grace) for lane in self._lanes))
            checkpointer.cancel()
            await asyncio.gather(checkpointer, return_exceptions=True)
            await self._final_checkpoint(ended)
        return ended

    def _backpressure(self, paused: bool) -> None:
        if not paused:
            self._room.set()

    async def _read(self) -> bool:
        api, limit = self._api, self._api.max_limit
        iterator = await self._iterator()
        throttles = 0
        backoff = Backoff(1.0, 10.0)
        last_call = 0.0
        while not self.stopping.is_set():
            self._raise_failed()
            if any(lane.paused for lane in self._lanes):
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
        """Convert and hash a GetRecords page to the lanes (which filter): the hot path."""
        convert, shard = self._codec.convert, self.shard_id
        lanes = self._lanes
        n = len(lanes)
        shares: list[list[Item]] = [[] for _ in lanes]
        seqs = self._seqs
        ordinal = self._next
        seq = ""
        for raw in raws:
            record, size, key, seq = convert(raw, shard)
            seqs.append(seq)
            shares[hash(key) % n if n > 1 else 0].append((record, size, ordinal))
            ordinal += 1
        self._next = ordinal
        self._last_read = seq
        self._context.metrics.polled.inc(len(raws))
        for lane, share in zip(lanes, shares, strict=True):
            if share:
                lane.put(share)

    async def _drained(self) -> bool:
        """At the shard's end: wait until every lane settled all; False if stopped first."""
        while not self.stopping.is_set():
            self._raise_failed()
            if all(lane.first_pending() is None for lane in self._lanes):
                return True
            self._progressed.clear()
            await self._sleep(self.checkpoint_interval, self._progressed)
        return False

    def _raise_failed(self) -> None:
        """A lane that died of a bug takes its worker down (the poller restarts it)."""
        for lane in self._lanes:
            error = lane.failure()
            if error is not None:
                raise error

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

    def _batch_done(self, marks: list[int]) -> None:
        """A lane settled a batch: note the checkpoint write that will cover it."""
        marks.append(self._writes_started + 1)
        self._progressed.set()

    async def _two_behind_durable(self, marks: list[int]) -> None:
        """Before a lane starts a batch, the checkpoint covering the one two before it must
        be written: a crash replays at most two batches a lane."""
        if len(marks) < 2:
            return
        write = marks.pop(0)
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
            self._context.metrics.error("commit")
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


class ShardPoller:
    """The Poller of a Kinesis or DynamoDB Streams mapping; see the module docstring."""

    def __init__(self, mapping: MappingContext, source: StreamSource) -> None:
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
                self._mapping.connected()
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
