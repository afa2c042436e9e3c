"""Delivering one batch of a stream shard with Lambda's stream error rules.

For Kinesis and DynamoDB Streams a failed batch blocks its shard (or, with a
ParallelizationFactor, its share of the shard) until one of these lets it go:

- success; with ReportBatchItemFailures a response naming failed items (itemIdentifier = the
  sequence number) marks the records before the lowest failed one done and retries from it;
- BisectBatchOnFunctionError: a function error splits the batch in two, each half processed
  in order as a batch of its own; splitting does not use up retries, so a poison record ends
  up alone in a batch of one, where MaximumRetryAttempts applies;
- MaximumRetryAttempts (-1: until the record expires) or MaximumRecordAgeInSeconds: the
  records go to the OnFailure destination (AWS's invocation record), else they are dropped,
  and the shard moves on.

Throttling backs off without counting as a retry. A stop during a wait abandons the batch
(:class:`Abandoned`): nothing past its first pending record is checkpointed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from service.destinations import DestinationUnavailable
from service.destinations.records import Failure
from service.invoke import Backoff, batch_item_failures
from service.targets import InvokeResult

if TYPE_CHECKING:
    from service.mapping import Mapping

#: (Lambda record, its size in the event JSON, its ordinal in the shard)
Item = tuple[dict[str, Any], int, int]
#: told the ordinal of the first record of the batch still pending (None: all done)
Progress = Callable[[int | None], None]


class Abandoned(Exception):
    """The shard is stopping: the batch was neither delivered nor given up on."""


@dataclass(frozen=True, slots=True)
class RecordFields:
    """How to read a source's Lambda record: sequence number and arrival (epoch seconds)."""

    sequence: Callable[[dict[str, Any]], str]
    arrival: Callable[[dict[str, Any]], float]


