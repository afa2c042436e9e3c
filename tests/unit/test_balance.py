"""The counter identities of soak and chaos runs (service/devtools/balance.py), and the
record ids the recording sink reads from each source's event."""

from __future__ import annotations

import base64
from dataclasses import replace

import orjson
from prometheus_client import generate_latest

from service.devtools.balance import Counters, imbalances
from service.devtools.sink import record_ids
from service.metrics import Metrics


def page(**counts: float) -> str:
    metrics = Metrics()
    m = metrics.for_mapping("m", "kafka")
    for name, value in counts.items():
        if name == "commit_errors":
            m.error("commit", int(value))
        else:
            getattr(m, name).inc(value)
    metrics.for_mapping("other", "kafka").polled.inc(1000)  # another mapping: not summed
    return generate_latest(metrics.registry).decode()


def test_counters_are_read_for_one_mapping() -> None:
    c = Counters.from_metrics(page(polled=10, filtered_out=1, commit_errors=2), "m")
    assert (c.polled, c.filtered_out, c.commit_errors, c.invoked) == (10, 1, 2, 0)


def test_retries_balance_with_attempts_counted() -> None:
    # 10 polled, 1 filtered; a batch of 9 fails twice then goes to the destination; then
    # 10 more polled, all delivered at the first attempt
    c = Counters(polled=20, filtered_out=1, invoked=9 * 2 + 10, failed_invoke=18,
                 on_failure_destination_delivered=9, committed=20)  # fmt: skip
    assert imbalances(c, succeeded=10, redelivery=False) == []
    assert imbalances(c, succeeded=11, redelivery=False) != []  # one delivery too many
    past = replace(c, committed=21)  # a commit past a record not settled
    assert imbalances(past, succeeded=10, redelivery=False) == ["committed <= polled: 21 > 20"]


def test_sqs_redelivered_messages_count_as_polled_again() -> None:
    # 10 received: 1 filtered, 9 invoked, 3 of them failed and came back, then succeeded
    c = Counters(polled=13, filtered_out=1, invoked=12, failed_invoke=3, deleted=10)
    assert imbalances(c, succeeded=9, redelivery=True) == []
    lost_delete = Counters(polled=13, filtered_out=1, invoked=12, failed_invoke=3, deleted=9)
    assert imbalances(lost_delete, succeeded=9, redelivery=True) == [
        "deleted = filtered_out + succeeded: 9 != 10"
    ]
    # a delete that failed for good (counted as a commit error): the message comes back
    assert imbalances(replace(lost_delete, commit_errors=1), succeeded=9, redelivery=True) == []


def test_record_ids_of_kafka_sqs_and_kinesis_events() -> None:
    def b64(i: int) -> str:
        return base64.b64encode(orjson.dumps({"id": i})).decode()

    kafka = {"records": {"t-0": [{"value": b64(1)}], "t-1": [{"value": b64(2)}]}}
    sqs = {"Records": [{"body": orjson.dumps({"id": 3}).decode()}]}
    kinesis = {"Records": [{"kinesis": {"data": b64(4)}}]}
    assert [*record_ids(kafka), *record_ids(sqs), *record_ids(kinesis)] == [1, 2, 3, 4]
