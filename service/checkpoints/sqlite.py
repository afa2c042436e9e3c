"""The sqlite checkpoint store: one replica owns every shard of its mappings.

Writes go through a worker thread, since a commit waits for the disk (fsync) and the event
loop must not; a checkpoint that returned is durable, which is what lets a daemon killed
with SIGKILL resume where it left off.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from service.checkpoints import Lease, ShardInfo, initial_position

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shard_checkpoints (
    mapping    TEXT NOT NULL,
    shard_id   TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    parents    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (mapping, shard_id)
)
"""


class SqliteStore:
    def __init__(self, path: str, mapping: str) -> None:
        self.owner = f"sqlite-{os.getpid()}"
        self._path = path
        self._mapping = mapping
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the shared connection
        self._leases: dict[str, Lease] = {}

    async def open(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await asyncio.to_thread(self._connect)
        rows = await self._run(
            "SELECT shard_id, checkpoint, parents FROM shard_checkpoints WHERE mapping = ?",
            (self._mapping,),
        )
        for shard_id, checkpoint, parents in rows:
            self._leases[shard_id] = Lease(
                shard_id, checkpoint, tuple(p for p in parents.split(",") if p), self.owner
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        db.commit()
        return db

    async def _run(self, sql: str, params: tuple[str, ...]) -> list[tuple[str, ...]]:
        db = self._db
        assert db is not None, "open() first"

        def work() -> list[tuple[str, ...]]:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows

        async with self._lock:
            return await asyncio.to_thread(work)

    async def sync(self, shards: Sequence[ShardInfo], start: str) -> None:
        first = not self._leases
        for shard in shards:
            if shard.shard_id in self._leases:
                continue
            position = initial_position(shard, first, start)
            await self._run(
                "INSERT OR IGNORE INTO shard_checkpoints VALUES (?, ?, ?, ?)",
                (self._mapping, shard.shard_id, position, ",".join(shard.parents)),
            )
            self._leases[shard.shard_id] = Lease(
                shard.shard_id, position, shard.parents, self.owner
            )

    async def acquire(self) -> tuple[set[str], dict[str, Lease]]:
        return set(self._leases), self._leases

    async def checkpoint(self, shard_id: str, position: str) -> bool:
        await self._run(
            "UPDATE shard_checkpoints SET checkpoint = ? WHERE mapping = ? AND shard_id = ?",
            (position, self._mapping, shard_id),
        )
        self._leases[shard_id].checkpoint = position
        return True

    async def release(self, shard_ids: Sequence[str]) -> None:
        return None  # nobody else to give them to

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await asyncio.to_thread(self._db.close)
            self._db = None
