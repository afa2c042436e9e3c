"""Mapping: one event source mapping at run time: config, state, target, poller, metrics.

The mapping owns what is shared by its lanes (filters, target, invoker settings, the
OnFailure destination) and keeps its poller running: a poller that fails (broker unreachable,
credentials) is restarted with backoff, since a daemon should ride out a source outage rather
than exit.

Records given up on (retries used up, too old) go to :meth:`Mapping.send_to_on_failure`:
AWS's invocation record is sent to the destination, retried until it is accepted, and only
then may the source move past them. Without a destination they are counted dropped.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from typing import Any

import structlog

from service.aws import SharedClients
from service.config import EsmdConfig, MappingConfig
from service.context import MappingContext
from service.destinations import (
    DestinationContext,
    FailedBatch,
    SourceInfo,
    destination_kind,
    make_destination,
)
from service.destinations.records import Failure
from service.destinations.sender import OnFailureSender
from service.errors import EVENT_SOURCE_ERROR, USER_INITIATED, SourceError
from service.filters import FilterCriteria
from service.invoke import Backoff, ErrorPolicy
from service.metrics import MappingMetrics, Metrics
from service.scaling import PollerGroups
from service.sources import Poller, SourceEntry, make_poller, source_entry
from service.sources.kinds import SourceKind
from service.targets import Target, make_target
from service.workers import SOLO, Worker


class State(enum.StrEnum):
    """AWS's mapping states. Updating and Deleting are the API's (service/api/control.py)
    while it replaces or removes a mapping."""

    CREATING = "Creating"
    ENABLING = "Enabling"
    ENABLED = "Enabled"
    DISABLING = "Disabling"
    DISABLED = "Disabled"
    UPDATING = "Updating"
    DELETING = "Deleting"


class Mapping:
    def __init__(
        self,
        config: MappingConfig,
        esmd: EsmdConfig,
        metrics: Metrics,
        worker: Worker = SOLO,
        poller_groups: PollerGroups | None = None,
        clients: SharedClients | None = None,
    ) -> None:
        self.config = config
        self.esmd = esmd
        #: the daemon's poller groups (PollerGroupName), shared with its other mappings
        self.poller_groups = poller_groups if poller_groups is not None else PollerGroups()
        #: the daemon's AWS clients, shared with its other mappings
        self.clients = clients if clients is not None else SharedClients()
        #: which worker process this is: pool bounds are split between the workers
        self.worker = worker
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
        self.on_failure: OnFailureSender | None = None
        self.source_info: SourceInfo | None = None
        #: AWS's StateTransitionReason: why the mapping is in its state (service/errors.py)
        self.state_reason: str | None = None
        self.last_error: str | None = None
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
            function_arn=self.esmd.function_arn(self.config),
        )
        backoff = Backoff(1.0, 30.0)
        failures = 0
        try:
            while not self._stopping.is_set():
                self.state = State.ENABLING
                try:
                    if self.source_info is None:
                        await self._open_on_failure()
                    self.poller = make_poller(self.context())
                    self.state = State.ENABLED
                    await self.poller.run()
                    failures = 0
                except Exception as exc:
                    self.metrics.error("polling")
                    self.set_reason(
                        exc.reason if isinstance(exc, SourceError) else EVENT_SOURCE_ERROR,
                        str(exc),
                    )
                    wait = backoff.delay(failures)
                    failures += 1
                    self._log.error(
                        "poller failed",
                        reason=self.state_reason,
                        error=repr(exc),
                        retry_in=round(wait, 2),
                    )
                    with_stop = asyncio.create_task(self._stopping.wait())
                    await asyncio.wait({with_stop}, timeout=wait)
                    with_stop.cancel()
        finally:
            self.state = State.DISABLED
            await self.target.close()
            if self.on_failure is not None:
                await self.on_failure.close()

    def set_reason(self, reason: str, error: str | None = None) -> None:
        """The state transition reason: USER_INITIATED while the source answers, else an
        AWS code (the source says which by raising a SourceError)."""
        self.metrics.reason(reason, self.state_reason)
        self.state_reason = reason
        if error is not None:
            self.last_error = error

    def stop(self) -> None:
        """Soft stop: no new batches, no more retries; lanes finish what is in flight."""
        self.state = State.DISABLING
        self._stopping.set()
        if self.poller is not None:
            self.poller.stop()

    # --- what the source gets --------------------------------------------------------------

    def context(self) -> MappingContext:
        """The part of the mapping its source uses; the target exists (made in ``run``)."""
        assert self.target is not None, "the target is created before the poller"
        return MappingContext(
            config=self.config,
            esmd=self.esmd,
            metrics=self.metrics,
            target=self.target,
            policy=self.error_policy(),
            filters=self.filters,
            worker=self.worker,
            stopping=self._stopping,
            connected=functools.partial(self.set_reason, USER_INITIATED),
            report=self.set_reason,
            iterator_age=self.source.iterator_age,
            poller_groups=self.poller_groups,
            clients=self.clients,
        )

    @property
    def source(self) -> SourceEntry:
        return source_entry(self.config.source_kind, self.name)

    # --- errors and the OnFailure destination ---------------------------------------------

    @property
    def max_retry_attempts(self) -> int:
        """MaximumRetryAttempts, except where AWS caps infinite retries with an OnFailure
        destination (Kafka: 10)."""
        cfg = self.config
        capped = self.source.retries_with_destination
        if cfg.MaximumRetryAttempts < 0 and capped is not None and cfg.on_failure_destination:
            return capped
        return cfg.MaximumRetryAttempts

    def error_policy(self) -> ErrorPolicy:
        """The source kind's rules with this mapping's settings (see service/invoke.py)."""
        cfg = self.config
        entry = self.source
        age = cfg.MaximumRecordAgeInSeconds
        policy = ErrorPolicy(
            traits=entry.traits,
            give_up=self._give_up,
            redelivery=entry.redelivery,
            max_retries=self.max_retry_attempts,
            bisect=cfg.BisectBatchOnFunctionError,
            max_record_age=float(age) if age > 0 else None,
            report_item_failures=cfg.reports_batch_item_failures,
            oversize=entry.oversize,
        )
        return policy

    async def send_to_on_failure(
        self, records: list[dict[str, Any]], failure: Failure, *, shard_id: str | None = None
    ) -> bool:
        """Send AWS's invocation record for these records to the OnFailure destination;
        True once it was accepted (and counted delivered). False when the mapping has no
        destination, or the destination refused ``retry.destination_attempts`` sends: the
        caller counts them dropped. Raises DestinationUnavailable when the mapping stops
        first: do not move past the records."""
        if self.on_failure is None or self.source_info is None:
            return False
        return await self.on_failure.send(FailedBatch(records, failure, self.source_info, shard_id))

    async def _give_up(
        self, records: list[dict[str, Any]], failure: Failure, shard_id: str | None = None
    ) -> None:
        """Records given up on by a lane: to the OnFailure destination, else dropped.
        ``shard_id``: the stream shard they came from (invocation records name it)."""
        if await self.send_to_on_failure(records, failure, shard_id=shard_id):
            return
        self.metrics.dropped.inc(len(records))
        self._log.error(
            "records dropped",
            records=len(records),
            condition=failure.condition,
            invokes=failure.approximate_invoke_count,
            error=failure.error_message,
        )

    async def _open_on_failure(self) -> None:
        """Describe the source for invocation records and open the destination, if any."""
        cfg = self.config
        destination = cfg.on_failure_destination
        source = cfg.SelfManagedEventSource
        servers = list(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS) if source else []
        kafka_client: dict[str, Any] = {}
        # an MSK source's brokers (invocation records name them) and a kafka:// destination's
        # credentials are looked up only when a destination needs them
        kafka_destination = destination_kind(destination or "") == "kafka"
        if cfg.source_kind.is_kafka and destination and (kafka_destination or not source):
            from service.sources.kafka_auth import kafka_connection

            servers, auth = await kafka_connection(cfg, self.esmd.aws)
            kafka_client = auth.client_kwargs()
        self.source_info = _source_info(self, servers)
        if destination is None or destination_kind(destination) is None:
            return
        context = DestinationContext(self.esmd.aws, servers, kafka_client)
        sender = OnFailureSender(
            make_destination(destination, context),
            self.metrics,
            self._stopping,
            Backoff(self.esmd.retry.initial_backoff_seconds, self.esmd.retry.max_backoff_seconds),
            attempts=self.esmd.retry.destination_attempts,
            block=self.esmd.retry.block_on_destination_failure,
        )
        await sender.open()
        self.on_failure = sender

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.config.uuid,
            "state": self.state.value,
            "state_reason": self.state_reason,
            "last_error": self.last_error,
            "source": self.config.source_kind.value,
            "function": self.config.FunctionName,
            "poller": self.poller.status() if self.poller else None,
        }


def _source_info(mapping: Mapping, servers: list[str]) -> SourceInfo:
    cfg = mapping.config
    kind = cfg.source_kind
    return SourceInfo(
        kind="kafka" if kind.is_kafka else kind.value,
        mapping_uuid=cfg.uuid,
        function_arn=mapping.esmd.function_arn(cfg),
        event_source_arn=cfg.EventSourceArn,
        bootstrap_servers=",".join(servers),
        event_source="aws:kafka" if kind is SourceKind.MSK else "SelfManagedKafka",
    )
