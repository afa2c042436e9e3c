"""Structured logs with structlog: JSON lines when stderr is not a terminal, console otherwise."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog

#: structlog's method names and AWS's SystemLogLevel values, as logging levels
_LEVELS = {"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40, "critical": 50}


class LevelPerMapping:
    """Drops a line below its mapping's level (LoggingConfig.SystemLogLevel), or below the
    daemon's level for lines of other mappings and of no mapping."""

    def __init__(self, default: int, per_mapping: dict[str, int]) -> None:
        self._default = default
        self._per_mapping = per_mapping

    def __call__(
        self, _: Any, method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        level = self._per_mapping.get(event.get("mapping", ""), self._default)
        if _LEVELS.get(method, 20) < level:
            raise structlog.DropEvent
        return event


def configure_logging(
    level: str = "INFO",
    json: bool | None = None,
    per_mapping: Mapping[str, str] | None = None,
) -> None:
    """Set up structlog once per process; ``per_mapping`` maps mapping names to their
    LoggingConfig.SystemLogLevel."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    default = _LEVELS.get(level.lower(), 20)
    levels = {name: _LEVELS[value.lower()] for name, value in (per_mapping or {}).items()}
    lowest = min([default, *levels.values()])
    by_mapping: list[structlog.typing.Processor] = (
        [LevelPerMapping(default, levels)] if levels else []
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *by_mapping,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info
            if json
            else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lowest),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiokafka and botocore log through the standard library; keep their warnings only.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
