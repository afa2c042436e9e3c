"""One chaos run: records produced, `esmd run` disrupted, then every record accounted for.

A run produces JSON records (``{"id": n, "keep": ...}``, one in ten filtered out),
starts `esmd run` as a real subprocess (service/devtools/esmd_process.py) with one mapping
whose target is the recording sink (service/devtools/sink.py, in the test's process, so it
outlives the daemon), and then:

0. produces records at a steady ``rate`` until the last disruption is over;
1. ``kills`` times: waits for a delivery after the (re)start, waits a random moment (seeded,
   printed) and SIGKILLs the whole process group; starts it again;
2. each of ``disruptions`` (a broker stopped and restarted...) at a random moment likewise,
   the daemon running on;
3. waits until the source is caught up (everything acknowledged) and the counters still.

Then it checks what a user relies on:

- **nothing lost**: every record that passes the filter was delivered by a successful
  invocation or is where records given up on go (OnFailure destination, DLQ); no filtered
  record was delivered;
- **duplicates only from the in-flight batches**: for sources with positions (Kafka offsets,
  shard sequence numbers), a record delivered twice was past the position acknowledged when
  the process died or the broker went away; for SQS, at most the messages the daemon may
  hold unacknowledged per disruption; they are counted and printed;
- **counters balance** for the last process (service/devtools/balance.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from service.devtools.balance import Counters, imbalances
from service.devtools.esmd_process import EsmdProcess, free_port
from service.devtools.sink import Sink
from tests.integration.kafka_helpers import wait_for

#: a record's place in its source: (partition or shard, offset or sequence number)
Position = tuple[str, int]
KEEP = '{"keep": [true]}'
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def payload(i: int) -> bytes:
    return orjson.dumps({"id": i, "keep": i % 10 != 9})


def filtered(i: int) -> bool:
    return i % 10 == 9


class Source(Protocol):
    """A source under test: it produces, describes its mapping and reads its own state."""

    kind: str  # also the sink's function name
    redelivery: bool

    def config(self) -> dict[str, Any]:
        """Top-level config beside ``mappings`` (aws, checkpoints)."""

    def mapping(self) -> dict[str, Any]:
        """The mapping (FunctionName is ``kind``)."""

    async def prepare(self) -> None:
        """Create the topic, queue or stream."""

    async def produce(self, ids: list[int]) -> dict[int, Position]:
        """Send the records; their positions ({} for a source without positions)."""

    async def acknowledged(self) -> dict[str, int] | None:
        """Per partition or shard, the position of the first record not acknowledged;
        None for a source without positions (SQS)."""

    async def caught_up(self) -> bool:
        """Every record acknowledged (committed, checkpointed, deleted)."""

    async def given_up(self) -> list[int]:
        """The ids in the OnFailure destination or DLQ."""

    def in_flight(self) -> int:
        """SQS: the most messages the daemon holds unacknowledged (duplicates per disruption)."""

    async def close(self) -> None:
        """Release what ``produce`` opened."""


@dataclass
class Outcome:
    delivered: int
    given_up: int
    duplicates: int
    counters: Counters


Disruption = Callable[[], Awaitable[None]]


class Producer:
    """Sends ``rate`` records a second, ids from 0, until stopped; keeps their positions."""

    def __init__(self, source: Source, rate: int) -> None:
        self.source, self.rate = source, rate
        self.sent = 0
        self.positions: dict[int, Position] = {}
        self._stop = asyncio.Event()
        self._sending = asyncio.Lock()  # held while a chunk is sent, and while paused
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        """Stop sending; the number of records sent."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
            await self.source.close()
        return self.sent

    async def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - started) * self.rate) + self.rate // 2
            async with self._sending:
                if due > self.sent:
                    ids = list(range(self.sent, due))
                    self.positions |= await self.source.produce(ids)
                    self.sent = due
            await asyncio.sleep(0.2)

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No sending meanwhile (the broker is down); the backlog is sent after."""
        async with self._sending:
            yield


async def chaos_run(
    source: Source,
    sink: Sink,
    folder: Path,
    *,
    rate: int,
    seed: int,
    kills: int = 0,
    disruptions: Sequence[Disruption] = (),
    timeout: float = 120,
) -> Outcome:
    """Records are produced at ``rate`` a second from the start until the last disruption,
    so every kill lands in a steady flow."""
    rng = random.Random(seed)
    print(f"\n{source.kind}: seed {seed}, {rate} records/s, {kills} kills")
    await source.prepare()
    producer = Producer(source, rate)
    producer.start()
    positions = producer.positions
    esmd = EsmdProcess(daemon_config(source, sink, 0), folder, "WARNING", CREDENTIALS)
    unacked: set[int] = set()  # records not acknowledged at some disruption
    try:
        for n in range(kills):
            esmd.configure(daemon_config(source, sink, n))
            esmd.start()
            await _moment(source, sink, rng, f"kill {n + 1}")
            esmd.kill()
            unacked |= await _unacknowledged(source, positions)
        esmd.configure(daemon_config(source, sink, kills))
        esmd.start()
        for n, disrupt in enumerate(disruptions):
            await _moment(source, sink, rng, f"disruption {n + 1}")
            unacked |= await _unacknowledged(source, positions)
            async with producer.paused():
                await disrupt()
        records = await producer.stop()
        counters = await _settled(esmd, source, timeout)
        assert esmd.stop() == 0, f"esmd did not exit cleanly; see {folder}/esmd.log"
    finally:
        await producer.stop()
        esmd.kill()
    succeeded = sink.by_generation[str(kills)]  # the last process's
    disrupted = kills + len(disruptions)
    return await _check(source, sink, records, unacked, disrupted, counters, succeeded)


def daemon_config(source: Source, sink: Sink, start: int) -> dict[str, Any]:
    """The config of the ``start``-th start: its target URL names it (Sink.by_generation)."""
    assert sink.url is not None, "start the sink first"
    return {
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "workers": 1,
            "shutdown_grace_seconds": 10,
        },
        "retry": {"initial_backoff_seconds": 0.1, "max_backoff_seconds": 1},
        "functions": {
            source.kind: {"url": f"{sink.url}/{source.kind}/{start}", "timeout_seconds": 30}
        },
        **source.config(),
        "mappings": [
            {
                "Name": f"chaos-{source.kind}",
                "FunctionName": source.kind,
                **source.mapping(),
            }
        ],
    }


async def _moment(source: Source, sink: Sink, rng: random.Random, what: str) -> None:
    """Once the daemon delivered something, a random moment later (printed)."""
    before = sink.successes(source.kind)
    await wait_for(lambda: sink.successes(source.kind) > before, 90, f"a delivery before {what}")
    delay = rng.uniform(0.05, 1.5)
    await asyncio.sleep(delay)
    print(f"  {what} {delay:.2f}s after a delivery ({sink.successes(source.kind)} so far)")


async def _unacknowledged(source: Source, positions: dict[int, Position]) -> set[int]:
    acked = await source.acknowledged()
    if acked is None:
        return set()
    return {i for i, (lane, at) in positions.items() if at >= acked.get(lane, 0)}


async def _settled(esmd: EsmdProcess, source: Source, timeout: float) -> Counters:
    """The mapping's counters once the source is caught up and they stopped moving."""
    name = f"chaos-{source.kind}"
    last: list[Counters | None] = [None]

    async def still() -> bool:
        if not await source.caught_up():
            return False
        counters = Counters.from_metrics(await asyncio.to_thread(esmd.metrics), name)
        done = counters == last[0] and counters.polled > 0
        last[0] = counters
        return done

    started = time.monotonic()
    await wait_for(still, timeout, f"{source.kind} caught up with steady counters")
    print(f"  settled {time.monotonic() - started:.1f}s after the last disruption")
    assert last[0] is not None
    return last[0]


