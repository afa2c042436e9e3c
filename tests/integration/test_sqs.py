"""The SQS source against ElasticMQ (a real SQS-protocol server over HTTP)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from aws_lambda_powertools.utilities.parser.models import SqsModel

from tests.integration import sqs_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for

pytestmark = pytest.mark.integration
ACCOUNT = "000000000000"


@pytest.fixture
async def sqs(elasticmq_endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=elasticmq_endpoint
    ) as client:
        yield client


async def make_queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = (await sqs.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]
    return url, f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


async def send(sqs: Any, url: str, bodies: list[dict[str, Any]], **extra: Any) -> None:
    async def batch(chunk: list[tuple[int, dict[str, Any]]]) -> None:
        entries = [
            {"Id": str(i), "MessageBody": json.dumps(b), **extra(b)}
            if callable(extra)
            else {"Id": str(i), "MessageBody": json.dumps(b)}
            for i, b in chunk
        ]
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)

    indexed = list(enumerate(bodies))
    chunks = [indexed[i : i + 10] for i in range(0, len(indexed), 10)]
    for i in range(0, len(chunks), 50):
        await asyncio.gather(*(batch(c) for c in chunks[i : i + 50]))


async def queue_empty(sqs: Any, url: str) -> bool:
    attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"])
        + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        == 0
    )


def config(elasticmq: str, function: str, handler: str, arn: str, **mapping: Any) -> dict[str, Any]:
    return {
        "aws": {"endpoints": {"sqs": elasticmq}},
        "functions": {function: {"python": f"tests.integration.sqs_handlers:{handler}"}},
        "mappings": [
            {"Name": function, "EventSourceArn": arn, "FunctionName": function, **mapping}
        ],
    }


def metric(daemon: Any, name: str, mapping: str) -> float:
    labels = {"mapping": mapping, "source": "sqs"}
    return daemon.metrics.registry.get_sample_value(name, labels) or 0


async def test_filter_delivers_matching_deletes_the_rest(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    fn = f"filter-{unique}"
    url, arn = await make_queue(sqs, fn)
    await send(sqs, url, [{"seq": i, "status": "keep" if i % 2 else "skip"} for i in range(5000)])
    cfg = config(
        elasticmq_endpoint,
        fn,
        "collect",
        arn,
        FilterCriteria={"Filters": [{"Pattern": '{"body": {"status": ["keep"]}}'}]},
    )
    # evaluated often enough to see the concurrency grow while the backlog lasts
    cfg["scaling"] = {"sqs_period_seconds": 0.25}
    limits: list[float] = []
    async with running_daemon(cfg) as daemon:

        def kept_all() -> bool:
            limits.append(metric(daemon, "esm_invoke_concurrency_limit", fn))
            return len(sqs_handlers.seen[fn]) >= 2500

        await wait_for(kept_all, 120, "2,500 kept messages")
        await wait_for(lambda: queue_empty(sqs, url), 30, "the queue to empty")
        await wait_for(
            lambda: metric(daemon, "esm_deleted_events_total", fn) == 5000,
            10,
            "every message deleted",
        )
        counts = {
            name: metric(daemon, f"esm_{name}_events_total", fn)
            for name in ("polled", "filtered_out", "invoked", "deleted")
        }
    assert sorted(b["seq"] for b in sqs_handlers.seen[fn]) == list(range(1, 5000, 2))
    assert counts == {"polled": 5000, "filtered_out": 2500, "invoked": 2500, "deleted": 5000}
    # on demand: 5 concurrent batches to start, more while messages are available
    assert min(p for p in limits if p) == 5 and max(limits) > 5
    SqsModel.model_validate(copy.deepcopy(sqs_handlers.events[fn][0]))


async def test_powertools_partial_failures_redelivery_and_dlq(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    """10% fail on their first receive and succeed later; seq 7 always fails and ends in the
    queue's DLQ after maxReceiveCount; everything else is delivered once."""
    dlq_url, dlq_arn = await make_queue(sqs, f"dlq-{unique}")
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url, arn = await make_queue(sqs, f"pt-{unique}", VisibilityTimeout="2", RedrivePolicy=redrive)
    sqs_handlers.seen["powertools"].clear()
    await send(sqs, url, [{"seq": i} for i in range(200)])
    cfg = config(
        elasticmq_endpoint,
        "powertools",
        "powertools_handler",
        arn,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    async with running_daemon(cfg):
        await wait_for(
            lambda: len(sqs_handlers.seen["powertools"]) >= 199, 60, "199 messages to succeed"
        )

        async def dead_lettered() -> list[Any]:
            resp = await sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1)
            return resp.get("Messages", [])

        dlq: list[Any] = []
        async with asyncio.timeout(30):
            while not dlq:
                dlq = await dead_lettered()
        await wait_for(lambda: queue_empty(sqs, url), 30, "the source queue to empty")
    delivered = sorted(b["seq"] for b in sqs_handlers.seen["powertools"])
    assert delivered == [i for i in range(200) if i != 7]  # each once
    assert [json.loads(m["Body"])["seq"] for m in dlq] == [7]