class StreamDelivery:
    """The error rules of one shard worker; stateless between batches except for windows."""

    def __init__(
        self,
        mapping: Mapping,
        shard_id: str,
        fields: RecordFields,
        stopping: asyncio.Event,
    ) -> None:
        cfg = mapping.config
        self._mapping = mapping
        self._target = mapping.require_target()
        self.metrics = mapping.metrics
        self._shard_id = shard_id
        self._fields = fields
        self._stopping = stopping
        self._max_retries = cfg.MaximumRetryAttempts
        self._max_age = float(cfg.MaximumRecordAgeInSeconds)
        self._bisect = cfg.BisectBatchOnFunctionError
        self._partial = cfg.reports_batch_item_failures
        retry = mapping.esmd.retry
        self._backoff = Backoff(retry.initial_backoff_seconds, retry.max_backoff_seconds)
        self._throttle = Backoff(retry.throttle_backoff_seconds, retry.max_backoff_seconds)
        self._log = structlog.get_logger("esmd.stream").bind(mapping=cfg.Name, shard=shard_id)

    async def deliver(
        self, items: list[Item], progress: Progress, extra: dict[str, Any] | None = None
    ) -> Any:
        """Deliver or give up on ``items``; returns the last successful response's payload
        (tumbling windows read ``state`` from it). Raises Abandoned on a stop."""
        if not items:  # a tumbling window's final invocation: no records, only state
            return await self._final(extra or {})
        payload = await self._batch(items, progress, extra or {})
        progress(None)
        return payload

    async def _final(self, extra: dict[str, Any]) -> Any:
        """Retried like a batch; when retries run out there are no records to give up on."""
        attempts = 0
        while True:
            result = await self._invoke_once([], extra)
            attempts += 1
            if result.ok:
                return result.payload
            if 0 <= self._max_retries < attempts:
                self._log.error("final window invocation failed; window closed", invokes=attempts)
                return None
            await self._wait(self._backoff.delay(attempts - 1))

    async def _batch(self, items: list[Item], progress: Progress, extra: dict[str, Any]) -> Any:
        attempts = 0
        while items:
            items = await self._drop_expired(items, attempts, progress)
            if not items:
                return None
            result = await self._invoke_once([i[0] for i in items], extra)
            attempts += 1
            failed_at = self._failed_index(items, result, extra)
            if failed_at is None:
                return result.payload
            if failed_at > 0:  # reported item failures: the records before are done
                items = items[failed_at:]
                progress(items[0][2])
                attempts = 1
            elif self._bisect and len(items) > 1 and not result.ok:
                mid = len(items) // 2
                await self._batch(items[:mid], progress, extra)
                progress(items[mid][2])
                return await self._batch(items[mid:], progress, extra)
            if 0 <= self._max_retries < attempts:
                await self._give_up(items, "RetryAttemptsExhausted", attempts, result)
                return None
            await self._wait(self._backoff.delay(attempts - 1))
        return None

    def _failed_index(
        self, items: list[Item], result: InvokeResult, extra: dict[str, Any]
    ) -> int | None:
        """None: success; else the index of the first record to retry from."""
        if not result.ok:
            return 0
        if extra and not (isinstance(result.payload, dict) and "state" in result.payload):
            self._log.warning("tumbling window response without state: a failure")
            self.metrics.failed_invoke.inc(len(items))
            return 0
        if not self._partial:
            return None
        seqs = [self._fields.sequence(i[0]) for i in items]
        failed = batch_item_failures(result.payload, seqs)
        if failed is None:
            self.metrics.failed_invoke.inc(len(items))
            return 0
        if not failed:
            return None
        index = min(seqs.index(s) for s in failed)
        self.metrics.failed_invoke.inc(len(items) - index)
        return index

    async def _drop_expired(
        self, items: list[Item], attempts: int, progress: Progress
    ) -> list[Item]:
        """MaximumRecordAgeInSeconds: records older than that are given up on unsent."""
        if self._max_age < 0:
            return items
        oldest_allowed = time.time() - self._max_age
        arrival = self._fields.arrival
        n = 0
        while n < len(items) and arrival(items[n][0]) < oldest_allowed:
            n += 1
        if n:
            await self._give_up(items[:n], "RecordAgeExceeded", attempts, None)
            if n < len(items):
                progress(items[n][2])
        return items[n:]

    async def _invoke_once(
        self, records: list[dict[str, Any]], extra: dict[str, Any]
    ) -> InvokeResult:
        event = {"Records": records, **extra} if extra else {"Records": records}
        metrics = self.metrics
        self.metrics.iterator_age.set(
            max(0.0, (time.time() - self._fields.arrival(records[-1])) * 1000) if records else 0
        )
        throttles = 0
        while True:
            metrics.invoked.inc(len(records))
            started = time.perf_counter()
            with metrics.invoke_concurrency.track_inprogress():
                result = await self._target.invoke(event)
            metrics.invoke_duration.observe(time.perf_counter() - started)
            if not result.throttled:
                break
            await self._wait(self._throttle.delay(throttles))
            throttles += 1
        if not result.ok:
            metrics.failed_invoke.inc(len(records))
            self._log.warning(
                "function error",
                kind=result.function_error,
                records=len(records),
                error=str(result.payload)[:300],
            )
        return result

    async def _give_up(
        self, items: list[Item], condition: str, attempts: int, result: InvokeResult | None
    ) -> None:
        records = [i[0] for i in items]
        error = (
            result.payload.get("errorMessage")
            if result and isinstance(result.payload, dict)
            else None
        )
        failure = Failure(
            condition=condition,
            approximate_invoke_count=attempts,
            function_error=result.function_error if result else None,
            error_message=str(error) if error is not None else None,
        )
        try:
            sent = await self._mapping.send_to_on_failure(records, failure, shard_id=self._shard_id)
        except DestinationUnavailable:
            raise Abandoned from None
        if not sent:
            self.metrics.dropped.inc(len(records))
            self._log.error(
                "records dropped",
                records=len(records),
                condition=condition,
                first=self._fields.sequence(records[0]),
                invokes=attempts,
            )

    async def _wait(self, seconds: float) -> None:
        """Sleep between retries; a stop cuts it short and abandons the batch."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise Abandoned
