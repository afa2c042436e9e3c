"""Handlers for integration tests: they keep every event they receive, by test name."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

events: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


def handle(event: dict[str, Any], context: Any) -> None:
    """Keep the event under the function's name (FunctionName in the mapping)."""
    with _lock:
        events[context.function_name].append(event)
