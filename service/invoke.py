"""Invoker: sends one batch to the target until it is delivered or given up on.

Function errors are retried with exponential backoff and jitter, up to MaximumRetryAttempts
(-1: until it succeeds, AWS's default). Throttling backs off without counting as a retry or
as a failed invocation. The Invoker never acknowledges anything: it returns an outcome and
the Lane decides what the source may checkpoint.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from service.batching import Batch
from service.config import RetryConfig
from service.metrics import MappingMetrics
from service.targets import InvokeResult, Target


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # the target succeeded
    EXHAUSTED = "exhausted"  # retries or record age ran out: destination or drop
    ABANDONED = "abandoned"  # the mapping is stopping; nothing may be acknowledged


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter: attempt n waits in [d/2, d], d = min(cap, base*2^n).

    With base 1 s and cap 60 s: 0.5-1, 1-2, 2-4, 4-8, ... 30-60 s. Equal jitter (not full)
    keeps a floor, so a target that is down is not hammered by near-zero waits.
    """

    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        d: float = min(self.cap, self.base * 2.0 ** min(attempt, 30))
        return d / 2 + random.uniform(0, d / 2)


class Invoker:
    def __init__(
        self,
        target: Target,
        make_event: Callable[[list[dict[str, Any]]], dict[str, Any]],
        metrics: MappingMetrics,
        retry: RetryConfig,
        max_retry_attempts: int,
        stopping: asyncio.Event,
    ) -> None:
        self._target = target
        self._make_event = make_event
        self._metrics = metrics
        self._max_retries = max_retry_attempts
        self._backoff = Backoff(retry.initial_backoff_seconds, retry.max_backoff_seconds)
        self._throttle = Backoff(retry.throttle_backoff_seconds, retry.max_backoff_seconds)
        self._stopping = stopping
        self._log = structlog.get_logger("esmd.invoke").bind(mapping=metrics.mapping)

    async def deliver(self, batch: Batch) -> tuple[Outcome, InvokeResult | None]:
        """Invoke until delivered or given up; the last result comes back with the outcome,
        so a source can read partial batch failures from it."""
        event = self._make_event(batch.records)
        retries = throttles = 0
        while True:
            result = await self._invoke_once(event, len(batch))
            if result.ok:
                return Outcome.DELIVERED, result
            if result.throttled:
                wait = self._throttle.delay(throttles)
                throttles += 1
                self._log.warning("throttled", records=len(batch), retry_in=round(wait, 3))
            else:
                self._metrics.failed_invoke.inc(len(batch))
                if 0 <= self._max_retries <= retries:
                    self._log.error("retries exhausted", records=len(batch), error=result.payload)
                    return Outcome.EXHAUSTED, result
                wait = self._backoff.delay(retries)
                retries += 1
                self._log.warning(
                    "function error",
                    kind=result.function_error,
                    records=len(batch),
                    attempt=retries,
                    retry_in=round(wait, 3),
                    error=_short(result.payload),
                )
            if await self._stopped_within(wait):
                return Outcome.ABANDONED, None

    async def _invoke_once(self, event: dict[str, Any], count: int) -> InvokeResult:
        self._metrics.invoked.inc(count)
        started = time.perf_counter()
        result = await self._target.invoke(event)
        self._metrics.invoke_duration.observe(time.perf_counter() - started)
        return result

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait between retries, cut short by a stop (True)."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True


def _short(payload: Any, limit: int = 500) -> str:
    text = str(payload)
    return text if len(text) <= limit else text[:limit] + "..."


def batch_item_failures(payload: Any, identifiers: list[str]) -> set[str] | None:
    """The items a ReportBatchItemFailures response names as failed; None: the whole batch.

    AWS's rules: no response, no ``batchItemFailures`` or an empty list is complete success;
    an ``itemIdentifier`` that is missing, empty or not in the batch fails the whole batch.
    """
    if not isinstance(payload, dict):
        return set()
    failures = payload.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(identifiers)
    failed = set()
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or ident not in known:
            return None
        failed.add(ident)
    return failed
