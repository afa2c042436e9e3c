"""AWS's error-handling rules for event source mappings, one table run on every source.

Each row below is one rule (docs/error-handling.md cites AWS's page for it); it is generated
for the sources it applies to, with ids ``<source>-<row>``: ``kafka`` (the broker),
``sqs`` / ``sqs-fifo`` (ElasticMQ), ``kinesis`` and ``dynamodb`` (moto_server). A row
produces numbered records, runs the daemon with a python target whose behaviour the row
scripts, and checks only what is outside esmd: what the target received, what the source
shows as acknowledged (Kafka's committed offset, the SQS queue and its DLQ, what a restarted
stream mapping reads again), what reached the OnFailure destination (an SQS queue on moto),
and the /metrics page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.contract.handlers import (
    FakeFunction,
    FunctionError,
    Gate,
    Rec,
    fail,
    failures,
    succeed,
)
from tests.integration.contract.sources import Contract, KafkaSource, SqsSource

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ORDERED = ("kafka", "kinesis", "dynamodb")
EVERY = ("kafka", "sqs", "kinesis", "dynamodb")
RBIF = {"FunctionResponseTypes": ["ReportBatchItemFailures"]}

Row = Callable[[Contract], Awaitable[None]]
ROWS: list[tuple[str, Row, tuple[str, ...]]] = []


def row(name: str, *sources: str) -> Callable[[Row], Row]:
    def register(check: Row) -> Row:
        ROWS.append((name, check, sources))
        return check

    return register


def flat(calls: list[list[int]]) -> list[int]:
    return [n for call in calls for n in call]


def by_n(recs: list[Rec]) -> dict[int, Any]:
    """n -> itemIdentifier, for a response naming records of this invocation."""
    return {r.n: r.ident for r in recs}


def one_batch(n: int, **props: Any) -> dict[str, Any]:
    """A mapping whose first batch holds all ``n`` records produced before it starts."""
    return {"BatchSize": n, "MaximumBatchingWindowInSeconds": 1, **props}


# --- 1. success -----------------------------------------------------------------------------


@row("success", *EVERY)
async def success_acknowledges_everything(c: Contract) -> None:
    """Every record delivered once, then acknowledged: Kafka commits past the batch, SQS
    deletes it, a restarted stream mapping reads nothing again."""
    await c.setup()
    await c.source.produce(range(5))
    async with c.running(succeed, **one_batch(5)):
        await c.until(lambda: len(flat(c.calls)) >= 5, "5 records delivered")
        await c.acknowledged()
    assert sorted(flat(c.calls)) == list(range(5))
    if c.source.ordered:
        assert flat(c.calls) == list(range(5))
    assert await c.rereads() == []
    assert await c.given_up() == []


# --- 2. filtered out ------------------------------------------------------------------------


@row("filtered-out", *EVERY)
async def filtered_out_is_acknowledged_not_invoked(c: Contract) -> None:
    """FilterCriteria matching none of the records: no invocation, every record counted in
    FilteredOutEventCount and acknowledged (SQS: deleted; Kafka and streams: the position
    moves past them)."""
    await c.setup()
    await c.source.produce(range(5))
    criteria = {"Filters": [{"Pattern": c.source.filter_none}]}
    async with c.running(succeed, **one_batch(5), FilterCriteria=criteria) as daemon:

        async def all_filtered() -> bool:
            metrics = await c.metrics(daemon)
            return metrics.get("esm_filtered_out_events_total", 0) >= 5

        await c.until(all_filtered, "5 records filtered out")
        await c.acknowledged()
    assert c.calls == []
    assert await c.rereads() == []


# --- 3. function error, whole batch ---------------------------------------------------------


@row("function-error", *ORDERED)
async def function_error_retries_then_destination(c: Contract) -> None:
    """MaximumRetryAttempts 2: the batch is invoked 3 times in all (retries count from the
    first failure), then AWS's invocation record (RetryAttemptsExhausted) goes to the OnFailure
    destination and the position moves past the batch."""
    await c.setup()
    await c.source.produce(range(4))
    async with c.running(fail, **one_batch(4), MaximumRetryAttempts=2):
        given = await c.until_given_up(4)
        await c.acknowledged()
    assert c.calls == [[0, 1, 2, 3]] * 3, c.calls
    assert [(g.condition, g.invoke_count, c.numbers(g)) for g in given] == [
        ("RetryAttemptsExhausted", 3, [0, 1, 2, 3])
    ]
    assert await c.rereads() == []


@row("function-error", "sqs")
async def failed_sqs_batch_is_left_to_the_redrive_policy(c: Contract) -> None:
    """A failed SQS batch is left to the queue's redrive policy: nothing is deleted, each
    message comes back after its visibility timeout (a new receive, ApproximateReceiveCount
    going up), and after maxReceiveCount receives the queue moves it to its DLQ."""
    assert isinstance(c.source, SqsSource)
    source = c.source
    await c.setup(visibility=3, max_receives=2)
    await source.produce(range(3))
    async with c.running(fail, **one_batch(10)):

        async def all_dead_lettered() -> bool:
            assert source.dlq_url is not None
            return await source.in_queue(source.dlq_url) == 3

        await c.until(all_dead_lettered, "3 messages in the DLQ")
        await c.acknowledged()
    assert await source.dead_lettered() == [0, 1, 2]
    for n in range(3):
        counts = sorted(r.receive_count for recs in c.recs for r in recs if r.n == n)
        assert counts == [1, 2], (n, counts)  # one invocation per receive, none in process


# --- 4. ReportBatchItemFailures -------------------------------------------------------------


def _three_then_seven(recs: list[Rec], index: int) -> Any:
    ids = by_n(recs)
    if index == 0:
        return failures(ids[7], ids[3])  # not in order: the lowest one counts
    return failures(ids[7]) if 7 in ids else None


@row("partial-failure", *ORDERED)
async def partial_failure_retries_from_the_lowest_failed(c: Contract) -> None:
    """A response naming records 7 and 3 of 0..9: 0..2 are done, the retry starts at 3. The
    retry succeeds for 3..6 and fails 7 again; that partial success does not reset the
    attempts, so with MaximumRetryAttempts 2 the third invocation of 7 is its last, and
    7..9 go to the destination."""
    await c.setup()
    await c.source.produce(range(10))
    async with c.running(_three_then_seven, **one_batch(10), **RBIF, MaximumRetryAttempts=2):
        given = await c.until_given_up(3)
        await c.acknowledged()
    assert c.calls == [list(range(10)), list(range(3, 10)), [7, 8, 9]], c.calls
    assert [(g.condition, g.invoke_count, c.numbers(g)) for g in given] == [
        ("RetryAttemptsExhausted", 3, [7, 8, 9])
    ]
    assert await c.rereads() == []


@row("partial-failure-checkpoint", *ORDERED)
async def partial_failure_checkpoints_before_the_lowest_failed(c: Contract) -> None:
    """While the records from the lowest failed one are being retried, those before it are
    acknowledged and nothing after: stopped during the retry, the next run reads 3..9 again
    and not 0..2."""
    await c.setup()
    await c.source.produce(range(10))
    gate = Gate()

    async def behave(recs: list[Rec], index: int) -> Any:
        if index == 0:
            return failures(by_n(recs)[3])
        await gate.wait()  # held until the stop cancels it
        return None

    c.grace = 0.3
    async with c.running(behave, **one_batch(10), **RBIF):
        await c.until(lambda: len(c.calls) >= 2, "the retry")
    assert c.calls == [list(range(10)), list(range(3, 10))], c.calls
    assert await c.rereads() == list(range(3, 10))


def _sqs_fails_one_and_three(recs: list[Rec], index: int) -> Any:
    return failures(*(r.ident for r in recs if r.n in (1, 3) and r.receive_count == 1))


@row("partial-failure", "sqs")
async def sqs_deletes_all_but_the_reported(c: Contract) -> None:
    """Standard queue: the messages a response names stay (and come back after their
    visibility timeout); all the others of the batch are deleted."""
    await c.setup(visibility=3)
    await c.source.produce(range(5))
    async with c.running(_sqs_fails_one_and_three, **one_batch(10), **RBIF):
        await c.until(lambda: c.invocations_of(1) + c.invocations_of(3) >= 4, "1 and 3 again")
        await c.acknowledged()
    assert sorted(c.calls[0]) == list(range(5)), "the first batch must hold all 5"
    assert {n: c.invocations_of(n) for n in range(5)} == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1}


@row("partial-failure", "sqs-fifo")
async def fifo_group_stops_at_the_first_failure(c: Contract) -> None:
    """FIFO, one MessageGroupId, BatchSize 3, one receive of 0..9: the response names 1 in
    [0, 1, 2]. 0 is deleted; 1 and 2 are not (2 comes after 1 in its group); 3..9, later
    in the group from the same receive, are neither invoked nor deleted before 1 is
    delivered again, so the group's order holds."""
    await c.setup(visibility=3)
    await c.source.produce(range(10))

    def behave(recs: list[Rec], index: int) -> Any:
        return failures(*(r.ident for r in recs if r.n == 1 and r.receive_count == 1))

    async with c.running(behave, BatchSize=3, **RBIF):
        await c.until(lambda: 9 in flat(c.calls), "message 9 delivered")
        await c.acknowledged()
    assert c.calls[0] == [0, 1, 2], "the first batch must be 0, 1, 2"
    retry = next((i for i, call in enumerate(c.calls) if i > 0 and 1 in call), None)
    assert retry is not None, f"1 was never delivered again: {c.calls}"
    early = [n for call in c.calls[1:retry] for n in call]
    assert early == [], f"invoked before 1 came back: {early}"
    assert c.invocations_of(0) == 1
    assert c.invocations_of(2) == 2  # not deleted after the failure of 1
    assert flat(c.calls[retry:]) == list(range(1, 10))


