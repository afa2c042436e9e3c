"""Handlers for the DocumentDB tests, written as they would be for Lambda."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from typing import Any

#: per function name: the events received
events: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


async def collect(event: dict[str, Any], context: Any) -> None:
    with _lock:
        events[context.function_name].append(event)


def append_to_file(event: dict[str, Any], context: Any) -> None:
    """For a daemon in a subprocess: each inserted document's ``n``, one a line, flushed
    before returning; 20 ms a batch, as a function doing some work (a kill lands mid-run)."""
    time.sleep(0.02)
    lines = "".join(f"{e['event']['fullDocument']['n']}\n" for e in event["events"])
    with open(os.environ["ESMD_TEST_OUTPUT"], "a") as out:
        out.write(lines)
        out.flush()
        os.fsync(out.fileno())