async def _check(
    source: Source,
    sink: Sink,
    records: int,
    unacked: set[int],
    disruptions: int,
    counters: Counters,
    succeeded: int,
) -> Outcome:
    delivered = sink.delivered.get(source.kind, Counter())
    given_up = await source.given_up()
    seen = set(delivered) | set(given_up)
    lost = {i for i in range(records) if not filtered(i)} - seen
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:20]}"
    assert not {i for i in seen if filtered(i)}, "filtered records were delivered"
    twice = [i for i, n in (delivered + Counter(given_up)).items() if n > 1]
    duplicates = sum(delivered.values()) + len(given_up) - len(seen)
    print(
        f"  produced {records}, delivered {len(delivered)}, given up {len(given_up)}, lost 0, "
        f"duplicates {duplicates} (ids {sorted(twice)[:10]}{'...' if len(twice) > 10 else ''})"
    )
    if source.redelivery:
        bound = disruptions * source.in_flight()
        assert duplicates <= bound, f"{duplicates} duplicates, more than {bound} in flight"
    else:
        outside = set(twice) - unacked
        assert not outside, f"delivered twice though acknowledged: {sorted(outside)[:20]}"
    print(f"  last process: {counters}, succeeded {succeeded}")
    wrong = imbalances(counters, succeeded, redelivery=source.redelivery)
    assert not wrong, wrong
    return Outcome(len(delivered), len(given_up), duplicates, counters)