# --- 5. malformed batchItemFailures ---------------------------------------------------------


def _malformed(c: Contract, which: int) -> dict[str, Any]:
    """0: an itemIdentifier not in the batch; 1: none; 2: an empty one."""
    items: list[dict[str, Any]] = [
        {"itemIdentifier": c.source.unknown_ident()},
        {},
        {"itemIdentifier": ""},
    ]
    return {"batchItemFailures": [items[which % 3]]}


@row("malformed-response", *ORDERED)
async def malformed_response_fails_the_whole_batch(c: Contract) -> None:
    """An unknown, a missing and an empty itemIdentifier, one per invocation: each fails the
    whole batch, so 0..3 are invoked 3 times (MaximumRetryAttempts 2) and go to the
    destination together."""
    await c.setup()
    await c.source.produce(range(4))

    def behave(recs: list[Rec], index: int) -> Any:
        return _malformed(c, index)

    async with c.running(behave, **one_batch(4), **RBIF, MaximumRetryAttempts=2):
        given = await c.until_given_up(4)
        await c.acknowledged()
    assert c.calls == [[0, 1, 2, 3]] * 3, c.calls
    assert [(g.condition, g.invoke_count, c.numbers(g)) for g in given] == [
        ("RetryAttemptsExhausted", 3, [0, 1, 2, 3])
    ]
    assert await c.rereads() == []


