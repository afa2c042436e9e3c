"""The lambda target through the Invoke API, against a real Lambda runtime: the AWS Lambda
Runtime Interface Emulator (built with go install) running awslambdaric."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)
from tests.integration.rie import running_rie

pytestmark = pytest.mark.integration


@pytest.fixture
def rie(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    out = tmp_path / "invocations.jsonl"
    with running_rie("tests.integration.lambda_fn.handle", out, "thumbs") as url:
        yield url, out


async def test_kafka_to_a_real_lambda_runtime(
    kafka_bootstrap: str, unique: str, rie: tuple[str, Path]
) -> None:
    endpoint, out = rie
    topic, group = f"rie-{unique}", f"g-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(kafka_bootstrap, topic, [(0, {"seq": i}) for i in range(50)])
    config = {
        # the emulator serves one function, under the name "function"
        "functions": {"thumbs": {"lambda": "function", "endpoint_url": endpoint}},
        "mappings": [
            kafka_mapping(
                "rie",
                kafka_bootstrap,
                topic,
                group,
                FunctionName="thumbs",
                BatchSize=20,
                MaximumBatchingWindowInSeconds=0,
            )
        ],
    }

    def invoked() -> list[int]:
        if not out.exists():
            return []
        return [o for line in out.read_text().splitlines() for o in json.loads(line)["offsets"]]

    async with running_daemon(config):
        await wait_for(lambda: len(invoked()) >= 50, 60, "50 records through the runtime")

        async def committed() -> bool:
            done, ends = await offsets(kafka_bootstrap, topic, group, 1)
            return done == ends

        await wait_for(committed, 30, "offsets committed")
    assert invoked() == list(range(50))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["function"] for line in lines} == {"thumbs"}