async def test_fifo_groups_keep_their_order(sqs: Any, elasticmq_endpoint: str, unique: str) -> None:
    fn = f"fifo-{unique}"
    url, arn = await make_queue(
        sqs, f"{fn}.fifo", FifoQueue="true", ContentBasedDeduplication="true"
    )
    bodies = [{"group": f"g{i % 5}", "seq": i} for i in range(200)]
    for i in range(0, 200, 10):
        await sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(j), "MessageBody": json.dumps(b), "MessageGroupId": b["group"]}
                for j, b in enumerate(bodies[i : i + 10])
            ],
        )
    async with running_daemon(config(elasticmq_endpoint, fn, "collect", arn)):
        await wait_for(lambda: len(sqs_handlers.seen[fn]) >= 200, 60, "200 FIFO messages")
    for g in range(5):
        seqs = [b["seq"] for b in sqs_handlers.seen[fn] if b["group"] == f"g{g}"]
        assert seqs == list(range(g, 200, 5))
    record = sqs_handlers.events[fn][0]["Records"][0]
    assert record["attributes"]["MessageGroupId"].startswith("g")


async def test_slow_handler_gets_no_duplicate_past_the_visibility_timeout(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    fn = f"slow-{unique}"
    url, arn = await make_queue(sqs, fn, VisibilityTimeout="2")
    await send(sqs, url, [{"seq": i} for i in range(20)])
    async with running_daemon(config(elasticmq_endpoint, fn, "slow", arn)):
        await wait_for(lambda: len(sqs_handlers.seen[fn]) >= 20, 60, "20 slow messages")
        # once every message is deleted none can come back: a duplicate, received when its
        # visibility lapsed, would have kept the queue non-empty until its own invoke ended
        await wait_for(lambda: queue_empty(sqs, url), 10, "the queue to empty")
    assert sorted(b["seq"] for b in sqs_handlers.seen[fn]) == list(range(20))
    receive_counts = {
        r["attributes"]["ApproximateReceiveCount"]
        for e in sqs_handlers.events[fn]
        for r in e["Records"]
    }
    assert receive_counts == {"1"}


async def test_a_missing_queue_shows_in_the_state_reason_until_it_appears(
    sqs: Any, elasticmq_endpoint: str, unique: str
) -> None:
    """The poller fails (the queue does not exist), the daemon stays up, the mapping says
    why; once the queue exists the reason goes back to USER_INITIATED and messages flow."""
    fn = f"late-{unique}"
    arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:{fn}"
    cfg = config(elasticmq_endpoint, fn, "collect", arn)
    async with running_daemon(cfg) as daemon:
        (mapping,) = daemon.mappings

        def reason(code: str) -> float:
            labels = {"mapping": fn, "source": "sqs", "reason": code}
            return daemon.metrics.registry.get_sample_value("esm_state_reason", labels) or 0

        await wait_for(lambda: reason("EVENT_SOURCE_ERROR") == 1, 30, "the error reason")
        status = mapping.status()
        assert status["state_reason"] == "EVENT_SOURCE_ERROR"
        assert "does not exist" in (status["last_error"] or "")
        url, _ = await make_queue(sqs, fn)
        await send(sqs, url, [{"seq": 1}])
        await wait_for(lambda: len(sqs_handlers.seen[fn]) == 1, 60, "the message")
        assert mapping.status()["state_reason"] == "USER_INITIATED"
        assert reason("USER_INITIATED") == 1 and reason("EVENT_SOURCE_ERROR") == 0