@row("malformed-response", "sqs")
async def sqs_malformed_response_deletes_nothing(c: Contract) -> None:
    """Receive 1, 2, 3 answer an unknown, a missing, an empty itemIdentifier: nothing is
    deleted, every message comes back; receive 4 succeeds and deletes them."""
    await c.setup(visibility=3)
    await c.source.produce(range(3))

    def behave(recs: list[Rec], index: int) -> Any:
        received = max(r.receive_count for r in recs)
        return _malformed(c, received - 1) if received <= 3 else None

    async with c.running(behave, **one_batch(10), **RBIF):
        await c.until(lambda: all(c.invocations_of(n) >= 4 for n in range(3)), "4 receives")
        await c.acknowledged()
    for n in range(3):
        counts = sorted(r.receive_count for recs in c.recs for r in recs if r.n == n)
        assert counts == [1, 2, 3, 4], (n, counts)


@row("malformed-response-bisects", *ORDERED)
async def malformed_response_is_a_failed_batch_for_bisection(c: Contract) -> None:
    """A malformed response fails the whole batch like a function error, so with
    BisectBatchOnFunctionError the batch is split as a failed one is (AWS: "the batch is
    bisected regardless of your ReportBatchItemFailures setting")."""
    await c.setup()
    await c.source.produce(range(4))

    def behave(recs: list[Rec], index: int) -> Any:
        return _malformed(c, 0)

    props = one_batch(4, **RBIF, BisectBatchOnFunctionError=True, MaximumRetryAttempts=0)
    async with c.running(behave, **props):
        given = await c.until_given_up(4)
        await c.acknowledged()
    assert c.calls == [[0, 1, 2, 3], [0, 1], [0], [1], [2, 3], [2], [3]], c.calls
    assert [c.numbers(g) for g in given] == [[0], [1], [2], [3]]
    assert await c.rereads() == []


