"""Invoker: the one place where AWS's delivery rules live, for every source.

A lane hands the Invoker a batch; :meth:`Invoker.process` returns once every record of it is
settled, and says which records went back to the source unacknowledged. The rules, decided
once (docs/error-handling.md cites AWS's pages for each):

- **Throttling** (the target said 429 / TooManyRequests) backs off and retries; it is neither
  a retry nor a failed invocation.
- **Invoke API errors** that are not function errors (``InvokeResult.service_error``:
  ResourceNotFound, AccessDenied, KMS*, 5xx, a refused connection) back off and retry until
  the records expire; they never count against MaximumRetryAttempts.
- **MaximumRecordAgeInSeconds**: before each attempt, records older than that, anywhere in the
  batch, are given up on (``RecordAgeExceeded``); the others are invoked.
- **A single record over the 6 MB payload cap** is not retried forever: sources whose policy
  says ``oversize="skip"`` (Kafka, MQ) count it dropped and move on, as AWS does; the others
  give it up to the OnFailure destination (``MaximumPayloadSizeExceeded``).
- **ReportBatchItemFailures**: one parser (:meth:`RecordTraits.failed_indexes`); a malformed
  response fails the whole batch. Ordered sources retry from the lowest failed record (what
  precedes it succeeded); a partial success does not reset the attempt count: a record's
  retries count from its first failure.
- **BisectBatchOnFunctionError** (ordered sources): a batch that failed whole is split in two
  and each half settled in order; splitting does not use up retries.
- **MaximumRetryAttempts**: retries count from the first failure (N retries: at most N + 1
  invocations of a record); then the records are given up on (``RetryAttemptsExhausted``).
- **Redelivery sources** (SQS, MQ) do not retry in process: failed records are *released*
  back to the source, whose visibility timeout or broker redelivery and dead-letter policy
  apply; with a FIFO group function, a failed record releases every later record of its
  group in the batch too, so the group's order holds.

Giving up calls ``policy.give_up``: the OnFailure destination, or the drop counter. Only when
it returned is the record settled, so a source acknowledges a record only once it was
delivered, filtered out or handed over. A stop during any wait raises :class:`Abandoned`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
import structlog

from service.config import MAX_PAYLOAD_BYTES, RetryConfig
from service.metrics import MappingMetrics
from service.targets import InvokeResult, Target
from service.traits import RecordTraits

if TYPE_CHECKING:
    from service.batching import Batch
    from service.destinations.records import Failure


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


Record = dict[str, Any]


class GiveUp(Protocol):
    """Records given up on, and why; returns once they are handed over (or raises to
    abandon). ``shard_id`` names a stream's shard in the invocation record."""

    def __call__(
        self, records: list[Record], failure: Failure, shard_id: str | None = None
    ) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class ErrorPolicy:
    """A mapping's error handling: what its source kind allows, with its config's values."""

    traits: RecordTraits
    give_up: GiveUp
    redelivery: bool = False  # SQS, MQ: failures go back to the source, no retries here
    max_retries: int = -1  # -1: until the records expire
    bisect: bool = False
    max_record_age: float | None = None  # seconds; None: records never expire
    report_item_failures: bool = False
    oversize: Literal["skip", "give_up"] = "give_up"
    group_of: Callable[[Record], Hashable] | None = None  # SQS FIFO: MessageGroupId
    clock: Callable[[], float] = time.time
    max_payload: int = MAX_PAYLOAD_BYTES


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of a batch. ``released`` went back to the source unacknowledged (only
    redelivery sources release); every other record was delivered, or given up on and handed
    over, and may be acknowledged. ``payload`` is the last successful response."""

    released: list[Record]
    payload: Any = None


class Abandoned(Exception):
    """The mapping stopped before the batch was settled: acknowledge none of it."""


class Invoker:
    def __init__(
        self,
        target: Target,
        make_event: Callable[[list[Record]], dict[str, Any]],
        metrics: MappingMetrics,
        retry: RetryConfig,
        policy: ErrorPolicy,
        stopping: asyncio.Event,
        *,
        iterator_age: bool = False,
    ) -> None:
        self.policy = policy
        self._target = target
        self._make_event = make_event
        self._metrics = metrics
        self._backoff = Backoff(retry.initial_backoff_seconds, retry.max_backoff_seconds)
        self._throttle = Backoff(retry.throttle_backoff_seconds, retry.max_backoff_seconds)
        self._stopping = stopping
        self._iterator_age = iterator_age
        self._progress: Callable[[Record], None] | None = None
        self._log = structlog.get_logger("esmd.invoke").bind(mapping=metrics.mapping)

    async def process(
        self,
        batch: Batch,
        extra: dict[str, Any] | None = None,
        progress: Callable[[Record], None] | None = None,
    ) -> Settlement:
        """Settle every record of the batch; ``extra`` fields join the event (tumbling
        windows: their ``state`` must come back in the response). ``progress`` is told of a
        record when every record before it in the batch is settled (a partial success, a
        settled first half), so an ordered source can checkpoint inside a long retry.
        Raises Abandoned."""
        from service.destinations import DestinationUnavailable

        records = batch.records
        try:
            oversized = len(records) == 1 and batch.payload_bytes > self.policy.max_payload
            if oversized and await self._oversized(records, extra):
                return Settlement([])
            if not records:  # a tumbling window's final invocation: state, no records
                return Settlement([], await self._final(extra or {}))
            box: list[Any] = [None]
            self._progress = progress
            released = await self._settle(records, 0, 0, extra, box)
        except DestinationUnavailable:
            raise Abandoned from None
        finally:
            # ``progress`` holds the batch: let it go with the batch, not at the next one
            self._progress = None
        return Settlement(released, box[0])

    # --- the rules ------------------------------------------------------------------------

    async def _settle(
        self,
        records: list[Record],
        retries: int,
        invokes: int,
        extra: dict[str, Any] | None,
        box: list[Any],
    ) -> list[Record]:
        policy = self.policy
        last: InvokeResult | None = None
        outages = 0
        while True:
            records = await self._expire(records, invokes, last)
            if not records:
                return []
            result = await self._invoke(records, extra)
            if result.service_error is not None:
                await self._outage(result, outages, len(records))
                outages += 1
                continue
            invokes += 1
            last = result
            failed = self._failed(result, records, extra)
            if failed == []:
                box[0] = result.payload
                return []
            first = 0 if failed is None else failed[0]
            self._metrics.failed_invoke.inc(len(records) - first)
            if policy.redelivery:
                return self._released(records, failed)
            if failed is None and policy.bisect and len(records) > 1:
                self._log.info("bisecting failed batch", records=len(records))
                half = len(records) // 2
                await self._settle(records[:half], retries, invokes, extra, box)
                self._advance(records[half])
                return await self._settle(records[half:], retries, invokes, extra, box)
            if first:
                self._advance(records[first])
            records = records[first:]
            if 0 <= policy.max_retries <= retries:
                await policy.give_up(records, _failure("RetryAttemptsExhausted", invokes, result))
                return []
            wait = self._backoff.delay(retries)
            retries += 1
            self._log.warning(
                "function error",
                kind=result.function_error or "batchItemFailures",
                records=len(records),
                retry=retries,
                retry_in=round(wait, 3),
                error=_short(result.payload),
            )
            await self._pause(wait)

    def _advance(self, record: Record) -> None:
        if self._progress is not None:
            self._progress(record)

    def _failed(
        self, result: InvokeResult, records: list[Record], extra: dict[str, Any] | None
    ) -> list[int] | None:
        """Indexes of the failed records (``[]``: none); None: the whole batch failed."""
        if not result.ok:
            return None
        if extra is not None and not (
            isinstance(result.payload, dict) and isinstance(result.payload.get("state"), dict)
        ):
            self._log.warning("tumbling window response without state: a failure")
            return None
        if not self.policy.report_item_failures:
            return []
        failed = self.policy.traits.failed_indexes(result.payload, records)
        if failed is None:
            self._log.warning("malformed batchItemFailures: the whole batch failed")
        return failed

    def _released(self, records: list[Record], failed: list[int] | None) -> list[Record]:
        """Redelivery sources: the failed records, and in a FIFO group every later record of
        a group that has a failed one."""
        if failed is None:
            return records
        group_of = self.policy.group_of
        if group_of is None:
            return [records[i] for i in failed]
        marked = set(failed)
        broken: set[Hashable] = set()
        out = []
        for i, r in enumerate(records):
            group = group_of(r)
            if i in marked or group in broken:
                broken.add(group)
                out.append(r)
        return out

    async def _expire(
        self, records: list[Record], invokes: int, last: InvokeResult | None
    ) -> list[Record]:
        """Give up on records older than MaximumRecordAgeInSeconds; return the others."""
        policy = self.policy
        if policy.max_record_age is None or not policy.traits.has_age:
            return records
        oldest_allowed = policy.clock() - policy.max_record_age
        created = policy.traits.created_at
        if all(created(r) >= oldest_allowed for r in records):
            return records
        expired = [r for r in records if created(r) < oldest_allowed]
        await policy.give_up(expired, _failure("RecordAgeExceeded", invokes, last))
        return [r for r in records if created(r) >= oldest_allowed]

    async def _oversized(self, records: list[Record], extra: dict[str, Any] | None) -> bool:
        """One record whose event passes the payload cap (measured exactly): skipped or given
        up on, per the source's policy; True when it was."""
        size = len(orjson.dumps(self._event(records, extra)))
        if size <= self.policy.max_payload:
            return False
        if self.policy.oversize == "skip":
            self._metrics.dropped.inc()
            self._log.error("record over the payload cap skipped", bytes=size)
        else:
            await self.policy.give_up(records, _failure("MaximumPayloadSizeExceeded", 0, None))
        return True

    async def _final(self, extra: dict[str, Any]) -> Any:
        """A tumbling window's final invocation, retried like a batch; when the retries run
        out there is nothing to give up on: the window closes."""
        retries = outages = 0
        while True:
            result = await self._invoke([], extra)
            if result.service_error is not None:
                await self._outage(result, outages, 0)
                outages += 1
                continue
            if self._failed(result, [], extra) == []:
                return result.payload
            if 0 <= self.policy.max_retries <= retries:
                self._log.error("final window invocation failed; window closed")
                return None
            await self._pause(self._backoff.delay(retries))
            retries += 1

    # --- one call -------------------------------------------------------------------------

    async def _invoke(self, records: list[Record], extra: dict[str, Any] | None) -> InvokeResult:
        """One invocation that was not throttled: throttling is waited out here, since it is
        neither a function error nor a retry."""
        event = self._event(records, extra)
        throttles = 0
        while True:
            result = await self._call(event, len(records))
            if not result.throttled:
                return result
            wait = self._throttle.delay(throttles)
            throttles += 1
            self._log.warning("throttled", records=len(records), retry_in=round(wait, 3))
            await self._pause(wait)

    async def _outage(self, result: InvokeResult, outages: int, records: int) -> None:
        """The Invoke call itself failed: back off without counting a retry."""
        self._metrics.error("invoke")
        wait = self._backoff.delay(outages)
        self._log.warning(
            "invoke failed (not a function error)",
            error=result.service_error,
            records=records,
            retry_in=round(wait, 3),
        )
        await self._pause(wait)

    def _event(self, records: list[Record], extra: dict[str, Any] | None) -> dict[str, Any]:
        event = self._make_event(records)
        return {**event, **extra} if extra else event

    async def _call(self, event: dict[str, Any], count: int) -> InvokeResult:
        metrics = self._metrics
        metrics.invoked.inc(count)
        if self._iterator_age and count:
            newest = self.policy.traits.created_at(_last_record(event))
            metrics.iterator_age.set(max(0.0, (time.time() - newest) * 1000))
        started = time.perf_counter()
        with metrics.invoke_concurrency.track_inprogress():  # esm_invoke_concurrency
            result = await self._target.invoke(event)
        metrics.invoke_duration.observe(time.perf_counter() - started)
        return result

    async def _pause(self, seconds: float) -> None:
        """Wait between attempts; a stop cuts it short and abandons the batch."""
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return
        raise Abandoned


def _last_record(event: dict[str, Any]) -> Record:
    records: list[Record] = event["Records"]
    return records[-1]


def _failure(condition: str, invokes: int, last: InvokeResult | None) -> Failure:
    from service.destinations.records import Failure

    error = last.function_error if last is not None else None
    message = last.payload.get("errorMessage") if last and isinstance(last.payload, dict) else None
    return Failure(condition, invokes, error, 200, message if isinstance(message, str) else None)


def _short(payload: Any, limit: int = 500) -> str:
    text = str(payload)
    return text if len(text) <= limit else text[:limit] + "..."
