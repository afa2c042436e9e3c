"""DocumentDB throughput: esmd against a plain change-stream reader, on mongo-java-server.

Both read the same collection's change stream (N inserts of 1 KB documents) from before the
first insert to the last change, timed from the moment each has connected to the server
(the plain reader's ping; esmd's mapping reaching USER_INITIATED) to the last change handled,
so the daemon's own start-up (HTTP server, config) is not counted as change-event work. The
plain reader is pymongo's AsyncMongoClient calling ``try_next`` until it has every change;
esmd opens the same stream (StartingPosition AT_TIMESTAMP), renders each change as Lambda's
DocumentDB record, invokes an in-process handler with batches of ``--batch`` and checkpoints
resume tokens in sqlite; the handler sets an event once it has every change (no polling loop
on esmd's event loop). esmd runs with the garbage collector settings ``esmd run`` applies
(service/gctune.py); the plain reader keeps CPython's defaults, as a plain program has them.
Prints change events/s for each and their ratio (esmd / plain), and
each one's client CPU time per event (this process, every thread), which load from other
processes disturbs less than wall time. The server (service/devtools/EsmdMongoServer.java)
is the shared one, started when it is not running; with ``--port`` it is a private instance
on that port (state in .services/mongo-<port>), restarted before the series.

    python benchmarks/documentdb_throughput.py --events 20000 --batch 1000 --rounds 5 --port 27117

Each round reads a new collection, both readers in turn (alternating which goes first); the
medians are printed. ``--tuned-plain`` also times the plain reader under esmd's collector
settings (third in each round): what CPython's default collector costs it, and what esmd's
own work costs beside a reader that does not pay that. mongo-java-server answers a getMore
with everything after its position in one message (capped at 48 MB by the driver): keep
--events at 30,000 or less. Its oplog is never trimmed (memory only): restart it
(scripts/services.py down mongo, or use ``--port``) between long series.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bson.timestamp import Timestamp
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.devtools.servers import ensure, ensure_mongo, private_mongo, stop
from service.gctune import tuned_for_throughput
from service.logs import configure_logging

ARN = "arn:aws:rds:us-east-1:000000000000:cluster:bench"
HANDLER = "benchmarks.documentdb_throughput:count_handler"
delivered = 0
expected = 0
#: set by the handler once ``expected`` changes arrived: the timing loop waits on it rather
#: than waking every millisecond on the event loop that esmd itself runs on
all_delivered = asyncio.Event()


async def count_handler(event: dict[str, Any], context: Any) -> None:
    global delivered
    delivered += len(event["events"])
    if delivered >= expected:
        all_delivered.set()


async def fill(uri: str, db: str, events: int) -> int:
    """Insert the documents; returns a second before the first insert."""
    since = int(time.time()) - 1
    async with AsyncMongoClient(uri) as client:
        orders = client[db]["orders"]
        for i in range(0, events, 1000):
            await orders.insert_many(
                [{"n": n, "pad": "x" * 1000} for n in range(i, min(events, i + 1000))]
            )
    return since


class Clock:
    """Wall time and this process's CPU time (every thread: esmd's checkpoint writes too)
    from ``start()`` to ``stop()``; the server is another process.

    ``start()`` first collects garbage: both readers run in this one process, after the fill
    and (esmd) the daemon's start-up, whose leftovers would otherwise bring the cyclic
    collector's next full pass forward into whichever window comes next. Each window starts
    from the same collected heap, and pays only for the collections its own reading causes."""

    def start(self) -> None:
        gc.collect()
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self._wall, time.process_time() - self._cpu


async def plain(uri: str, db: str, since: int, events: int) -> tuple[float, float]:
    clock = Clock()
    async with AsyncMongoClient(uri) as client:
        await client.admin.command("ping")  # connected: where esmd's clock starts too
        clock.start()
        stream = await client[db]["orders"].watch(
            start_at_operation_time=Timestamp(since, 0), max_await_time_ms=500
        )
        got = 0
        async with stream:
            while got < events:
                if await stream.try_next() is not None:
                    got += 1
        return clock.stop()


async def esmd(uri: str, db: str, since: int, events: int, batch: int) -> tuple[float, float]:
    with tuned_for_throughput():  # as `esmd run` runs it
        return await _esmd(uri, db, since, events, batch)


async def _esmd(uri: str, db: str, since: int, events: int, batch: int) -> tuple[float, float]:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "server": {"listen": "127.0.0.1:0"},
                "checkpoints": {"path": f"{tmp}/state.db"},
                "documentdb": {"endpoints": {ARN: uri}},
                "functions": {"bench": {"python": HANDLER}},
                "mappings": [
                    {
                        "Name": "bench",
                        "EventSourceArn": ARN,
                        "FunctionName": "bench",
                        "StartingPosition": "AT_TIMESTAMP",
                        "StartingPositionTimestamp": since,
                        "BatchSize": batch,
                        "DocumentDBEventSourceConfig": {
                            "DatabaseName": db,
                            "CollectionName": "orders",
                        },
                    }
                ],
            }
        )
        daemon = Daemon(config)
        # the handler runs in the module as imported by name, not in __main__
        from benchmarks import documentdb_throughput as handlers

        handlers.delivered, handlers.expected = 0, events
        handlers.all_delivered.clear()
        task = asyncio.create_task(daemon.run(handle_signals=False))
        # the clock starts once the mapping reached the server, as the plain reader's does
        # after its ping: the daemon's own start (HTTP server, config) is not change events
        while daemon.mappings[0].state_reason != "USER_INITIATED":
            await asyncio.sleep(0.001)
        clock.start()
        await handlers.all_delivered.wait()
        measured = clock.stop()
        daemon.request_stop()
        await task
        return measured


def fresh_mongo(port: int) -> str:
    """A private mongo-java-server on ``port``, restarted: its oplog starts empty."""
    server = private_mongo(f"mongo-{port}", port)
    stop(server)
    return ensure(server)


async def main(args: argparse.Namespace) -> None:
    uri = ensure_mongo() if args.port is None else fresh_mongo(args.port)
    raws: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    tuned: list[tuple[float, float]] = []  # --tuned-plain: what the collector costs the plain one
    for round_ in range(args.rounds):
        db = f"bench{uuid.uuid4().hex[:8]}"
        since = await fill(uri, db, args.events)
        # alternate which reads first: the server (a JVM) warms up, and its oplog grows
        if round_ % 2:
            ours.append(await esmd(uri, db, since, args.events, args.batch))
            raws.append(await plain(uri, db, since, args.events))
        else:
            raws.append(await plain(uri, db, since, args.events))
            ours.append(await esmd(uri, db, since, args.events, args.batch))
        if args.tuned_plain:
            with tuned_for_throughput():
                tuned.append(await plain(uri, db, since, args.events))
        async with AsyncMongoClient(uri) as client:
            await client.drop_database(db)  # the oplog stays: the server never trims it
    raw, our = (statistics.median(w for w, _ in runs) for runs in (raws, ours))
    raw_cpu, our_cpu = (statistics.median(c for _, c in runs) for runs in (raws, ours))
    print(f"change events: {args.events} inserts of 1 KB documents (mongo-java-server)")
    print(f"rounds: {args.rounds}, medians; esmd: BatchSize {args.batch}, python target")
    report("plain change-stream reader:", raws, args.events)
    report("esmd end to end:", ours, args.events)
    print(f"ratio esmd/plain: {raw / our:.2f}x (CPU per event: {our_cpu / raw_cpu:.2f}x plain's)")
    if tuned:
        report("plain, esmd's GC settings:", tuned, args.events)


def report(label: str, runs: list[tuple[float, float]], events: int) -> None:
    wall = statistics.median(w for w, _ in runs)
    cpu = statistics.median(c for _, c in runs)
    per_event = cpu / events * 1e6
    print(f"{label:28}{events / wall:10,.0f} events/s  (client CPU {per_event:.1f} us/event)")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--port", type=int, help="a private mongo-java-server, restarted first")
    p.add_argument(
        "--tuned-plain",
        action="store_true",
        help="also time the plain reader with esmd's collector settings (after the other two)",
    )
    configure_logging("WARNING", False)
    run_async(main(p.parse_args()))
