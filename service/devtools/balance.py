"""The counter identities a settled mapping satisfies, checked from its /metrics page.

What the counters count (service/metrics.py, service/invoke.py):

- ``esm_polled_events_total``: records read from the source, once per read: an SQS message
  received again after its visibility timeout counts again;
- ``esm_filtered_out_events_total``: records that matched no filter (acknowledged unsent);
- ``esm_invoked_events_total``: records in each invocation *attempt*: a batch of 10 tried 3
  times counts 30 (throttled attempts and Invoke API errors count too: the identities below
  hold for runs without them);
- ``esm_failed_invoke_events_total``: records in attempts that failed;
- ``esm_on_failure_destination_delivered_events_total``: records given up on and accepted by
  the OnFailure destination; ``esm_dropped_events_total``: given up on and not accepted, or
  over the payload cap.

So with ``succeeded`` the records delivered by successful invocations (counted at the
target), once every polled record is settled:

- attempts: ``invoked = succeeded + failed_invoke``;
- records, sources retrying in place (Kafka, streams):
  ``polled = filtered_out + succeeded + on_failure_delivered + dropped``;
- records, redelivery sources (SQS): a failed message goes back to the queue and is polled
  again, so ``polled = filtered_out + succeeded + failed_invoke + dropped``, and
  ``deleted = filtered_out + succeeded`` as long as every DeleteMessageBatch worked. A
  delete that failed for good (the queue was down, a receipt handle went stale) is counted
  in ``esm_errors_total{kind="commit"}`` per attempt, not per message: the message comes back
  and is delivered again, so with commit errors only ``deleted <= filtered_out + succeeded``
  holds, the difference being messages delivered twice.

And Kafka's ``esm_committed_events_total`` counts offsets committed past since the first
record polled, so ``committed <= polled`` (equal when each record was read once): a commit
past a record not yet settled shows as ``committed > polled``.

The issue's shorthand "polled = filtered + invoked + dropped, invoked = succeeded +
on-failure delivered" holds only when every record is invoked once; these are its exact form.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True, slots=True)
class Counters:
    polled: float = 0
    filtered_out: float = 0
    invoked: float = 0
    failed_invoke: float = 0
    dropped: float = 0
    on_failure_destination_delivered: float = 0
    deleted: float = 0
    committed: float = 0
    #: esm_errors_total{kind="commit"}: failed commits (Kafka) or deletes (SQS)
    commit_errors: float = 0

    @classmethod
    def from_metrics(cls, text: str, mapping: str) -> Counters:
        """The mapping's counters from a Prometheus text page."""
        names = {f"esm_{f.name}_events_total": f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                field = names.get(sample.name)
                if sample.name == "esm_errors_total" and sample.labels.get("kind") == "commit":
                    field = "commit_errors"
                if field is not None and sample.labels.get("mapping") == mapping:
                    values[field] = values.get(field, 0) + sample.value
        return cls(**values)


def imbalances(c: Counters, succeeded: int, *, redelivery: bool) -> list[str]:
    """The identities (module docstring) that do not hold; empty when the counters balance."""
    settled_failures = c.failed_invoke if redelivery else c.on_failure_destination_delivered
    name = "failed_invoke" if redelivery else "on_failure_destination_delivered"
    checks = [
        (
            "invoked = succeeded + failed_invoke",
            c.invoked,
            succeeded + c.failed_invoke,
        ),
        (
            f"polled = filtered_out + succeeded + {name} + dropped",
            c.polled,
            c.filtered_out + succeeded + settled_failures + c.dropped,
        ),
    ]
    problems = [f"{rule}: {left:g} != {right:g}" for rule, left, right in checks if left != right]
    if c.committed > c.polled:
        problems.append(f"committed <= polled: {c.committed:g} > {c.polled:g}")
    if redelivery:
        acknowledged = c.filtered_out + succeeded
        if c.commit_errors == 0 and c.deleted != acknowledged:
            problems.append(
                f"deleted = filtered_out + succeeded: {c.deleted:g} != {acknowledged:g}"
            )
        elif c.deleted > acknowledged:
            problems.append(
                f"deleted <= filtered_out + succeeded: {c.deleted:g} > {acknowledged:g}"
            )
    return problems
