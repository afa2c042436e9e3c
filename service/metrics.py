"""Prometheus metrics: AWS's ESM metric names in snake case, prefixed ``esm_``.

Each daemon owns a :class:`Metrics` (its own CollectorRegistry, so tests and several daemons
in one process do not share counters). A mapping gets a :class:`MappingMetrics` whose
children are bound to its labels once, so the hot path only calls ``inc(n)`` per batch.

The set, every series labelled ``mapping`` and ``source``:

- counters (``_total``): ``esm_polled_events``, ``esm_filtered_out_events``,
  ``esm_invoked_events``, ``esm_failed_invoke_events``, ``esm_dropped_events``,
  ``esm_on_failure_destination_delivered_events``, ``esm_deleted_events`` (SQS),
  ``esm_committed_events`` (Kafka), ``esm_errors`` (``kind``: polling, invoke, commit,
  on_failure_destination, schema_registry). They exist at 0 from the mapping's start,
  so ``rate()`` and ``increase()`` see the first increment;
- gauges: ``esm_offset_lag`` (Kafka, ``partition`` label: sum and max are PromQL's),
  ``esm_iterator_age_milliseconds`` (Kinesis and DynamoDB Streams), ``esm_pollers``
  (``kind`` current or desired), ``esm_invoke_concurrency`` (invocations in flight),
  ``esm_invoke_concurrency_limit`` (SQS: how many the scaler allows now),
  ``esm_poller_group_pollers`` (``group`` and ``kind`` labels: a PollerGroupName's shared
  pool; grouped mappings show no ``esm_pollers`` of their own), ``esm_poller_group_member``
  (1 for each mapping of a group, to select a group by its mappings), and esmd's own
  ``esmd_asyncio_tasks`` (unlabelled: the process's asyncio tasks, set when /metrics is
  served; a soak run watches it for leaks);
- histograms: ``esm_batch_size`` (``reason`` the batch closed: size, window, bytes, ...) and
  ``esm_invoke_duration_seconds``.

The dashboard in ``deploy/grafana/esmd-dashboard.json`` queries these names; its test
(``tests/integration/test_dashboard.py``) checks that each of its queries returns data.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LABELS = ("mapping", "source")
#: the ``kind`` label of esm_errors_total: AWS's ErrorCount family for event source mappings
ErrorKind = Literal["polling", "invoke", "commit", "on_failure_destination", "schema_registry"]
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, _LABELS, registry=r)

        self.polled = counter("esm_polled_events", "Records read from the source")
        self.filtered_out = counter("esm_filtered_out_events", "Records that matched no filter")
        self.invoked = counter("esm_invoked_events", "Records sent to the target (each attempt)")
        self.failed_invoke = counter(
            "esm_failed_invoke_events", "Records in invocations that failed"
        )
        self.dropped = counter(
            "esm_dropped_events", "Records given up on that no destination accepted (or none set)"
        )
        self.on_failure_delivered = counter(
            "esm_on_failure_destination_delivered_events",
            "Records sent to the OnFailure destination",
        )
        self.deleted = counter(
            "esm_deleted_events", "SQS messages deleted, MQ messages acknowledged, after processing"
        )
        self.committed = counter("esm_committed_events", "Kafka records whose offset was committed")
        self.errors = Counter(
            "esm_errors",
            "Errors by AWS's ErrorCount family (kind: " + ", ".join(ERROR_KINDS) + ")",
            (*_LABELS, "kind"),
            registry=r,
        )
        self.offset_lag = Gauge(
            "esm_offset_lag",
            "Records in the partition not yet processed",
            (*_LABELS, "partition"),
            registry=r,
            multiprocess_mode="livesum",  # a partition is one worker's at a time
        )
        self.iterator_age = Gauge(
            "esm_iterator_age_milliseconds",
            "Age of the newest record processed",
            _LABELS,
            registry=r,
            multiprocess_mode="livemax",
        )
        # the modes say how the supervisor merges the workers' values (service/workers.py)
        self.pollers = Gauge(
            "esm_pollers",
            "Pollers of the mapping",
            (*_LABELS, "kind"),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "esm_batch_size",
            "Records per invocation",
            (*_LABELS, "reason"),
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.invoke_duration = Histogram(
            "esm_invoke_duration_seconds",
            "Duration of one invocation",
            _LABELS,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.state_reason = Gauge(
            "esm_state_reason",
            "1 for the mapping's current state transition reason (AWS's codes)",
            (*_LABELS, "reason"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.poller_group_pollers = Gauge(
            "esm_poller_group_pollers",
            "Pollers of a poller group (PollerGroupName), shared by its mappings",
            ("group", "kind"),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.poller_group_member = Gauge(
            "esm_poller_group_member",
            "1 while the mapping is in the poller group (joins a group to its mappings)",
            (*_LABELS, "group"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.invoke_concurrency = Gauge(
            "esm_invoke_concurrency",
            "Invocations of the mapping in flight (AWS: the function's ConcurrentExecutions)",
            _LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.invoke_concurrency_limit = Gauge(
            "esm_invoke_concurrency_limit",
            "Invocations of the mapping its scaler allows in flight now (SQS: the on-demand "
            "ramp or provisioned pollers x 10)",
            _LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )

        self.asyncio_tasks = Gauge(
            "esmd_asyncio_tasks",
            "asyncio tasks of the daemon's event loop (summed over worker processes)",
            registry=r,
            multiprocess_mode="livesum",
        )

    def count_tasks(self) -> None:
        """Set esmd_asyncio_tasks from the running loop (call it from inside the loop)."""
        self.asyncio_tasks.set(len(asyncio.all_tasks()))

    def for_mapping(self, mapping: str, source: str) -> MappingMetrics:
        labels = (mapping, source)
        return MappingMetrics(
            mapping=mapping,
            source=source,
            metrics=self,
            polled=self.polled.labels(*labels),
            filtered_out=self.filtered_out.labels(*labels),
            invoked=self.invoked.labels(*labels),
            failed_invoke=self.failed_invoke.labels(*labels),
            dropped=self.dropped.labels(*labels),
            on_failure_delivered=self.on_failure_delivered.labels(*labels),
            deleted=self.deleted.labels(*labels),
            committed=self.committed.labels(*labels),
            errors={kind: self.errors.labels(*labels, kind) for kind in ERROR_KINDS},
            invoke_duration=self.invoke_duration.labels(*labels),
            invoke_concurrency=self.invoke_concurrency.labels(*labels),
        )


@dataclass(frozen=True, slots=True)
class MappingMetrics:
    """The metric children of one mapping."""

    mapping: str
    source: str
    metrics: Metrics
    polled: Counter
    filtered_out: Counter
    invoked: Counter
    failed_invoke: Counter
    dropped: Counter
    on_failure_delivered: Counter
    deleted: Counter
    committed: Counter
    #: esm_errors_total by kind (see ERROR_KINDS); count one with :meth:`error`
    errors: dict[str, Counter]
    invoke_duration: Histogram
    #: ``inc()`` before the target call, ``dec()`` after it (``track_inprogress()`` does both)
    invoke_concurrency: Gauge

    @property
    def iterator_age(self) -> Gauge:
        """AWS's IteratorAge: how old (ms) the last record of the batch just sent is.

        Bound on first use rather than at the mapping's start: a gauge at 0 would claim a
        Kafka or SQS mapping is caught up on a stream it does not read.
        """
        return self.metrics.iterator_age.labels(self.mapping, self.source)

    def error(self, kind: ErrorKind, count: int = 1) -> None:
        """Count an error of AWS's ErrorCount family: polling the source, invoking the target,
        committing a position, delivering to the OnFailure destination, the schema registry."""
        self.errors[kind].inc(count)

    def reason(self, reason: str, previous: str | None) -> None:
        """esm_state_reason: ``reason`` now, ``previous`` no longer."""
        if previous is not None and previous != reason:
            self.metrics.state_reason.labels(self.mapping, self.source, previous).set(0)
        self.metrics.state_reason.labels(self.mapping, self.source, reason).set(1)

    def batch_closed(self, size: int, reason: str) -> None:
        self.metrics.batch_size.labels(self.mapping, self.source, reason).observe(size)

    def offset_lag(self, partition: str) -> Gauge:
        return self.metrics.offset_lag.labels(self.mapping, self.source, partition)

    def pollers(self, kind: str) -> Gauge:
        return self.metrics.pollers.labels(self.mapping, self.source, kind)

    @property
    def concurrency_limit(self) -> Gauge:
        """Bound on first use: only sources whose scaler sets a concurrency have one (SQS)."""
        return self.metrics.invoke_concurrency_limit.labels(self.mapping, self.source)

    @property
    def log_context(self) -> dict[str, str]:
        return {"mapping": self.mapping}

    def poller_group(self, group: str) -> Gauge:
        return self.metrics.poller_group_member.labels(self.mapping, self.source, group)


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """The pool gauges of a poller group (its mappings keep their own counters)."""

    group: str
    metrics: Metrics

    def pollers(self, kind: str) -> Gauge:
        return self.metrics.poller_group_pollers.labels(self.group, kind)

    @property
    def log_context(self) -> dict[str, str]:
        return {"poller_group": self.group}
