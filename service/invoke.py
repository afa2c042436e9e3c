"""Invoker: sends one batch to the target until it is delivered or given up on.

Function errors are retried with exponential backoff and jitter, up to MaximumRetryAttempts
(-1: until it succeeds, AWS's default). Throttling backs off without counting as a retry or
as a failed invocation. The Invoker never acknowledges anything: it returns an outcome and
the Lane decides what the source may checkpoint.

Two entry points: :meth:`Invoker.deliver` invokes one batch as it is (SQS, which retries by
redelivery), and :meth:`Invoker.process` applies the error handling of ordered sources
(Kafka, Kinesis, DynamoDB Streams) as AWS does:

- MaximumRecordAgeInSeconds: before each attempt, records older than that are given up on
  (condition ``RecordAgeExceeded``) and the rest are invoked;
- ReportBatchItemFailures: a response naming failed records retries from the lowest of them;
  what precedes it succeeded; a malformed response fails the whole batch;
- BisectBatchOnFunctionError: a failed batch is split in two and each half retried in order;
  splitting does not count against MaximumRetryAttempts;
- when the retries are used up the remaining records are given up on
  (``RetryAttemptsExhausted``): the ``give_up`` callback sends them to the OnFailure
  destination or counts them dropped. Only then does ``process`` return, so the lane's
  checkpoint passes a record only once it was delivered or handed over.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from service.batching import Batch
from service.config import RetryConfig
from service.metrics import MappingMetrics
from service.targets import InvokeResult, Target

if TYPE_CHECKING:
    from service.destinations.records import Failure
    from service.traits import RecordTraits


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


#: records given up on, and why; returns once they are handed over (or raises to abandon)
GiveUp = Callable[[list[dict[str, Any]], "Failure"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ErrorHandling:
    """A mapping's error-handling settings for ordered sources (see :meth:`Invoker.process`)."""

    give_up: GiveUp
    traits: RecordTraits | None = None  # None: no record age, no partial batch responses
    bisect: bool = False
    max_record_age: float | None = None  # seconds; None: records never expire
    report_item_failures: bool = False
    clock: Callable[[], float] = time.time


class _Abandoned(Exception):
    """The mapping stopped while a batch still had records to retry."""


class Invoker:
    def __init__(
        self,
        target: Target,
        make_event: Callable[[list[dict[str, Any]]], dict[str, Any]],
        metrics: MappingMetrics,
        retry: RetryConfig,
        max_retry_attempts: int,
        stopping: asyncio.Event,
        *,
        errors: ErrorHandling | None = None,
    ) -> None:
        self._errors = errors or ErrorHandling(give_up=self._drop)
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

    # --- ordered sources: retries, record age, partial failures, bisection -----------------

    async def process(self, batch: Batch) -> Outcome:
        """Settle every record of the batch: DELIVERED once each was delivered or given up on
        (and handed to ``give_up``), ABANDONED when the mapping stopped first."""
        from service.destinations import DestinationUnavailable

        try:
            await self._settle(batch.records, retries=0, invokes=0)
        except (_Abandoned, DestinationUnavailable):
            return Outcome.ABANDONED
        return Outcome.DELIVERED

    async def _settle(self, records: list[dict[str, Any]], retries: int, invokes: int) -> None:
        throttles = 0
        last: InvokeResult | None = None
        while True:
            records = await self._expire(records, invokes, last)
            if not records:
                return
            result = await self._invoke_once(self._make_event(records), len(records))
            if result.throttled:
                wait = self._throttle.delay(throttles)
                throttles += 1
                self._log.warning("throttled", records=len(records), retry_in=round(wait, 3))
                await self._pause(wait)
                continue
            invokes += 1
            last = result
            first = self._first_failed(result, records)
            if first == len(records):
                return
            failed = records if first is None else records[first:]
            self._metrics.failed_invoke.inc(len(failed))
            if first is None and self._errors.bisect and len(records) > 1:
                await self._bisect(records, retries, invokes)
                return
            records = failed
            if 0 <= self._max_retries <= retries:
                await self._errors.give_up(
                    records, _failure("RetryAttemptsExhausted", invokes, result)
                )
                return
            wait = self._backoff.delay(retries)
            retries += 1
            self._log.warning(
                "function error",
                kind=result.function_error or "batchItemFailures",
                records=len(records),
                attempt=retries,
                retry_in=round(wait, 3),
                error=_short(result.payload),
            )
            await self._pause(wait)

    async def _bisect(self, records: list[dict[str, Any]], retries: int, invokes: int) -> None:
        if self._stopping.is_set():
            raise _Abandoned
        half = len(records) // 2
        self._log.info("bisecting failed batch", records=len(records))
        await self._settle(records[:half], retries, invokes)
        await self._settle(records[half:], retries, invokes)

    def _first_failed(self, result: InvokeResult, records: list[dict[str, Any]]) -> int | None:
        """Index of the first record to retry; ``len(records)``: none; None: all of them."""
        if not result.ok:
            return None
        errors = self._errors
        if not errors.report_item_failures or errors.traits is None:
            return len(records)
        first = errors.traits.first_failed(result.payload, records)
        if first is None:
            self._log.warning("malformed batchItemFailures: the whole batch failed")
        return first

    async def _expire(
        self, records: list[dict[str, Any]], invokes: int, last: InvokeResult | None
    ) -> list[dict[str, Any]]:
        """Give up on records older than MaximumRecordAgeInSeconds; return the others."""
        errors = self._errors
        if errors.max_record_age is None or errors.traits is None:
            return records
        oldest_allowed = errors.clock() - errors.max_record_age
        created = errors.traits.created_at
        if all(created(r) >= oldest_allowed for r in records):
            return records
        expired = [r for r in records if created(r) < oldest_allowed]
        await errors.give_up(expired, _failure("RecordAgeExceeded", invokes, last))
        return [r for r in records if created(r) >= oldest_allowed]

    async def _pause(self, seconds: float) -> None:
        if await self._stopped_within(seconds):
            raise _Abandoned

    async def _drop(self, records: list[dict[str, Any]], failure: Failure) -> None:
        """The default ``give_up``: count the records dropped."""
        self._metrics.dropped.inc(len(records))

    # --- one call -------------------------------------------------------------------------

    async def _invoke_once(self, event: dict[str, Any], count: int) -> InvokeResult:
        self._metrics.invoked.inc(count)
        started = time.perf_counter()
        with self._metrics.invoke_concurrency.track_inprogress():  # esm_invoke_concurrency
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


def _failure(condition: str, invokes: int, last: InvokeResult | None) -> Failure:
    from service.destinations.records import Failure

    error = last.function_error if last is not None else None
    message = last.payload.get("errorMessage") if last and isinstance(last.payload, dict) else None
    return Failure(condition, invokes, error, 200, message if isinstance(message, str) else None)


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
