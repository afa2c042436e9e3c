"""OnFailureSender: hands a FailedBatch to the destination until it is accepted.

A destination that is down must not lose records and must not let the source move past
them, so sending is retried with backoff for as long as the mapping runs; when the mapping
stops first, :class:`DestinationUnavailable` tells the caller to leave the records
unacknowledged.
"""

from __future__ import annotations

import asyncio

import structlog

from service.destinations import Destination, DestinationUnavailable, FailedBatch
from service.invoke import Backoff
from service.metrics import MappingMetrics


class OnFailureSender:
    def __init__(
        self,
        destination: Destination,
        metrics: MappingMetrics,
        stopping: asyncio.Event,
        backoff: Backoff,
    ) -> None:
        self.destination = destination
        self._metrics = metrics
        self._stopping = stopping
        self._backoff = backoff
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

    async def send(self, batch: FailedBatch) -> None:
        """Deliver, retrying with backoff; DestinationUnavailable once the mapping stops."""
        attempt = 0
        while True:
            try:
                await self.destination.send(batch)
            except Exception as exc:
                self._metrics.error("on_failure_destination")
                wait = self._backoff.delay(attempt)
                attempt += 1
                self._log.warning(
                    "on-failure delivery failed",
                    records=len(batch.records),
                    attempt=attempt,
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
            return

    async def _stopped_within(self, seconds: float) -> bool:
        if self._stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True