# --- 6. batchItemFailures without ReportBatchItemFailures -----------------------------------


@row("item-failures-ignored", *EVERY)
async def item_failures_without_the_response_type_are_a_success(c: Contract) -> None:
    """Without ReportBatchItemFailures in FunctionResponseTypes, a response carrying
    batchItemFailures is a complete success: nothing retried, everything acknowledged."""
    await c.setup()
    await c.source.produce(range(4))

    def behave(recs: list[Rec], index: int) -> Any:
        return failures(*(r.ident for r in recs if r.n == 1))

    retries = {"MaximumRetryAttempts": 0} if c.source.ordered else {}
    async with c.running(behave, **one_batch(4), **retries):
        await c.until(lambda: len(flat(c.calls)) >= 4, "4 records delivered")
        await c.acknowledged()
    assert sorted(flat(c.calls)) == [0, 1, 2, 3]
    assert await c.rereads() == []
    assert await c.given_up() == []


# --- 7. BisectBatchOnFunctionError ----------------------------------------------------------


@row("bisect", *ORDERED)
async def bisection_isolates_the_poison_record(c: Contract) -> None:
    """Record 5 of 0..7 always fails the batch that holds it. Each failed batch is split in
    two and the halves retried in order; splitting uses no retries, so 5 alone still gets its
    MaximumRetryAttempts (1): invoked twice alone, then only it goes to the destination."""
    await c.setup()
    await c.source.produce(range(8))

    def behave(recs: list[Rec], index: int) -> None:
        if any(r.n == 5 for r in recs):
            raise FunctionError("poison")

    props = one_batch(8, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1)
    async with c.running(behave, **props):
        given = await c.until_given_up(1)
        await c.acknowledged()
    assert c.calls == [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [4, 5],
        [4],
        [5],
        [5],
        [6, 7],
    ], c.calls
    assert [(g.condition, g.size, c.numbers(g)) for g in given] == [
        ("RetryAttemptsExhausted", 1, [5])
    ]
    assert await c.rereads() == []


# --- 8. MaximumRecordAgeInSeconds ------------------------------------------------------------


@row("record-age", "kafka")
async def old_records_are_given_up_before_invoking(c: Contract) -> None:
    """Records older than MaximumRecordAgeInSeconds (60, the minimum) are not invoked: they
    go to the destination as RecordAgeExceeded and the offset moves past them. Only Kafka
    lets a producer date a record (CreateTime); stream arrival times are the server's."""
    assert isinstance(c.source, KafkaSource)
    await c.setup()
    await c.source.produce(range(3), age=120)
    await c.source.produce(range(3, 5))
    props = one_batch(5, MaximumRecordAgeInSeconds=60, MaximumRetryAttempts=0)
    async with c.running(succeed, **props):
        given = await c.until_given_up(3)
        await c.until(lambda: len(flat(c.calls)) >= 2, "the fresh records")
        await c.acknowledged()
    assert flat(c.calls) == [3, 4]
    assert {g.condition for g in given} == {"RecordAgeExceeded"}
    assert sorted(n for g in given for n in c.numbers(g)) == [0, 1, 2]


# --- 9. throttling, and errors of the Invoke call itself ------------------------------------


