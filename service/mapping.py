"""Mapping: one event source mapping at run time: config, state, target, poller, metrics.

The mapping owns what is shared by its lanes (filters, target, invoker settings) and keeps
its poller running: a poller that fails (broker unreachable, credentials) is restarted with
backoff, since a daemon should ride out a source outage rather than exit.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.batching import Batch, BatchBuilder
from service.config import EsmdConfig, MappingConfig
from service.filters import FilterCriteria
from service.invoke import Backoff, Invoker
from service.lane import Codec, Lane
from service.metrics import MappingMetrics, Metrics
from service.sources import Poller, make_poller
from service.targets import Target, make_target


class State(enum.StrEnum):
    """AWS's mapping states, as far as a daemon has them."""

    CREATING = "Creating"
    ENABLING = "Enabling"
    ENABLED = "Enabled"
    DISABLING = "Disabling"
    DISABLED = "Disabled"


class Mapping:
    def __init__(self, config: MappingConfig, esmd: EsmdConfig, metrics: Metrics) -> None:
        self.config = config
        self.esmd = esmd
        self.metrics: MappingMetrics = metrics.for_mapping(config.Name, config.source_kind.value)
        self.filters = (
            FilterCriteria.parse(config.FilterCriteria.model_dump())
            if config.FilterCriteria and config.FilterCriteria.Filters
            else None
        )
        self.shutdown_grace = esmd.server.shutdown_grace_seconds
        self.state = State.CREATING if config.Enabled else State.DISABLED
        self.target: Target | None = None
        self.poller: Poller | None = None
        self._stopping = asyncio.Event()
        self._log = structlog.get_logger("esmd.mapping").bind(mapping=config.Name)

    @property
    def name(self) -> str:
        return self.config.Name

    @property
    def ready(self) -> bool:
        return self.state in (State.ENABLED, State.DISABLED)

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until ``stop()``; restarts the poller with backoff when it fails."""
        if not self.config.Enabled:
            return
        function = self.esmd.function_for(self.config)
        self.target = make_target(
            self.config.FunctionName,
            function,
            region=self.esmd.aws.region,
            endpoint_url=self.esmd.aws.endpoint_for("lambda"),
        )
        backoff = Backoff(1.0, 30.0)
        failures = 0
        try:
            while not self._stopping.is_set():
                self.state = State.ENABLING
                self.poller = make_poller(self)
                try:
                    self.state = State.ENABLED
                    await self.poller.run()
                    failures = 0
                except Exception as exc:
                    self.metrics.errors.inc()
                    wait = backoff.delay(failures)
                    failures += 1
                    self._log.error("poller failed", error=repr(exc), retry_in=round(wait, 2))
                    with_stop = asyncio.create_task(self._stopping.wait())
                    await asyncio.wait({with_stop}, timeout=wait)
                    with_stop.cancel()
        finally:
            self.state = State.DISABLED
            await self.target.close()

    def stop(self) -> None:
        """Soft stop: no new batches, no more retries; lanes finish what is in flight."""
        self.state = State.DISABLING
        self._stopping.set()
        if self.poller is not None:
            self.poller.stop()

    # --- what pollers use -----------------------------------------------------------------

    def require_target(self) -> Target:
        """The target; pollers are made after it, in ``run``."""
        assert self.target is not None, "the target is created before the poller"
        return self.target

    def new_lane(self, key: str, codec: Codec, *, on_backpressure: Callable[[bool], None]) -> Lane:
        cfg = self.config
        assert self.target is not None
        invoker = Invoker(
            self.target,
            codec.make_event,
            self.metrics,
            self.esmd.retry,
            cfg.MaximumRetryAttempts,
            self._stopping,
        )
        builder = BatchBuilder(cfg.batch_size, cfg.batching_window_seconds, codec.envelope_bytes)
        return Lane(
            key,
            codec,
            self.filters,
            builder,
            invoker,
            self.metrics,
            self._give_up,
            max_queued=max(10_000, 4 * cfg.batch_size),
            on_backpressure=on_backpressure,
        )

    async def _give_up(self, batch: Batch) -> None:
        """Records whose retries ran out: to the OnFailure destination, else dropped."""
        self.metrics.dropped.inc(len(batch))
        self._log.error(
            "records dropped after retries",
            records=len(batch),
            first=batch.first_position,
            last=batch.last_position,
        )

    def aws_client(self, service: str, connections: int = 10) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore client for this mapping. `connections` sizes its HTTP pool: a source
        whose long polls hold connections must leave room for its deletes and checkpoints."""
        aws = self.esmd.aws
        return get_session().create_client(  # type: ignore[no-any-return]
            service,
            region_name=aws.region,
            endpoint_url=aws.endpoint_for(service),
            config=AioConfig(max_pool_connections=connections),
        )

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.config.uuid,
            "state": self.state.value,
            "source": self.config.source_kind.value,
            "function": self.config.FunctionName,
            "poller": self.poller.status() if self.poller else None,
        }
