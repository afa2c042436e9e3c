"""MappingContext: the part of a mapping that its source may use.

Sources depend on this small surface (config, metrics, target, filters, the error policy
with its OnFailure hand-over, AWS clients, lanes) rather than on the whole Mapping, so a
source can be built and tested without a daemon, and ``service.mapping`` and
``service.sources`` do not need each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from service.aws import SharedClients
from service.batching import BatchBuilder
from service.config import EsmdConfig, MappingConfig
from service.filters import FilterCriteria
from service.invoke import ErrorPolicy, Invoker
from service.lane import Acker, Codec, Lane, Slots
from service.metrics import MappingMetrics
from service.scaling import PollerGroups
from service.targets import Target
from service.windows import TumblingWindow
from service.workers import SOLO, Worker


@dataclass
class MappingContext:
    config: MappingConfig
    esmd: EsmdConfig
    metrics: MappingMetrics
    target: Target
    policy: ErrorPolicy
    filters: FilterCriteria | None = None
    worker: Worker = SOLO
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    iterator_age: bool = False  # streams report IteratorAge
    #: the source calls it once it reached its server (and after each recovery): the
    #: mapping's state reason goes back to USER_INITIATED
    connected: Callable[[], None] = lambda: None
    #: the source runs on but says why it is not as configured (a DocumentDB resume token
    #: that expired): (reason, message) become the state reason and last error until the
    #: next ``connected()``
    report: Callable[[str, str], None] = lambda reason, message: None
    #: the process's poller groups (PollerGroupName): its mappings share them
    poller_groups: PollerGroups = field(default_factory=PollerGroups)
    #: the process's AWS clients, shared by its mappings
    clients: SharedClients = field(default_factory=SharedClients)

    @property
    def name(self) -> str:
        return self.config.Name

    @property
    def shutdown_grace(self) -> float:
        return self.esmd.server.shutdown_grace_seconds

    def aws_client(self, service: str, connections: int = 10) -> AbstractAsyncContextManager[Any]:
        """A client of ``service`` shared with the process's other mappings (SharedClients:
        its pool has room for every user's ``connections``)."""
        return self.clients.client(self.esmd.aws, service)

    def invoker(self, codec: Codec, policy: ErrorPolicy | None = None) -> Invoker:
        return Invoker(
            self.target,
            codec.make_event,
            self.metrics,
            self.esmd.retry,
            policy or self.policy,
            self.stopping,
            iterator_age=self.iterator_age,
        )

    def new_lane(
        self,
        key: str,
        codec: Codec,
        *,
        invoker: Invoker | None = None,
        acker: Acker | None = None,
        ordered: bool = True,
        slots: Slots | None = None,
        fifo: bool = False,
        window: TumblingWindow | None = None,
        max_queued: int | None = None,
        on_backpressure: Callable[[bool], None] = lambda paused: None,
        on_settled: Callable[[], None] = lambda: None,
        before_batch: Callable[[], Awaitable[None]] | None = None,
    ) -> Lane:
        cfg = self.config
        builder = BatchBuilder(cfg.batch_size, cfg.batching_window_seconds, codec.envelope_bytes)
        return Lane(
            key,
            codec,
            self.filters,
            builder,
            invoker or self.invoker(codec),
            self.metrics,
            acker=acker,
            ordered=ordered,
            slots=slots,
            fifo=fifo,
            window=window,
            max_queued=max_queued or max(10_000, 4 * cfg.batch_size),
            on_backpressure=on_backpressure,
            on_settled=on_settled,
            before_batch=before_batch,
        )
