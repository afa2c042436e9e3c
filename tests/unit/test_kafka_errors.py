"""AWS's error handling for Kafka mappings, in the Invoker and Lane: bisection, record age,
partial batch responses, retries, and what the checkpoint may pass. The records are Lambda
Kafka records; the target is an in-memory fake deciding per record whether to fail."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from service.batching import Batch, BatchBuilder
from service.config import RetryConfig
from service.destinations import DestinationUnavailable
from service.destinations.records import Failure
from service.invoke import Abandoned, ErrorPolicy, Invoker
from service.lane import Kept, Lane
from service.metrics import Metrics
from service.targets import InvokeResult
from service.traits import KAFKA

FAST = RetryConfig(
    initial_backoff_seconds=0.001, max_backoff_seconds=0.005, throttle_backoff_seconds=0.001
)
NOW = 1_700_000_000.0


def record(offset: int, age: float = 0.0) -> dict[str, Any]:
    return {
        "topic": "t",
        "partition": 0,
        "offset": offset,
        "timestamp": int((NOW - age) * 1000),
        "timestampType": "CREATE_TIME",
        "value": "e30=",
        "headers": [],
    }


def event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eventSource": "SelfManagedKafka", "records": {"t-0": records}}


Respond = Callable[[list[int]], InvokeResult]


class Target:
    """Answers each call with ``respond(offsets)``; keeps the offsets of every call."""

    name = "fake"

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.calls: list[list[int]] = []

    async def invoke(self, ev: dict[str, Any]) -> InvokeResult:
        offsets = [r["offset"] for r in ev["records"]["t-0"]]
        self.calls.append(offsets)
        await asyncio.sleep(0)
        return self.respond(offsets)

    async def close(self) -> None:
        pass

    @property
    def delivered(self) -> list[int]:
        """Offsets of calls that succeeded as a whole (no error, no batchItemFailures)."""
        out = []
        for offsets in self.calls:
            result = self.respond(offsets)
            if result.ok and "batchItemFailures" not in (result.payload or {}):
                out += offsets
        return out


def fails_on(bad: set[int]) -> Respond:
    def respond(offsets: list[int]) -> InvokeResult:
        if bad & set(offsets):
            return InvokeResult({"errorMessage": "bad record", "errorType": "E"}, "Unhandled")
        return InvokeResult({"ok": True})

    return respond


GivenUp = list[tuple[list[int], Failure]]


def invoker(
    target: Target,
    *,
    retries: int = -1,
    bisect: bool = False,
    max_age: float | None = None,
    partial: bool = False,
    clock: Callable[[], float] = lambda: NOW,
    stopping: asyncio.Event | None = None,
    given_up: GivenUp | None = None,
    give_up: Any = None,
) -> tuple[Invoker, Metrics]:
    metrics = Metrics()

    async def keep(records: list[dict[str, Any]], failure: Failure) -> None:
        if given_up is not None:
            given_up.append(([r["offset"] for r in records], failure))

    policy = ErrorPolicy(
        give_up=give_up or keep,
        traits=KAFKA,
        max_retries=retries,
        bisect=bisect,
        max_record_age=max_age,
        report_item_failures=partial,
        clock=clock,
    )
    made = Invoker(
        target,
        event,
        metrics.for_mapping("m", "kafka"),
        FAST,
        policy,
        stopping or asyncio.Event(),
    )
    return made, metrics


def batch_of(records: list[dict[str, Any]]) -> Batch:
    return Batch(records, records[0]["offset"], records[-1]["offset"], 100, "size")


def metric(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"mapping": "m", "source": "kafka"}) or 0


# --- bisection ------------------------------------------------------------------------------


async def test_bisection_isolates_the_bad_record_and_delivers_the_rest() -> None:
    target, given_up = Target(fails_on({5})), []
    inv, metrics = invoker(target, retries=0, bisect=True, given_up=given_up)
    assert (await inv.process(batch_of([record(i) for i in range(8)]))).released == []
    assert target.calls == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [6, 7],
    ]
    # every invocation of record 5 counts: the batch, two halves, itself
    assert given_up == [([5], Failure("RetryAttemptsExhausted", 4, "Unhandled", 200, "bad record"))]
    assert sorted(target.delivered) == [0, 1, 2, 3, 4, 6, 7]
    assert metric(metrics, "esm_failed_invoke_events_total") == 8 + 4 + 2 + 1


async def test_bisected_single_record_is_retried_up_to_maximum_retry_attempts() -> None:
    target, given_up = Target(fails_on({1})), []
    inv, _ = invoker(target, retries=2, bisect=True, given_up=given_up)
    await inv.process(batch_of([record(0), record(1)]))
    assert target.calls == [[0, 1], [0], [1], [1], [1]]
    assert given_up == [([1], Failure("RetryAttemptsExhausted", 4, "Unhandled", 200, "bad record"))]


async def test_without_bisection_the_whole_batch_is_retried_then_given_up() -> None:
    target, given_up = Target(fails_on({2})), []
    inv, _ = invoker(target, retries=1, given_up=given_up)
    await inv.process(batch_of([record(i) for i in range(4)]))
    assert target.calls == [[0, 1, 2, 3]] * 2
    assert [offsets for offsets, _ in given_up] == [[0, 1, 2, 3]]


# --- record age -----------------------------------------------------------------------------


async def test_records_older_than_the_maximum_age_are_given_up_before_invoking() -> None:
    target, given_up = Target(fails_on(set())), []
    inv, _ = invoker(target, max_age=60, given_up=given_up)
    records = [record(0, age=120), record(1, age=61), record(2, age=5), record(3)]
    assert (await inv.process(batch_of(records))).released == []
    assert given_up == [([0, 1], Failure("RecordAgeExceeded", 0))]
    assert target.calls == [[2, 3]]


async def test_records_that_age_out_during_retries_leave_with_record_age_exceeded() -> None:
    clock = [NOW]
    target, given_up = Target(fails_on({0, 1})), []

    def respond(offsets: list[int]) -> InvokeResult:
        clock[0] += 30  # each attempt takes half a minute
        return fails_on({0, 1})(offsets)

    target.respond = respond
    inv, _ = invoker(target, max_age=70, clock=lambda: clock[0], given_up=given_up)
    await inv.process(batch_of([record(0, age=10), record(1, age=10)]))
    # 70 s old (at +60 s) is still allowed; 100 s old (at +90 s) is not
    assert target.calls == [[0, 1], [0, 1], [0, 1]]
    assert given_up == [([0, 1], Failure("RecordAgeExceeded", 3, "Unhandled", 200, "bad record"))]


async def test_no_maximum_age_means_no_record_expires() -> None:
    target = Target(fails_on(set()))
    inv, _ = invoker(target)
    await inv.process(batch_of([record(0, age=10**6)]))
    assert target.calls == [[0]]


# --- partial batch responses ----------------------------------------------------------------


def reports(failed: list[Any]) -> Respond:
    """First call: report ``failed`` as batchItemFailures; later calls succeed."""
    calls = []

    def respond(offsets: list[int]) -> InvokeResult:
        calls.append(offsets)
        if len(calls) == 1:
            return InvokeResult({"batchItemFailures": [{"itemIdentifier": f} for f in failed]})
        return InvokeResult({"batchItemFailures": []})

    return respond


async def test_partial_failure_retries_from_the_lowest_failed_offset() -> None:
    ids = [{"partition": "t-0", "offset": 4}, {"partition": "t-0", "offset": 2}]
    target = Target(reports(ids))
    inv, metrics = invoker(target, partial=True, bisect=True)
    assert (await inv.process(batch_of([record(i) for i in range(6)]))).released == []
    # records before offset 2 succeeded; bisection does not split a partial response
    assert target.calls == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]
    assert metric(metrics, "esm_failed_invoke_events_total") == 4


async def test_partial_failures_that_exhaust_retries_give_up_only_the_rest() -> None:
    def respond(offsets: list[int]) -> InvokeResult:
        return InvokeResult(
            {"batchItemFailures": [{"itemIdentifier": {"partition": "t-0", "offset": 3}}]}
        )

    target, given_up = Target(respond), []
    inv, _ = invoker(target, partial=True, retries=1, given_up=given_up)
    await inv.process(batch_of([record(i) for i in range(5)]))
    assert target.calls == [[0, 1, 2, 3, 4], [3, 4]]
    assert given_up == [([3, 4], Failure("RetryAttemptsExhausted", 2))]


async def test_malformed_item_identifiers_fail_the_whole_batch() -> None:
    for bad in (
        "t-0-2",  # the SQS/Kinesis string form is not Kafka's
        {"partition": "t-0", "offset": 99},  # not in the batch
        {"partition": "t-1", "offset": 2},  # another partition
        {"partition": "t-0", "offset": "2"},  # offset must be a number
        {"offset": 2},
        None,
    ):
        target = Target(reports([bad]))
        inv, _ = invoker(target, partial=True)
        await inv.process(batch_of([record(i) for i in range(4)]))
        assert target.calls == [[0, 1, 2, 3]] * 2, bad


async def test_batch_item_failures_are_ignored_without_report_batch_item_failures() -> None:
    target = Target(reports([{"partition": "t-0", "offset": 1}]))
    inv, _ = invoker(target, partial=False)
    await inv.process(batch_of([record(i) for i in range(3)]))
    assert target.calls == [[0, 1, 2]]


# --- throttling, stopping, the destination --------------------------------------------------


async def test_throttling_is_retried_without_counting_a_failure_or_a_retry() -> None:
    answers = [InvokeResult(throttled=True)] * 3 + [InvokeResult({})]
    target = Target(lambda offsets: answers.pop(0))
    given_up: GivenUp = []
    inv, metrics = invoker(target, retries=0, given_up=given_up)
    assert (await inv.process(batch_of([record(0)]))).released == []
    assert len(target.calls) == 4
    assert given_up == []
    assert metric(metrics, "esm_failed_invoke_events_total") == 0


async def test_a_destination_that_never_accepts_abandons_the_batch() -> None:
    async def unavailable(records: list[dict[str, Any]], failure: Failure) -> None:
        raise DestinationUnavailable("stopped")

    inv, _ = invoker(Target(fails_on({0})), retries=0, give_up=unavailable)
    with pytest.raises(Abandoned):
        await inv.process(batch_of([record(0)]))


class KafkaCodec:
    """Raw records are offsets; the Lambda record is built from them."""

    envelope_bytes = 10

    def __init__(self, ages: dict[int, float] | None = None) -> None:
        self.ages = ages or {}

    def position(self, raw: int) -> int:
        return raw

    def decode(self, raws: Sequence[int], filters: Any) -> tuple[list[Kept], list[Any], int]:
        return [(record(o, self.ages.get(o, 0)), 10, o) for o in raws], [], raws[-1] + 1

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return event(records)


async def until(cond: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


async def test_lane_checkpoint_waits_for_the_destination_then_passes_the_records() -> None:
    accept = asyncio.Event()
    handed: list[list[int]] = []

    async def give_up(records: list[dict[str, Any]], failure: Failure) -> None:
        await accept.wait()  # the destination is slow
        handed.append([r["offset"] for r in records])

    target = Target(fails_on({1}))
    inv, metrics = invoker(target, retries=0, bisect=True, give_up=give_up)
    mm = metrics.for_mapping("m", "kafka")
    lane = Lane("t-0", KafkaCodec(), None, BatchBuilder(4, 0, 10), inv, mm)
    lane.start()
    lane.put([0, 1, 2, 3, 4, 5])
    await until(lambda: [1] in target.calls)
    await asyncio.sleep(0.02)
    # record 0 was delivered (the first half); record 1 is neither delivered nor handed over
    assert lane.done_upto == 1
    accept.set()
    await until(lambda: lane.done_upto == 6)
    assert handed == [[1]]
    await lane.stop(1)


async def test_lane_does_not_pass_records_whose_destination_delivery_was_abandoned() -> None:
    async def give_up(records: list[dict[str, Any]], failure: Failure) -> None:
        raise DestinationUnavailable("stopped")

    target = Target(fails_on({2}))
    inv, metrics = invoker(target, retries=0, give_up=give_up)
    lane = Lane(
        "t-0", KafkaCodec(), None, BatchBuilder(2, 0, 10), inv, metrics.for_mapping("m", "kafka")
    )
    lane.start()
    lane.put([0, 1, 2, 3])
    await until(lambda: len(target.calls) >= 2)
    await asyncio.sleep(0.02)
    assert lane.done_upto == 2  # the first batch was delivered; the second was not settled
    await lane.stop(1)


async def test_lane_checkpoint_moves_to_the_lowest_failed_record_during_retries() -> None:
    """A partial success settles what precedes the lowest failed record: the checkpoint
    passes it while the rest is retried, so a stop then re-reads from record 3, not 0."""

    def respond(offsets: list[int]) -> InvokeResult:
        failed = [o for o in offsets if o >= 3]
        return InvokeResult(
            {
                "batchItemFailures": [
                    {"itemIdentifier": {"partition": "t-0", "offset": o}} for o in failed
                ]
            }
        )

    target = Target(respond)
    stopping = asyncio.Event()
    inv, metrics = invoker(target, partial=True, stopping=stopping)
    lane = Lane(
        "t-0", KafkaCodec(), None, BatchBuilder(10, 0, 10), inv, metrics.for_mapping("m", "kafka")
    )
    lane.start()
    lane.put(list(range(10)))
    await until(lambda: len(target.calls) >= 3)
    assert lane.done_upto == 3
    stopping.set()
    await lane.stop(1)
    assert lane.done_upto == 3
