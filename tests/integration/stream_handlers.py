"""Handlers for the Kinesis and DynamoDB Streams tests, written as they would be for Lambda."""

from __future__ import annotations

import base64
import json
import os
import threading
from collections import defaultdict
from typing import Any

#: per function name: the events received, and the decoded Kinesis payloads in order
events: dict[str, list[dict[str, Any]]] = defaultdict(list)
payloads: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


def _decode(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(record["kinesis"]["data"]))  # type: ignore[no-any-return]


async def collect(event: dict[str, Any], context: Any) -> None:
    """Keep every event and, for Kinesis, its decoded payloads (a coroutine: no thread hop)."""
    with _lock:
        events[context.function_name].append(event)
        if event["Records"] and "kinesis" in event["Records"][0]:
            payloads[context.function_name].extend(_decode(r) for r in event["Records"])


async def poison(event: dict[str, Any], context: Any) -> None:
    """Fails every batch that holds a record whose payload says ``poison``."""
    decoded = [_decode(r) for r in event["Records"]]
    if any(p.get("poison") for p in decoded):
        raise ValueError("poison record")
    with _lock:
        events[context.function_name].append(event)
        payloads[context.function_name].extend(decoded)


def append_to_file(event: dict[str, Any], context: Any) -> None:
    """For a daemon in a subprocess: one line per record, flushed before returning."""
    lines = "".join(f"{r['kinesis']['partitionKey']} {_decode(r)['n']}\n" for r in event["Records"])
    with open(os.environ["ESMD_TEST_OUTPUT"], "a") as out:
        out.write(lines)
        out.flush()
        os.fsync(out.fileno())


async def slow_collect(event: dict[str, Any], context: Any) -> None:
    """``collect``, 20 ms a batch: a run long enough to reshard in its middle."""
    import asyncio

    await asyncio.sleep(0.02)
    await collect(event, context)
