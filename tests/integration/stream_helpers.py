"""Helpers for the Kinesis and DynamoDB Streams tests on moto_server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.session import get_session


@asynccontextmanager
async def client(service: str, endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, region_name="us-east-1", endpoint_url=endpoint
    ) as c:
        yield c


async def make_stream(kinesis: Any, name: str, shards: int) -> str:
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    while True:
        desc = (await kinesis.describe_stream_summary(StreamName=name))["StreamDescriptionSummary"]
        if desc["StreamStatus"] == "ACTIVE":
            return str(desc["StreamARN"])
        await asyncio.sleep(0.1)


async def put_json(kinesis: Any, name: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Put (partition key, payload) pairs in order, 500 a call."""
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        resp = await kinesis.put_records(
            StreamName=name,
            Records=[{"PartitionKey": k, "Data": json.dumps(v).encode()} for k, v in chunk],
        )
        assert resp.get("FailedRecordCount", 0) == 0


def stream_config(
    moto: str, name: str, arn: str, handler: str, state: str, **mapping: Any
) -> dict[str, Any]:
    return {
        "aws": {"endpoint_url": moto, "region": "us-east-1"},
        "checkpoints": {"store": "sqlite", "path": state},
        "functions": {name: {"python": f"tests.integration.stream_handlers:{handler}"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": arn,
                "FunctionName": name,
                "StartingPosition": "TRIM_HORIZON",
                **mapping,
            }
        ],
    }


def in_key_order(payloads: list[dict[str, Any]]) -> bool:
    """Each key's ``n`` values arrive increasing (duplicates may repeat a suffix)."""
    last: dict[str, int] = {}
    for p in payloads:
        if p["n"] < last.get(p["key"], -1):
            return False
        last[p["key"]] = p["n"]
    return True
