"""BatchBuilder: the policy that decides when a batch of records is ready to invoke.

A batch closes at BatchSize records, when MaximumBatchingWindowInSeconds has passed since its
first record, or before the next record would push the event past Lambda's 6 MB synchronous
payload cap. Sizes are upper estimates of each record's bytes in the event JSON, supplied by
the source's codec, so a closed batch never needs re-serialising to check the cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.config import MAX_PAYLOAD_BYTES

CloseReason = Literal["size", "window", "bytes", "stop"]


@dataclass(slots=True)
class Batch:
    """Records in invocation order, with the source positions they span."""

    records: list[dict[str, Any]]
    first_position: int
    last_position: int
    payload_bytes: int
    reason: CloseReason
    first_added_at: float = 0.0  # monotonic time the first record entered the batch
    #: each record's position (empty when the batch was not built by a BatchBuilder), so a
    #: lane can checkpoint inside a batch that succeeds part by part
    positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


@dataclass(slots=True)
class BatchBuilder:
    """Accumulates records for one lane; ``add`` never exceeds the byte cap (see ``fits``)."""

    max_records: int
    window_seconds: float
    envelope_bytes: int = 512  # the event's fields around the records
    max_bytes: int = MAX_PAYLOAD_BYTES
    clock: Callable[[], float] = time.monotonic
    _records: list[dict[str, Any]] = field(default_factory=list)
    _positions: list[int] = field(default_factory=list)
    _bytes: int = 0
    _first_position: int = 0
    _last_position: int = 0
    _opened_at: float = 0.0

    def __len__(self) -> int:
        return len(self._records)

    @property
    def first_position(self) -> int | None:
        return self._first_position if self._records else None

    def fits(self, size: int) -> bool:
        """Whether a record of ``size`` bytes can join; the first record always can."""
        return not self._records or self.envelope_bytes + self._bytes + size <= self.max_bytes

    def add(self, record: dict[str, Any], size: int, position: int) -> bool:
        """Add one record; True when the batch is now full (BatchSize reached)."""
        if not self._records:
            self._opened_at = self.clock()
            self._first_position = position
        self._records.append(record)
        self._positions.append(position)
        self._bytes += size
        self._last_position = position
        return len(self._records) >= self.max_records

    def fill(
        self, kept: list[tuple[dict[str, Any], int, int]], start: int, stop: int | None = None
    ) -> int:
        """Add ``(record, size, position)`` items from ``kept[start:stop]`` until the batch is
        full or the next one would pass the byte cap; return the index of the first not added.

        The bulk form of ``fits``/``add`` for the hot path: one call per chunk, not per record.
        """
        records, positions = self._records, self._positions
        room = self.max_records - len(records)
        budget = self.max_bytes - self.envelope_bytes - self._bytes
        end = min(len(kept) if stop is None else stop, start + room)
        i = start
        if not records and i < end:  # the first record always fits, however large
            self._opened_at = self.clock()
            self._first_position = kept[i][2]
        while i < end:
            record, size, position = kept[i]
            if size > budget and records:
                break
            records.append(record)
            positions.append(position)
            budget -= size
            self._last_position = position
            i += 1
        self._bytes = self.max_bytes - self.envelope_bytes - budget
        return i

    @property
    def full(self) -> bool:
        return len(self._records) >= self.max_records

    def until_next(self) -> float | None:
        """Seconds until the window closes the open batch; None when there is none."""
        if not self._records:
            return None
        return max(0.0, self._opened_at + self.window_seconds - self.clock())

    def flush(self, reason: CloseReason) -> Batch:
        batch = Batch(
            self._records,
            self._first_position,
            self._last_position,
            self.envelope_bytes + self._bytes,
            reason,
            self._opened_at,
            self._positions,
        )
        self._records = []
        self._positions = []
        self._bytes = 0
        return batch
