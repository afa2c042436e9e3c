"""Stream delivery rules and shard lanes, with an in-memory target and destination."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.config import EsmdConfig, MappingConfig, RetryConfig
from service.destinations.records import Failure
from service.metrics import Metrics
from service.sources.stream_delivery import Abandoned, RecordFields, StreamDelivery
from service.sources.stream_lane import KeyLane, TumblingWindow
from service.targets import InvokeResult

FIELDS = RecordFields(sequence=lambda r: str(r["seq"]), arrival=lambda r: float(r["at"]))
FAST = RetryConfig(
    initial_backoff_seconds=0.001, max_backoff_seconds=0.002, throttle_backoff_seconds=0.001
)


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


class FakeMapping:
    def __init__(self, target: Target, destination: bool = True, **cfg: Any) -> None:
        self.config = MappingConfig.model_validate(
            {
                "Name": "m",
                "FunctionName": "f",
                "StartingPosition": "TRIM_HORIZON",
                "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                **cfg,
            }
        )
        self.esmd = EsmdConfig(retry=FAST)
        self.metrics = Metrics().for_mapping("m", "kinesis")
        self.target = target
        self.destination = destination
        self.failed: list[tuple[list[int], Failure]] = []

    def require_target(self) -> Target:
        return self.target

    async def send_to_on_failure(
        self, records: list[dict[str, Any]], failure: Failure, *, shard_id: str | None = None
    ) -> bool:
        if self.destination:
            self.failed.append(([r["seq"] for r in records], failure))
        return self.destination


async def _durable(write: int) -> None:
    return None


def items(
    seqs: range | list[int], at: float | None = None
) -> list[tuple[dict[str, Any], int, int]]:
    now = time.time() if at is None else at
    return [({"seq": s, "at": now}, 10, s) for s in seqs]


def delivery(mapping: FakeMapping, stopping: asyncio.Event | None = None) -> StreamDelivery:
    return StreamDelivery(mapping, "shard-1", FIELDS, stopping or asyncio.Event())  # type: ignore[arg-type]


async def test_bisection_isolates_the_poison_record() -> None:
    target = Target(poison={37})
    mapping = FakeMapping(target, BisectBatchOnFunctionError=True, MaximumRetryAttempts=2)
    progress: list[int | None] = []
    await delivery(mapping).deliver(items(range(100)), progress.append)
    assert target.delivered == [s for s in range(100) if s != 37]
    assert [(seqs, f.condition, f.approximate_invoke_count) for seqs, f in mapping.failed] == [
        ([37], "RetryAttemptsExhausted", 3)
    ]
    assert target.calls.count([37]) == 3  # alone: one try and two retries
    assert progress[-1] is None
    assert progress[:-1] == sorted(progress[:-1])  # the checkpoint only moves forward


async def test_without_bisection_the_whole_batch_is_given_up() -> None:
    target = Target(poison={3})
    mapping = FakeMapping(target, MaximumRetryAttempts=1, DestinationConfig=None)
    await delivery(mapping).deliver(items(range(10)), lambda _: None)
    assert target.calls == [list(range(10))] * 2
    assert mapping.failed[0][0] == list(range(10))


async def test_dropped_when_there_is_no_destination() -> None:
    target = Target(poison={1})
    mapping = FakeMapping(target, destination=False, MaximumRetryAttempts=0)
    await delivery(mapping).deliver(items(range(3)), lambda _: None)
    labels = {"mapping": "m", "source": "kinesis"}
    registry = mapping.metrics.metrics.registry
    assert registry.get_sample_value("esm_dropped_events_total", labels) == 3


async def test_report_batch_item_failures_resumes_from_the_lowest() -> None:
    target = Target(report={5: 1, 7: 1})
    mapping = FakeMapping(target, FunctionResponseTypes=["ReportBatchItemFailures"])
    progress: list[int | None] = []
    await delivery(mapping).deliver(items(range(10)), progress.append)
    assert target.calls == [list(range(10)), list(range(5, 10))]
    assert target.delivered == list(range(10))
    assert progress == [5, None]


async def test_old_records_are_given_up_unsent() -> None:
    target = Target()
    mapping = FakeMapping(target, MaximumRecordAgeInSeconds=60)
    old = items(range(3), at=time.time() - 120)
    await delivery(mapping).deliver(old + items(range(3, 5)), lambda _: None)
    assert target.calls == [[3, 4]]
    assert [(seqs, f.condition) for seqs, f in mapping.failed] == [([0, 1, 2], "RecordAgeExceeded")]


async def test_throttling_is_not_a_retry_and_a_stop_abandons() -> None:
    target = Target(throttle=3)
    mapping = FakeMapping(target, MaximumRetryAttempts=0)
    await delivery(mapping).deliver(items(range(2)), lambda _: None)
    assert target.delivered == [0, 1] and not mapping.failed
    stopping = asyncio.Event()
    stopping.set()
    failing = FakeMapping(Target(poison={0}))
    try:
        await delivery(failing, stopping).deliver(items(range(2)), lambda _: None)
        raise AssertionError("not abandoned")
    except Abandoned:
        pass
    assert not failing.failed


async def test_lane_keeps_order_and_reports_its_first_pending() -> None:
    target = Target()
    mapping = FakeMapping(target)
    lane = KeyLane(delivery(mapping), 4, 0, 64, lambda: None, lambda: 0, _durable)
    assert lane.first_pending() is None
    lane.put(items(range(10)))
    assert lane.first_pending() == 0
    task = asyncio.create_task(lane.run())
    for _ in range(100):
        if lane.first_pending() is None:
            break
        await asyncio.sleep(0)
    lane.stop()
    await task
    assert target.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert lane.first_pending() is None


async def test_tumbling_window_passes_state_and_closes_with_a_final_invoke() -> None:
    target = Target()
    mapping = FakeMapping(target, TumblingWindowInSeconds=60)
    start = 1_800_000_000.0  # a multiple of 60
    window = TumblingWindow(60, FIELDS.arrival, "shard-1", "arn:stream")
    lane = KeyLane(delivery(mapping), 2, 0, 64, lambda: None, lambda: 0, _durable, window)
    lane.put(items(range(3), at=start + 1) + items(range(3, 4), at=start + 61))
    task = asyncio.create_task(lane.run())
    for _ in range(200):
        if len(target.events) >= 4:
            break
        await asyncio.sleep(0)
    assert lane.first_pending() == 3  # the second window is open: its record is pending
    lane.stop()
    await task
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
