"""esmd end to end on the real Kafka broker: filter, order, commits, metrics, event shape."""

from __future__ import annotations

import base64
import copy
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aws_lambda_powertools.utilities.parser.models import KafkaSelfManagedEventModel

from tests.integration import collect
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    scrape,
    wait_for,
)

pytestmark = pytest.mark.integration

#: AWS's documented self-managed Kafka event (Lambda developer guide, "with-kafka").
AWS_EXAMPLE: dict[str, Any] = {
    "eventSource": "SelfManagedKafka",
    "bootstrapServers": "b-2.demo-cluster-1.a1bcde.c1.kafka.us-east-1.amazonaws.com:9092,"
    "b-1.demo-cluster-1.a1bcde.c1.kafka.us-east-1.amazonaws.com:9092",
    "records": {
        "mytopic-0": [
            {
                "topic": "mytopic",
                "partition": 0,
                "offset": 15,
                "timestamp": 1545084650987,
                "timestampType": "CREATE_TIME",
                "key": "abcDEFghiJKLmnoPQRstuVWXyz1234==",
                "value": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                "headers": [{"headerKey": [104, 101, 97, 100, 101, 114, 86, 97, 108, 117, 101]}],
            }
        ]
    },
}

N = 10_000
PARTITIONS = 4


def shape(value: Any) -> Any:
    """Field names and JSON types, recursively: what 'field by field' compares."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def unnamed_headers(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "headers": [v for h in record["headers"] for v in h.values()]}


async def test_filter_order_commits_and_metrics(kafka_bootstrap: str, unique: str) -> None:
    topic, group, fn = f"e2e-{unique}", f"g-{unique}", f"collect-{unique}"
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    values = [
        (i % PARTITIONS, {"seq": i, "kind": "keep" if i % 2 == 0 else "skip", "pad": "x" * 200})
        for i in range(N)
    ]
    await produce_json(kafka_bootstrap, topic, values)
    config = {
        "functions": {fn: {"python": "tests.integration.collect:handle"}},
        "mappings": [
            kafka_mapping(
                "e2e",
                kafka_bootstrap,
                topic,
                group,
                FunctionName=fn,
                BatchSize=250,
                FilterCriteria={"Filters": [{"Pattern": '{"value": {"kind": ["keep"]}}'}]},
            )
        ],
    }
    async with running_daemon(config) as daemon:

        async def all_committed() -> bool:
            committed, ends = await offsets(kafka_bootstrap, topic, group, PARTITIONS)
            return committed == ends and sum(ends.values()) == N

        await wait_for(all_committed, 90, "the group's offsets to reach the end offsets")
        host, port = daemon.address
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/metrics") as resp,
        ):
            metrics = scrape(await resp.text(), "e2e")

    events = collect.events[fn]
    received = [
        orjson.loads(base64.b64decode(r["value"]))
        for e in events
        for records in e["records"].values()
        for r in records
    ]
    # exactly the matching records, each at least once
    assert {v["seq"] for v in received} == {i for i in range(N) if i % 2 == 0}
    # per-partition order
    per_partition: dict[int, list[int]] = {}
    for e in events:
        for key, records in e["records"].items():
            assert key == f"{topic}-{records[0]['partition']}"
            per_partition.setdefault(records[0]["partition"], []).extend(
                r["offset"] for r in records
            )
    for offs in per_partition.values():
        assert offs == sorted(offs)
    assert metrics["esm_polled_events_total"] == N
    assert metrics["esm_filtered_out_events_total"] == N / 2
    assert metrics["esm_invoked_events_total"] == N / 2
    assert metrics["esm_committed_events_total"] == N

    # The event validates against Powertools' model and matches AWS's example field by field.
    event = events[0]
    KafkaSelfManagedEventModel.model_validate(copy.deepcopy(event))
    record = next(iter(event["records"].values()))[0]
    example_record = AWS_EXAMPLE["records"]["mytopic-0"][0]
    # headers are [{name: [signed bytes]}]: compare with the names set aside
    assert shape(unnamed_headers(record)) == shape(unnamed_headers(example_record))
    assert shape({**event, "records": {}}) == shape({**AWS_EXAMPLE, "records": {}})
    assert event["bootstrapServers"] == kafka_bootstrap
    assert base64.b64decode(record["key"]).startswith(b"k")
    assert record["headers"] == [{"source": list(b"test")}, {"bin": [-1, 0]}]


async def test_http_target_outage_loses_and_commits_nothing(
    kafka_bootstrap: str, unique: str
) -> None:
    """The HTTP target answers 500 for its first requests, then recovers."""
    topic, group = f"outage-{unique}", f"g-{unique}"
    await create_topic(kafka_bootstrap, topic, 2)
    await produce_json(kafka_bootstrap, topic, [(i % 2, {"seq": i}) for i in range(300)])
    failures_left = 8
    delivered: list[int] = []
    committed_while_failing: list[dict[int, int]] = []

    async def invoke(request: web.Request) -> web.Response:
        nonlocal failures_left
        event = await request.json()
        if failures_left > 0:
            failures_left -= 1
            committed, _ = await offsets(kafka_bootstrap, topic, group, 2)
            committed_while_failing.append(committed)
            return web.Response(status=500, text="down")
        for records in event["records"].values():
            delivered.extend(orjson.loads(base64.b64decode(r["value"]))["seq"] for r in records)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/invoke", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/invoke"
    config = {
        "retry": {"initial_backoff_seconds": 0.2, "max_backoff_seconds": 0.5},
        "functions": {"web": {"url": url}},
        "mappings": [
            kafka_mapping("outage", kafka_bootstrap, topic, group, FunctionName="web", BatchSize=50)
        ],
    }
    try:
        async with running_daemon(config):

            async def done() -> bool:
                committed, ends = await offsets(kafka_bootstrap, topic, group, 2)
                return committed == ends

            await wait_for(done, 60, "all offsets committed after the outage")
    finally:
        await runner.cleanup()
    assert failures_left == 0
    assert set(delivered) == set(range(300))
    # every failed request saw nothing committed beyond what had been delivered before it
    assert all(sum(c.values()) == 0 for c in committed_while_failing)
