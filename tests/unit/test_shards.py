"""Stream delivery rules (the one Invoker, with a stream mapping's policy) and shard lanes,
with an in-memory target and destination."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from service.batching import Batch, BatchBuilder
from service.config import EsmdConfig, MappingConfig, RetryConfig
from service.destinations.records import Failure
from service.invoke import Abandoned, Invoker
from service.lane import Lane
from service.mapping import Mapping
from service.metrics import MappingMetrics, Metrics
from service.sources.shards import ShardLaneCodec
from service.targets import InvokeResult
from service.traits import RecordTraits
from service.windows import TumblingWindow

TRAITS = RecordTraits(
    item_id=lambda r: str(r["seq"]),
    parse_id=lambda i: i if isinstance(i, str) and i else None,
    created_at=lambda r: float(r["at"]),
)
FAST = RetryConfig(
    initial_backoff_seconds=0.001, max_backoff_seconds=0.002, throttle_backoff_seconds=0.001
)
Item = tuple[dict[str, Any], int, int]


class Target:
    """Fails any batch holding a poison seq; may report item failures or return state."""

    name = "fake"

    def __init__(
        self,
        poison: set[int] = frozenset(),
        report: dict[int, int] | None = None,
        throttle: int = 0,
    ) -> None:  # type: ignore[assignment]
        self.poison = poison
        self.report = dict(report or {})  # seq -> how many times to report it failed
        self.throttle = throttle
        self.calls: list[list[int]] = []
        self.events: list[dict[str, Any]] = []
        self.delivered: list[int] = []

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        seqs = [r["seq"] for r in event["Records"]]
        self.calls.append(seqs)
        self.events.append(event)
        await asyncio.sleep(0)
        if self.throttle:
            self.throttle -= 1
            return InvokeResult(throttled=True)
        if self.poison & set(seqs):
            return InvokeResult({"errorMessage": "poison"}, "Unhandled")
        failed = [s for s in seqs if self.report.get(s, 0) > 0]
        for s in failed:
            self.report[s] -= 1
        done = seqs[: seqs.index(min(failed))] if failed else seqs
        self.delivered += done
        body: dict[str, Any] = {"batchItemFailures": [{"itemIdentifier": str(s)} for s in failed]}
        if "state" in event:
            body["state"] = {"count": event["state"].get("count", 0) + len(seqs)}
        return InvokeResult(body)

    async def close(self) -> None:
        pass


@dataclasses.dataclass
class Stream:
    """A Kinesis mapping's Invoker, as the Mapping builds its policy from the config; records
    given up on land in ``failed`` (the destination) or, without one, count dropped."""

    invoker: Invoker
    metrics: MappingMetrics
    failed: list[tuple[list[int], Failure]]


def stream(
    target: Target, destination: bool = True, stopping: asyncio.Event | None = None, **cfg: Any
) -> Stream:
    config = MappingConfig.model_validate(
        {
            "Name": "m",
            "FunctionName": "f",
            "StartingPosition": "TRIM_HORIZON",
            "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            **cfg,
        }
    )
    mapping = Mapping(config, EsmdConfig(retry=FAST), Metrics())
    failed: list[tuple[list[int], Failure]] = []

    async def to_destination(records: list[dict[str, Any]], failure: Failure) -> None:
        failed.append(([r["seq"] for r in records], failure))

    policy = mapping.error_policy()
    policy = dataclasses.replace(
        policy, traits=TRAITS, give_up=to_destination if destination else policy.give_up
    )
    invoker = Invoker(
        target,  # type: ignore[arg-type]
        lambda records: {"Records": records},
        mapping.metrics,
        FAST,
        policy,
        stopping or asyncio.Event(),
        iterator_age=True,
    )
    return Stream(invoker, mapping.metrics, failed)


def items(seqs: range | list[int], at: float | None = None) -> list[Item]:
    now = time.time() if at is None else at
    return [({"seq": s, "at": now}, 10, s) for s in seqs]


def batch(its: list[Item]) -> Batch:
    return Batch([i[0] for i in its], its[0][2], its[-1][2], 100, "size")


async def test_bisection_isolates_the_poison_record() -> None:
    target = Target(poison={37})
    s = stream(target, BisectBatchOnFunctionError=True, MaximumRetryAttempts=2)
    await s.invoker.process(batch(items(range(100))))
    assert target.delivered == [n for n in range(100) if n != 37]
    assert [(seqs, f.condition, f.approximate_invoke_count) for seqs, f in s.failed] == [
        ([37], "RetryAttemptsExhausted", 9)
    ]
    assert target.calls.count([37]) == 3  # alone: one try and two retries


async def test_without_bisection_the_whole_batch_is_given_up() -> None:
    target = Target(poison={3})
    s = stream(target, MaximumRetryAttempts=1)
    await s.invoker.process(batch(items(range(10))))
    assert target.calls == [list(range(10))] * 2
    assert s.failed[0][0] == list(range(10))


async def test_dropped_when_there_is_no_destination() -> None:
    target = Target(poison={1})
    s = stream(target, destination=False, MaximumRetryAttempts=0)
    await s.invoker.process(batch(items(range(3))))
    labels = {"mapping": "m", "source": "kinesis"}
    registry = s.metrics.metrics.registry
    assert registry.get_sample_value("esm_dropped_events_total", labels) == 3


async def test_report_batch_item_failures_resumes_from_the_lowest() -> None:
    target = Target(report={5: 1, 7: 1})
    s = stream(target, FunctionResponseTypes=["ReportBatchItemFailures"])
    await s.invoker.process(batch(items(range(10))))
    assert target.calls == [list(range(10)), list(range(5, 10))]
    assert target.delivered == list(range(10))


async def test_a_partial_success_does_not_reset_the_attempt_count() -> None:
    """Record 9 fails every time; 5 fails once. MaximumRetryAttempts 1 allows one retry of 9
    in all, although the retry was itself a partial success."""
    target = Target(report={5: 1, 9: 99})
    s = stream(target, FunctionResponseTypes=["ReportBatchItemFailures"], MaximumRetryAttempts=1)
    await s.invoker.process(batch(items(range(10))))
    assert target.calls == [list(range(10)), list(range(5, 10))]
    assert [seqs for seqs, _ in s.failed] == [[9]]


async def test_old_records_are_given_up_unsent() -> None:
    target = Target()
    s = stream(target, MaximumRecordAgeInSeconds=60)
    old = items(range(3), at=time.time() - 120)
    await s.invoker.process(batch(old + items(range(3, 5))))
    assert target.calls == [[3, 4]]
    assert [(seqs, f.condition) for seqs, f in s.failed] == [([0, 1, 2], "RecordAgeExceeded")]


async def test_throttling_is_not_a_retry_and_a_stop_abandons() -> None:
    target = Target(throttle=3)
    s = stream(target, MaximumRetryAttempts=0)
    await s.invoker.process(batch(items(range(2))))
    assert target.delivered == [0, 1] and not s.failed
    stopping = asyncio.Event()
    stopping.set()
    failing = stream(Target(poison={0}), stopping=stopping)
    with pytest.raises(Abandoned):
        await failing.invoker.process(batch(items(range(2))))
    assert not failing.failed


def shard_lane(s: Stream, size: int, window: TumblingWindow | None = None) -> Lane:
    class View:
        envelope_bytes = 64

        @staticmethod
        def filter_view(record: dict[str, Any]) -> dict[str, Any]:
            return record

    return Lane(
        "shard-1#0",
        ShardLaneCodec(View()),  # type: ignore[arg-type]
        None,
        BatchBuilder(size, 0, 64),
        s.invoker,
        s.metrics,
        window=window,
    )


async def test_lane_keeps_order_and_reports_its_first_pending() -> None:
    target = Target()
    lane = shard_lane(stream(target), 4)
    assert lane.first_pending() is None
    lane.put(items(range(10)))
    assert lane.first_pending() == 0
    lane.start()
    async with asyncio.timeout(5):
        while lane.first_pending() is not None:
            await asyncio.sleep(0)
    await lane.stop(1)
    assert target.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert lane.first_pending() is None


async def test_tumbling_window_passes_state_and_closes_with_a_final_invoke() -> None:
    target = Target()
    s = stream(target, TumblingWindowInSeconds=60)
    start = 1_800_000_000.0  # a multiple of 60
    window = TumblingWindow(60, TRAITS.created_at, "shard-1", "arn:stream")
    lane = shard_lane(s, 2, window)
    lane.put(items(range(3), at=start + 1) + items(range(3, 4), at=start + 61))
    lane.start()
    async with asyncio.timeout(5):
        while len(target.events) < 4:
            await asyncio.sleep(0)
    assert lane.first_pending() == 3  # the second window is open: its record is pending
    await lane.stop(1)
    first, second, final, next_window = target.events[:4]
    assert [r["seq"] for r in first["Records"]] == [0, 1] and first["state"] == {}
    assert second["state"] == {"count": 2} and not second["isFinalInvokeForWindow"]
    assert final["Records"] == [] and final["isFinalInvokeForWindow"]
    assert final["state"] == {"count": 3}
    assert final["window"] == {"start": "2027-01-15T08:00:00Z", "end": "2027-01-15T08:01:00Z"}
    assert final["shardId"] == "shard-1" and final["eventSourceARN"] == "arn:stream"
    assert next_window["state"] == {} and [r["seq"] for r in next_window["Records"]] == [3]


def test_stream_only_properties_are_checked() -> None:
    from service.config import ConfigError, parse_config

    ddb = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2024"
    sqs = "arn:aws:sqs:us-east-1:000000000000:q"
    bad = {
        "mappings": [
            {
                "Name": "d",
                "FunctionName": "f",
                "EventSourceArn": ddb,
                "StartingPosition": "AT_TIMESTAMP",
                "StartingPositionTimestamp": 1,
            },
            {
                "Name": "q",
                "FunctionName": "f",
                "EventSourceArn": sqs,
                "TumblingWindowInSeconds": 30,
                "ParallelizationFactor": 2,
            },
        ]
    }
    try:
        parse_config(bad)
        raise AssertionError("accepted")
    except ConfigError as exc:
        fields = {(p.mapping, p.field) for p in exc.problems}
    assert fields == {
        ("d", "StartingPosition"),
        ("q", "TumblingWindowInSeconds"),
        ("q", "ParallelizationFactor"),
    }
