"""The Lane's contract: order, one batch in flight, and done_upto never passes an
undelivered record. The codec and target here are in-memory fakes; the Kafka integration
tests run the same Lane against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from service.batching import BatchBuilder
from service.config import RetryConfig
from service.destinations.records import Failure
from service.invoke import ErrorPolicy, Invoker
from service.lane import Kept, Lane
from service.metrics import Metrics
from service.targets import InvokeResult
from service.traits import RecordTraits

INTS = RecordTraits(item_id=lambda r: r["n"], parse_id=lambda i: i, has_age=False)


class IntCodec:
    """Raw records are ints; the position is the int itself."""

    envelope_bytes = 10

    def position(self, raw: int) -> int:
        return raw

    def decode(self, raws: Sequence[int], filters: Any) -> tuple[list[Kept], list[Any], int]:
        keep = [r for r in raws if filters is None or filters.matches({"n": r})]
        dropped = [r for r in raws if r not in keep]
        return [({"n": r}, 10, r) for r in keep], dropped, raws[-1] + 1

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"records": list(records)}


class Evens:
    def matches(self, view: dict[str, Any]) -> bool:
        return bool(view["n"] % 2 == 0)


class FakeTarget:
    name = "fake"

    def __init__(self, fail_first: int = 0, throttle_first: int = 0) -> None:
        self.fail_first = fail_first
        self.throttle_first = throttle_first
        self.calls: list[list[int]] = []
        self.delivered: list[int] = []

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        ns = [r["n"] for r in event["records"]]
        self.calls.append(ns)
        await asyncio.sleep(0)
        if self.throttle_first > 0:
            self.throttle_first -= 1
            return InvokeResult(throttled=True)
        if self.fail_first != 0:
            self.fail_first -= 1
            return InvokeResult({"errorMessage": "boom"}, "Unhandled")
        self.delivered += ns
        return InvokeResult({"ok": True})

    async def close(self) -> None:
        pass


FAST = RetryConfig(
    initial_backoff_seconds=0.001, max_backoff_seconds=0.01, throttle_backoff_seconds=0.001
)


def make_lane(
    target: FakeTarget,
    *,
    batch: int = 4,
    window: float = 0,
    retries: int = -1,
    filters: Any = None,
    exhausted: list[tuple[list[dict[str, Any]], Failure]] | None = None,
    name: str = "m",
    stopping: asyncio.Event | None = None,
    **kw: Any,
) -> tuple[Lane, Metrics]:
    metrics = Metrics()
    mm = metrics.for_mapping(name, "kafka")
    codec = IntCodec()

    async def give_up(records: list[dict[str, Any]], failure: Failure) -> None:
        (exhausted if exhausted is not None else []).append((records, failure))

    invoker = Invoker(
        target,
        codec.make_event,
        mm,
        FAST,
        ErrorPolicy(traits=INTS, give_up=give_up, max_retries=retries),
        stopping or asyncio.Event(),
    )
    lane = Lane("p0", codec, filters, BatchBuilder(batch, window, 10), invoker, mm, **kw)
    return lane, metrics


def value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"mapping": "m", "source": "kafka"}) or 0


async def until(cond: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


async def test_batches_in_order_and_done_upto_reaches_the_end() -> None:
    target = FakeTarget()
    lane, metrics = make_lane(target)
    lane.start()
    lane.put(list(range(10)))
    await until(lambda: lane.done_upto == 10)
    assert target.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert value(metrics, "esm_invoked_events_total") == 10
    await lane.stop(1)


async def test_filtered_out_records_are_acknowledged_not_invoked() -> None:
    target = FakeTarget()
    lane, metrics = make_lane(target, filters=Evens())
    lane.start()
    lane.put(list(range(10)))
    lane.put([10, 11, 13])
    await until(lambda: lane.done_upto == 14)
    assert target.delivered == [0, 2, 4, 6, 8, 10]
    assert value(metrics, "esm_filtered_out_events_total") == 7
    await lane.stop(1)


async def test_window_holds_a_partial_batch_then_sends_it() -> None:
    target = FakeTarget()
    lane, _ = make_lane(target, batch=100, window=0.05)
    lane.start()
    lane.put([0, 1])
    await asyncio.sleep(0.01)
    lane.put([2])
    assert target.calls == []
    assert lane.done_upto == 0  # the open batch starts at 0: nothing is done yet
    await until(lambda: lane.done_upto == 3)
    assert target.calls == [[0, 1, 2]]
    await lane.stop(1)


async def test_failed_batch_is_retried_and_nothing_passes_it_meanwhile() -> None:
    target = FakeTarget(fail_first=3)
    lane, metrics = make_lane(target)
    lane.start()
    lane.put(list(range(6)))
    await until(lambda: len(target.calls) >= 2)
    assert lane.done_upto == 0
    await until(lambda: lane.done_upto == 6)
    assert target.calls[:4] == [[0, 1, 2, 3]] * 4
    assert target.delivered == [0, 1, 2, 3, 4, 5]
    assert value(metrics, "esm_failed_invoke_events_total") == 12
    await lane.stop(1)


async def test_throttling_is_not_a_failure() -> None:
    target = FakeTarget(throttle_first=3)
    lane, metrics = make_lane(target, retries=0)
    lane.start()
    lane.put([0, 1])
    await until(lambda: lane.done_upto == 2)
    assert target.delivered == [0, 1]
    assert value(metrics, "esm_failed_invoke_events_total") == 0
    await lane.stop(1)


async def test_stop_during_retries_abandons_without_acknowledging() -> None:
    stopping = asyncio.Event()
    target = FakeTarget(fail_first=-1)  # always fails
    lane, _ = make_lane(target, stopping=stopping)
    lane.start()
    lane.put(list(range(8)))
    await until(lambda: len(target.calls) >= 2)
    stopping.set()
    await lane.stop(1)
    assert lane.done_upto == 0
    assert target.delivered == []


async def test_exhausted_retries_hand_the_batch_over_then_move_on() -> None:
    exhausted: list[tuple[list[dict[str, Any]], Failure]] = []
    target = FakeTarget(fail_first=2)
    lane, _ = make_lane(target, retries=1, exhausted=exhausted)
    lane.start()
    lane.put(list(range(6)))
    await until(lambda: lane.done_upto == 6)
    assert [records for records, _ in exhausted] == [[{"n": n} for n in range(4)]]
    assert exhausted[0][1] == Failure("RetryAttemptsExhausted", 2, "Unhandled", 200, "boom")
    assert target.delivered == [4, 5]
    await lane.stop(1)


async def test_backpressure_pauses_and_resumes() -> None:
    signals: list[bool] = []
    target = FakeTarget()
    lane, _ = make_lane(target, max_queued=10, on_backpressure=signals.append)
    lane.put(list(range(0, 6)))
    lane.put(list(range(6, 12)))
    assert signals == [True]
    lane.start()
    await until(lambda: lane.done_upto == 12)
    assert signals == [True, False]
    await lane.stop(1)


@pytest.mark.parametrize("grace", [0.05])
async def test_stop_after_grace_cancels_a_hung_invocation(grace: float) -> None:
    class Hung(FakeTarget):
        async def invoke(self, event: dict[str, Any]) -> InvokeResult:
            await asyncio.sleep(3600)
            raise AssertionError

    lane, _ = make_lane(Hung())
    lane.start()
    lane.put([0, 1])
    await asyncio.sleep(0.01)
    await lane.stop(grace)
    assert lane.done_upto == 0


async def test_a_stop_never_acknowledges_the_batch_it_refuses_to_start() -> None:
    """Stopped while [0, 1] is in flight: that batch finishes; [2], closed right after it,
    is not started, and the checkpoint stays before it."""
    started, release = asyncio.Event(), asyncio.Event()

    class Slow(FakeTarget):
        async def invoke(self, event: dict[str, Any]) -> InvokeResult:
            started.set()
            await release.wait()
            return await super().invoke(event)

    target = Slow()
    lane, _ = make_lane(target, batch=2)
    lane.start()
    lane.put([0, 1, 2])
    await started.wait()
    stopping = asyncio.create_task(lane.stop(5))
    await asyncio.sleep(0)
    release.set()
    await stopping
    assert target.delivered == [0, 1]
    assert lane.done_upto == 2


async def test_a_lane_that_dies_of_a_bug_says_so_to_its_poller() -> None:
    class Broken(IntCodec):
        def decode(self, raws: Sequence[int], filters: Any) -> Any:
            raise ZeroDivisionError("a codec bug")

    lane, _ = make_lane(FakeTarget())
    lane._codec = Broken()
    task = lane.start()
    lane.put([0, 1])
    await asyncio.wait({task}, timeout=5)
    assert isinstance(lane.failure(), ZeroDivisionError)
    assert lane.done_upto is None  # nothing acknowledged
