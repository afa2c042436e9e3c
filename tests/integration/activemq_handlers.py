"""Handlers for the ActiveMQ tests, written as they would be for Lambda."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import defaultdict
from typing import Any

#: per function name: the events received
events: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


def _note(event: dict[str, Any], context: Any) -> None:
    with _lock:
        events[context.function_name].append(event)


async def collect(event: dict[str, Any], context: Any) -> None:
    _note(event, context)


async def fail_first_time(event: dict[str, Any], context: Any) -> None:
    """Raises on a batch none of whose messages was redelivered: every message fails once,
    then succeeds redelivered."""
    _note(event, context)
    if not any(m["redelivered"] for m in event["messages"]):
        raise RuntimeError("first delivery fails")


async def fail_poison(event: dict[str, Any], context: Any) -> None:
    """Raises whenever the batch holds a message whose data is {"poison": true}."""
    _note(event, context)
    for m in event["messages"]:
        if json.loads(base64.b64decode(m["data"])).get("poison"):
            raise RuntimeError("poison")


def messages(name: str) -> list[dict[str, Any]]:
    with _lock:
        return [m for event in events[name] for m in event["messages"]]


def payloads(name: str) -> list[Any]:
    return [json.loads(base64.b64decode(m["data"])) for m in messages(name)]


async def slow_collect(event: dict[str, Any], context: Any) -> None:
    """50 ms a batch, as a function doing some work: a broker restart lands mid-run."""
    await asyncio.sleep(0.05)
    _note(event, context)
