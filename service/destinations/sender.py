"""OnFailureSender: hands a FailedBatch to the destination, a bounded number of times.

AWS's behaviour, and esmd's default: a destination that keeps refusing (down, missing,
no permission) gets a bounded number of sends with backoff between them; then the records
count as dropped, ``esm_errors_total{kind="on_failure_destination"}`` has risen once per
refused send (AWS's DestinationDeliveryFailures), and the mapping moves on.

``retry.block_on_destination_failure`` (esmd's own) trades that for never losing a record:
sending is retried for as long as the mapping runs, and the partition or shard waits.

Either way, when the mapping stops before the destination accepted the records,
:class:`DestinationUnavailable` tells the caller to leave them unacknowledged (whoever next
owns the partition or shard reads them again).
"""

from __future__ import annotations

import asyncio

import structlog

from service.config import RetryConfig
from service.destinations import Destination, DestinationUnavailable, FailedBatch
from service.invoke import Backoff
from service.metrics import MappingMetrics

_DEFAULTS = RetryConfig()


class OnFailureSender:
    def __init__(
        self,
        destination: Destination,
        metrics: MappingMetrics,
        stopping: asyncio.Event,
        backoff: Backoff,
        *,
        attempts: int = _DEFAULTS.destination_attempts,
        block: bool = _DEFAULTS.block_on_destination_failure,
    ) -> None:
        """``attempts``: sends before giving up (``retry.destination_attempts``); ``block``:
        never give up (``retry.block_on_destination_failure``)."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.destination = destination
        self._metrics = metrics
        self._stopping = stopping
        self._backoff = backoff
        self._attempts = attempts
        self._block = block
        self._log = structlog.get_logger("esmd.destination").bind(
            mapping=metrics.mapping, destination=destination.name
        )

    async def open(self) -> None:
        try:
            await self.destination.open()
        except Exception as exc:  # sends retry; a destination down at start is not fatal
            self._metrics.error("on_failure_destination")
            self._log.warning("destination not reachable yet", error=repr(exc))

    async def close(self) -> None:
        await self.destination.close()

    async def send(self, batch: FailedBatch) -> bool:
        """Deliver the batch's invocation record, retrying with backoff.

        True: the destination accepted it (counted in
        esm_on_failure_destination_delivered_events_total). False: it refused ``attempts``
        sends in a row and the sender gave up; every refused send counted in
        esm_errors_total{kind="on_failure_destination"}, but the records are *not* counted
        dropped here: the caller counts them in esm_dropped_events_total, in the one place
        that also counts records given up on without a destination. Never False when
        blocking. Raises DestinationUnavailable when the mapping stops first.
        """
        failures = 0
        while True:
            try:
                await self.destination.send(batch)
            except Exception as exc:
                self._metrics.error("on_failure_destination")
                failures += 1
                if not self._block and failures >= self._attempts:
                    self._log.error(
                        "on-failure destination refused the records: giving up on them",
                        records=len(batch.records),
                        condition=batch.failure.condition,
                        attempts=failures,
                        error=repr(exc),
                    )
                    return False
                wait = self._backoff.delay(failures - 1)
                self._log.warning(
                    "on-failure delivery failed",
                    records=len(batch.records),
                    attempt=failures,
                    of=None if self._block else self._attempts,
                    retry_in=round(wait, 3),
                    error=repr(exc),
                )
                if await self._stopped_within(wait):
                    raise DestinationUnavailable(
                        f"{self.destination.name}: not delivered before the mapping stopped"
                    ) from exc
                continue
            self._metrics.on_failure_delivered.inc(len(batch.records))
            self._log.info(
                "records sent to the on-failure destination",
                records=len(batch.records),
                condition=batch.failure.condition,
            )
            return True

    async def _stopped_within(self, seconds: float) -> bool:
        if self._stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True
