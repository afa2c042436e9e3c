"""TumblingWindow: Lambda's tumbling windows for Kinesis and DynamoDB Streams.

With TumblingWindowInSeconds, a lane's records are grouped by the window their arrival time
falls in. Each invocation carries the window and the ``state`` the previous one returned; a
final invocation (``isFinalInvokeForWindow``) closes the window. The window's records stay
pending until that final invocation succeeded, so a restart replays the whole window.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

#: (Lambda record, its size in the event JSON, its position)
Kept = tuple[dict[str, Any], int, int]


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TumblingWindow:
    """The open window and ``state`` of one lane."""

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
        self.first: int | None = None  # position of the window's first record: pending
        self.state: dict[str, Any] = {}

    def window_of(self, record: dict[str, Any]) -> float:
        t = self._arrival(record)
        return t - t % self._seconds

    def open(self, start: float, first: int) -> None:
        self.start, self.first = start, first

    def run_end(self, kept: list[Kept], i: int, n: int) -> int:
        """End of the run of ``kept[i:n]`` in the open window."""
        j = i
        while j < n and self.window_of(kept[j][0]) == self.start:
            j += 1
        return j

    def over(self) -> bool:
        """The open window's time is up."""
        return self.start is not None and self._clock() >= self.start + self._seconds

    def until_end(self) -> float:
        if self.start is None:
            return 3600.0
        return max(0.05, self.start + self._seconds - self._clock())

    def extra(self, *, final: bool) -> dict[str, Any]:
        """The event's window fields."""
        start = self.start or 0.0
        return {
            "window": {"start": _iso(start), "end": _iso(start + self._seconds)},
            "state": self.state,
            "shardId": self._shard_id,
            "eventSourceARN": self._arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": False,
        }

    def took(self, payload: Any) -> None:
        """A response of the window: its ``state`` is passed to the next invocation."""
        if isinstance(payload, dict) and isinstance(payload.get("state"), dict):
            self.state = payload["state"]

    def reset(self) -> None:
        self.start, self.first, self.state = None, None, {}
