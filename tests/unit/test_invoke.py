"""Rules of the one Invoker that the source-specific suites do not reach: Invoke API errors,
the payload cap, redelivery sources (SQS) and their FIFO groups, and the Lane's Acker calls.
The target is an in-memory fake; the contract suite (tests/integration/contract) runs the
same rules on the real servers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from service.batching import Batch, BatchBuilder
from service.config import RetryConfig
from service.destinations.records import Failure
from service.invoke import ErrorPolicy, Invoker
from service.lane import Kept, Lane
from service.metrics import Metrics
from service.targets import InvokeResult
from service.traits import SQS, RecordTraits

FAST = RetryConfig(
    initial_backoff_seconds=0.001, max_backoff_seconds=0.002, throttle_backoff_seconds=0.001
)
IDS = RecordTraits(
    item_id=lambda r: r["id"],
    parse_id=lambda i: i if isinstance(i, str) and i else None,
    created_at=lambda r: float(r.get("at", 1e12)),
)


class Scripted:
    """Answers the n-th call with ``answers[n]`` (the last one repeats); records each call's
    ids."""

    name = "scripted"

    def __init__(self, *answers: InvokeResult) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        self.calls.append([r["id"] for r in event["Records"]])
        await asyncio.sleep(0)
        return self.answers[min(len(self.calls) - 1, len(self.answers) - 1)]

    async def close(self) -> None:
        pass


OK = InvokeResult({"ok": True})
BOOM = InvokeResult({"errorMessage": "boom", "errorType": "E"}, "Unhandled")


def failing(*ids: str) -> InvokeResult:
    return InvokeResult({"batchItemFailures": [{"itemIdentifier": i} for i in ids]})


def make(
    target: Scripted, given_up: list[tuple[list[str], Failure]] | None = None, **policy: Any
) -> tuple[Invoker, Metrics]:
    metrics = Metrics()

    async def give_up(
        records: list[dict[str, Any]], failure: Failure, shard_id: str | None = None
    ) -> None:
        if given_up is not None:
            given_up.append(([r["id"] for r in records], failure))

    invoker = Invoker(
        target,
        lambda records: {"Records": records},
        metrics.for_mapping("m", "sqs"),
        FAST,
        ErrorPolicy(**{"traits": IDS, "give_up": give_up, **policy}),
        asyncio.Event(),
    )
    return invoker, metrics


def records(*ids: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, **extra} for i in ids]


def batch(recs: list[dict[str, Any]], payload: int = 100) -> Batch:
    return Batch(recs, 0, len(recs) - 1, payload, "size")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, {"mapping": "m", "source": "sqs", **labels})
    return found or 0.0


async def test_invoke_api_errors_back_off_and_never_count_as_retries() -> None:
    outage = InvokeResult(service_error="ResourceNotFoundException")
    target = Scripted(outage, outage, outage, OK)
    invoker, metrics = make(target, max_retries=0)
    assert (await invoker.process(batch(records("a", "b")))).released == []
    assert len(target.calls) == 4  # with no retries allowed, a function error would end at 1
    assert sample(metrics, "esm_failed_invoke_events_total") == 0
    assert sample(metrics, "esm_errors_total", kind="invoke") == 3


async def test_invoke_api_errors_end_when_the_records_expire() -> None:
    given_up: list[tuple[list[str], Failure]] = []
    now = [1000.0]
    target = Scripted(InvokeResult(service_error="KMSAccessDeniedException"))

    async def later() -> None:
        while len(target.calls) < 3:
            await asyncio.sleep(0)
        now[0] += 120  # the records are now two minutes old: past MaximumRecordAgeInSeconds

    clock = asyncio.create_task(later())
    invoker, _ = make(target, given_up, max_record_age=60.0, clock=lambda: now[0])
    await invoker.process(batch(records("a", at=1000.0)))
    await clock
    assert [(ids, f.condition) for ids, f in given_up] == [(["a"], "RecordAgeExceeded")]


@pytest.mark.parametrize(
    ("oversize", "dropped", "handed"), [("skip", 1, []), ("give_up", 0, [["a"]])]
)
async def test_one_record_over_the_payload_cap_is_skipped_or_given_up(
    oversize: str, dropped: int, handed: list[list[str]]
) -> None:
    given_up: list[tuple[list[str], Failure]] = []
    target = Scripted(OK)
    invoker, metrics = make(target, given_up, oversize=oversize, max_payload=1000)
    big = [{"id": "a", "data": "x" * 2000}]
    assert (await invoker.process(batch(big, payload=2100))).released == []
    assert target.calls == []
    assert [ids for ids, _ in given_up] == handed
    assert all(f.condition == "MaximumPayloadSizeExceeded" for _, f in given_up)
    assert sample(metrics, "esm_dropped_events_total") == dropped


async def test_an_estimate_over_the_cap_is_measured_before_anything_is_skipped() -> None:
    target = Scripted(OK)
    invoker, _ = make(target, oversize="skip", max_payload=1000)
    await invoker.process(batch(records("a"), payload=5000))  # the estimate was generous
    assert target.calls == [["a"]]


async def test_redelivery_sources_release_failures_and_never_retry_in_place() -> None:
    target = Scripted(BOOM)
    invoker, metrics = make(target, redelivery=True, traits=dataclasses.replace(SQS))
    recs = [{"messageId": i, "id": i} for i in "abc"]
    assert (await invoker.process(batch(recs))).released == recs
    assert len(target.calls) == 1
    assert sample(metrics, "esm_failed_invoke_events_total") == 3


async def test_redelivery_partial_failures_release_only_the_listed() -> None:
    target = Scripted(failing("b"))
    invoker, _ = make(target, redelivery=True, traits=SQS, report_item_failures=True)
    recs = [{"messageId": i, "id": i} for i in "abc"]
    assert [r["id"] for r in (await invoker.process(batch(recs))).released] == ["b"]


async def test_a_fifo_failure_releases_the_later_records_of_its_group() -> None:
    target = Scripted(failing("b"))
    group = {"a": "g1", "b": "g1", "c": "g2", "d": "g1"}
    invoker, _ = make(
        target,
        redelivery=True,
        traits=SQS,
        report_item_failures=True,
        group_of=lambda r: group[r["id"]],
    )
    recs = [{"messageId": i, "id": i} for i in "abcd"]
    released = (await invoker.process(batch(recs))).released
    assert [r["id"] for r in released] == ["b", "d"]  # "a" came before it; "c" is another group


async def test_a_malformed_response_fails_the_whole_batch_and_bisects() -> None:
    given_up: list[tuple[list[str], Failure]] = []
    target = Scripted(failing("nope"), OK)
    invoker, _ = make(target, given_up, report_item_failures=True, bisect=True, max_retries=0)
    await invoker.process(batch(records("a", "b")))
    assert target.calls == [["a", "b"], ["a"], ["b"]]
    assert given_up == []


class Letters:
    """Raw records are {"id", "group"} dicts; the position is a running number."""

    envelope_bytes = 10

    def __init__(self) -> None:
        self.n = 0

    def position(self, raw: dict[str, Any]) -> int:
        return 0

    def decode(
        self, raws: Sequence[dict[str, Any]], filters: Any
    ) -> tuple[list[Kept], list[Any], int]:
        kept: list[Kept] = []
        for r in raws:
            kept.append((r, 10, self.n))
            self.n += 1
        return kept, [], self.n

    def make_event(self, recs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": recs}


class Acks:
    def __init__(self) -> None:
        self.acked: list[str] = []
        self.released: list[str] = []

    def filtered(self, raws: list[Any]) -> None:
        self.acked += [r["id"] for r in raws]

    def settled(self, recs: list[dict[str, Any]], released: list[dict[str, Any]]) -> None:
        back = {r["id"] for r in released}
        self.acked += [r["id"] for r in recs if r["id"] not in back]
        self.released += [r["id"] for r in released]

    def abandoned(self, recs: list[Any]) -> None:
        self.released += [r["id"] for r in recs]


async def test_a_fifo_lane_gives_back_everything_queued_behind_a_failure() -> None:
    """One message group: [a b] fails on b; c, d (queued behind) are never invoked."""
    target = Scripted(failing("b"), OK)
    invoker, metrics = make(target, redelivery=True, traits=SQS, report_item_failures=True)
    acks = Acks()
    lane = Lane(
        "group g",
        Letters(),
        None,
        BatchBuilder(2, 0, 10),
        invoker,
        metrics.for_mapping("m", "sqs"),
        acker=acks,
        fifo=True,
    )
    lane.put([{"messageId": i, "id": i} for i in "abcd"])
    lane.start()
    async with asyncio.timeout(5):
        while not lane.idle:
            await asyncio.sleep(0)
    await lane.stop(1)
    assert target.calls == [["a", "b"]]
    assert acks.acked == ["a"]
    assert acks.released == ["b", "c", "d"]


async def test_an_unordered_lane_runs_batches_concurrently_within_its_slots() -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    class Slow(Scripted):
        async def invoke(self, event: dict[str, Any]) -> InvokeResult:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await gate.wait()
            running -= 1
            return await super().invoke(event)

    target = Slow(OK)
    invoker, metrics = make(target, redelivery=True, traits=SQS)
    acks = Acks()
    lane = Lane(
        "queue",
        Letters(),
        None,
        BatchBuilder(1, 0, 10),
        invoker,
        metrics.for_mapping("m", "sqs"),
        acker=acks,
        ordered=False,
        slots=asyncio.Semaphore(3),
    )
    lane.put([{"messageId": i, "id": i} for i in "abcde"])
    lane.start()
    async with asyncio.timeout(5):
        while running < 3:
            await asyncio.sleep(0)
    gate.set()
    async with asyncio.timeout(5):
        while len(acks.acked) < 5:
            await asyncio.sleep(0)
    await lane.stop(1)
    assert peak == 3
    assert sorted(acks.acked) == list("abcde")
