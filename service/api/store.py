"""API-created mappings in sqlite (``api.store: sqlite``), so they survive restarts: one row
per mapping, its config properties as JSON. The file defaults to the checkpoint file (its own
table there), so a mapping and its positions live and move together.

Writes go through a worker thread (a commit waits for fsync; the event loop must not).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_mappings (
    name          TEXT PRIMARY KEY,
    properties    TEXT NOT NULL,
    last_modified REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Stored:
    name: str
    properties: dict[str, Any]
    last_modified: float


class SqliteMappingStore:
    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> list[Stored]:
        """Open the file; every stored mapping, by name."""
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await asyncio.to_thread(self._connect)
        return await self.load()

    async def load(self) -> list[Stored]:
        """Every stored mapping, by name (another process sharing the file may change them)."""
        rows = await self._run(
            "SELECT name, properties, last_modified FROM api_mappings ORDER BY name", ()
        )
        return [Stored(name, orjson.loads(props), at) for name, props, at in rows]

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        db.commit()
        return db

    async def put(self, item: Stored) -> None:
        await self._run(
            "INSERT OR REPLACE INTO api_mappings (name, properties, last_modified) "
            "VALUES (?, ?, ?)",
            (item.name, orjson.dumps(item.properties).decode(), item.last_modified),
        )

    async def delete(self, name: str) -> None:
        await self._run("DELETE FROM api_mappings WHERE name = ?", (name,))

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await asyncio.to_thread(db.close)

    async def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        db = self._db
        assert db is not None, "open() first"

        def run() -> list[Any]:
            rows = db.execute(sql, params).fetchall()
            db.commit()
            return rows

        async with self._lock:
            return await asyncio.to_thread(run)
