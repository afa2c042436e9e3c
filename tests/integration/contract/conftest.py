"""The ``contract`` fixture: a row's harness on one source (the test's indirect parameter),
with only that source's server started."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.contract import handlers
from tests.integration.contract.sources import (
    Contract,
    DynamoDBSource,
    KafkaSource,
    KinesisSource,
    Source,
    SqsFifoSource,
    SqsSource,
)


@pytest.fixture
async def contract(
    request: pytest.FixtureRequest, unique: str, tmp_path: Path
) -> AsyncIterator[Contract]:
    label: str = request.param
    name = f"{label}-{unique}"
    async with contextlib.AsyncExitStack() as stack:
        moto: str | None = None
        source: Source
        if label == "kafka":
            moto = request.getfixturevalue("moto_endpoint")
            source = KafkaSource(name, stack, request.getfixturevalue("kafka_bootstrap"))
        elif label in ("sqs", "sqs-fifo"):
            endpoint = request.getfixturevalue("elasticmq_endpoint")
            source = (SqsFifoSource if label == "sqs-fifo" else SqsSource)(name, stack, endpoint)
        elif label in ("kinesis", "dynamodb"):
            moto = request.getfixturevalue("moto_endpoint")
            source = (KinesisSource if label == "kinesis" else DynamoDBSource)(name, stack, moto)
        else:
            raise ValueError(f"no contract adapter for {label!r}")
        yield Contract(source, name, tmp_path / "state.db", moto, stack)
        handlers.forget(name)
