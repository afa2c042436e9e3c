"""``esmd test-filter`` on the real servers: it agrees with what a running mapping filtered,
and reading the source acknowledges nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration import sqs_handlers
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)
from tests.integration.ops_helpers import esmd, verdicts, write_config
from tests.integration.test_sqs import make_queue, queue_empty, send, sqs  # noqa: F401

pytestmark = pytest.mark.integration

FILTERS = {
    "Filters": [
        {"Pattern": '{"value": {"status": ["COMPLETED"]}}'},
        {"Pattern": '{"value": {"amount": [{"numeric": [">", 100]}]}}'},
    ]
}


def order(i: int) -> dict[str, Any]:
    return {"seq": i, "status": "COMPLETED" if i % 3 == 0 else "NEW", "amount": 50 * (i % 4)}


async def test_kafka_verdicts_agree_with_the_running_mapping(
    kafka_bootstrap: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, group, n = f"tf-{unique}", f"g-tf-{unique}", 24
    await create_topic(kafka_bootstrap, topic, 2)
    values = [order(i) for i in range(n)]
    await produce_json(kafka_bootstrap, topic, [(i % 2, v) for i, v in enumerate(values)])
    out = tmp_path / "delivered.jsonl"
    monkeypatch.setenv("ESMD_TEST_OUT", str(out))
    mapping = kafka_mapping(
        f"tf-{unique}", kafka_bootstrap, topic, group, FunctionName="fn", FilterCriteria=FILTERS
    )
    config = {
        "functions": {"fn": {"python": "tests.integration.file_handlers:kafka_records"}},
        "mappings": [mapping],
    }
    path = write_config(tmp_path, config)

    # from the source, before the mapping runs: nothing is committed by reading
    code, stdout, stderr = await esmd(
        "test-filter", "-c", path, "--mapping", mapping["Name"], "--from-source", str(n), "--json"
    )
    assert code == 0, stderr
    from_source = verdicts(stdout)
    assert len(from_source) == n
    committed, _ = await offsets(kafka_bootstrap, topic, group, 2)
    assert committed == {0: 0, 1: 0}

    async with running_daemon(config):

        async def all_committed() -> bool:
            done, ends = await offsets(kafka_bootstrap, topic, group, 2)
            return done == ends

        await wait_for(all_committed, 30, "the mapping to commit every record")

    delivered = {
        (r["partition"], r["offset"]) for r in map(json.loads, out.read_text().splitlines())
    }

    def position(label: str) -> tuple[int, int]:
        partition, offset = label.rsplit("-", 1)[1].split("@")
        return int(partition), int(offset)

    kept = {position(v["record"]) for v in from_source if v["kept"]}
    assert kept == delivered
    assert 0 < len(kept) < n

    # the same values typed as JSON lines give the same verdicts, filter by filter
    lines = "\n".join(json.dumps({"value": v}) for v in values) + "\n"
    code, stdout, stderr = await esmd(
        "test-filter", "-c", path, "--mapping", mapping["Name"], "--json", stdin=lines
    )
    assert code == 0, stderr
    typed = verdicts(stdout)
    expected = [
        [i for i, hit in enumerate([v["status"] == "COMPLETED", v["amount"] > 100]) if hit]
        for v in values
    ]
    assert [v["matched"] for v in typed] == expected
    assert sum(v["kept"] for v in typed) == len(delivered)


async def test_sqs_from_source_deletes_nothing_and_agrees_with_the_mapping(
    sqs: Any,  # noqa: F811
    elasticmq_endpoint: str,
    unique: str,
    tmp_path: Path,
) -> None:
    name = f"tf-sqs-{unique}"
    url, arn = await make_queue(sqs, name)
    bodies = [order(i) for i in range(8)]
    await send(sqs, url, bodies)
    config = {
        "aws": {"endpoints": {"sqs": elasticmq_endpoint}},
        "functions": {name: {"python": "tests.integration.sqs_handlers:collect"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": arn,
                "FunctionName": name,
                "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"status": ["COMPLETED"]}}'}]},
            }
        ],
    }
    path = write_config(tmp_path, config)
    code, stdout, stderr = await esmd(
        "test-filter", "-c", path, "--mapping", name, "--from-source", "20"
    )
    assert code == 0, stderr
    assert "8 record(s): 3 kept, 5 filtered out" in stdout
    attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "8"  # still there

    async with running_daemon(config):
        await wait_for(lambda: queue_empty(sqs, url), 30, "the mapping to empty the queue")
    assert sorted(b["seq"] for b in sqs_handlers.seen[name]) == [0, 3, 6]
