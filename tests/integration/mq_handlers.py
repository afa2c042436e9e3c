"""Handlers for the Amazon MQ tests, written as they would be for Lambda."""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from typing import Any

#: per function name: the events received
events: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


def collect(event: dict[str, Any], context: Any) -> None:
    with _lock:
        events[context.function_name].append(event)


def fail_on_poison(event: dict[str, Any], context: Any) -> None:
    """Keep the event; fail the batch when a message's body is ``poison``."""
    collect(event, context)
    for messages in event["rmqMessagesByQueue"].values():
        if any(base64.b64decode(m["data"]) == b"poison" for m in messages):
            raise ValueError("poison message")


_failed_once: set[str] = set()


def fail_first(event: dict[str, Any], context: Any) -> None:
    """Keep the event; the function's first invocation fails."""
    collect(event, context)
    with _lock:
        if context.function_name not in _failed_once:
            _failed_once.add(context.function_name)
            raise ValueError("first invocation fails")


def slow_collect(event: dict[str, Any], context: Any) -> None:
    """Keep the event after 20 ms of work, so a broker restart lands mid-run."""
    time.sleep(0.02)
    collect(event, context)