@row("throttled", *EVERY)
async def throttling_backs_off_without_failing(c: Contract) -> None:
    """An HTTP target answering 429 (TooManyRequestsException) three times: esmd backs off
    and tries again; a throttle is not a retry (MaximumRetryAttempts 0 loses nothing), not a
    FailedInvokeEventCount, and (SQS) not a redelivery."""
    await c.setup()
    await c.source.produce(range(3))
    retries = {"MaximumRetryAttempts": 0} if c.source.ordered else {}
    refusals = [(429, "TooManyRequestsException")] * 3
    async with FakeFunction(c.function, c.source.decode, refusals) as endpoint:
        target = {"url": endpoint.url + "/"}
        async with c.running(function=target, **one_batch(3), **retries) as daemon:
            await c.until(lambda: len(flat(c.calls)) >= 3, "3 records delivered")
            await c.acknowledged()
            metrics = await c.metrics(daemon)
    assert sorted(flat(c.calls)) == [0, 1, 2]
    assert len(endpoint.refused_at) == 3
    assert endpoint.first_success_at is not None
    # backoff: 0.05 s doubling, equal jitter: at least 0.025 + 0.05 + 0.1 s in all
    assert endpoint.first_success_at - endpoint.refused_at[0] >= 0.15
    assert metrics.get("esm_failed_invoke_events_total", 0) == 0
    assert metrics.get("esm_dropped_events_total", 0) == 0
    assert {r.receive_count for recs in c.recs for r in recs} <= {0, 1}
    assert await c.rereads() == []
    assert await c.given_up() == []


@row("invoke-api-error", *EVERY)
async def invoke_api_errors_are_retried_without_counting(c: Contract) -> None:
    """The Invoke call itself fails (ResourceNotFoundException, AccessDeniedException,
    ServiceException): the function did not run, so esmd retries with backoff and these never
    count against MaximumRetryAttempts (0 here): nothing is given up or dropped."""
    await c.setup()
    await c.source.produce(range(3))
    retries = {"MaximumRetryAttempts": 0} if c.source.ordered else {}
    refusals = [
        (404, "ResourceNotFoundException"),
        (403, "AccessDeniedException"),
        (500, "ServiceException"),
    ]
    async with FakeFunction(c.function, c.source.decode, refusals) as endpoint:
        target = {"lambda": c.function, "endpoint_url": endpoint.url}
        async with c.running(function=target, **one_batch(3), **retries) as daemon:
            await c.until(lambda: len(flat(c.calls)) >= 3, "3 records delivered")
            await c.acknowledged()
            metrics = await c.metrics(daemon)
    assert len(endpoint.refused_at) == 3
    assert sorted(flat(c.calls)) == [0, 1, 2]
    assert metrics.get("esm_dropped_events_total", 0) == 0
    assert await c.rereads() == []
    assert await c.given_up() == []


# --- 10. an OnFailure destination that keeps refusing ----------------------------------------


@row("destination-refuses", *ORDERED)
async def refusing_destination_is_given_up_on(c: Contract) -> None:
    """The OnFailure destination (a queue that does not exist) refuses every send: after
    retry.destination_attempts (3) the records count as dropped, esm_errors_total
    {kind="on_failure_destination"} has risen, and the position moves past them (esmd's
    default; retry.block_on_destination_failure holds it instead)."""
    await c.setup()
    await c.source.produce(range(2))
    missing = f"arn:aws:sqs:us-east-1:123456789012:contract-missing-{c.name}"
    c.retry["destination_attempts"] = 3
    props = one_batch(2, MaximumRetryAttempts=0)
    props["DestinationConfig"] = {"OnFailure": {"Destination": missing}}
    async with c.running(fail, **props) as daemon:

        async def dropped() -> bool:
            metrics = await c.metrics(daemon)
            return metrics.get("esm_dropped_events_total", 0) >= 2

        await c.until(dropped, "2 records dropped")
        await c.acknowledged()
        errors = await c.metric(daemon, "esm_errors_total", kind="on_failure_destination")
        metrics = await c.metrics(daemon)
    assert c.calls == [[0, 1]], c.calls
    assert errors >= 3
    assert metrics.get("esm_on_failure_destination_delivered_events_total", 0) == 0
    assert metrics.get("esm_dropped_events_total", 0) == 2
    assert await c.rereads() == []


# --- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "contract"),
    [
        pytest.param(check, source, id=f"{source}-{name}")
        for name, check, sources in ROWS
        for source in sources
    ],
    indirect=["contract"],
)
async def test_rule(check: Row, contract: Contract) -> None:
    await check(contract)
