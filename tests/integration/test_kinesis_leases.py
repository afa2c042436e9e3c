"""Two daemons on one DynamoDB lease table share a stream's shards, KCL-style."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration import stream_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import client, make_stream, put_json, stream_config

pytestmark = pytest.mark.integration


async def owners(ddb: Any, table: str, mapping: str) -> Counter[str]:
    items = (await ddb.scan(TableName=table, ConsistentRead=True))["Items"]
    return Counter(
        i["leaseOwner"]["S"] for i in items if i["mapping"]["S"] == mapping and "leaseOwner" in i
    )


def lease_config(
    moto: str, name: str, arn: str, table: str, owner: str, tmp: Path
) -> dict[str, Any]:
    cfg = stream_config(moto, name, arn, "collect", str(tmp / f"{owner}.db"), BatchSize=100)
    cfg["checkpoints"] = {
        "store": "dynamodb",
        "table": table,
        "lease_duration_seconds": 3,
        "owner": owner,
    }
    return cfg


async def test_two_daemons_split_shards_and_take_over(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    name, table = f"lease-{unique}", f"leases-{unique}"
    sent = 0

    async def put(kinesis: Any, n: int) -> None:
        nonlocal sent
        await put_json(
            kinesis, name, [(f"k{i}", {"key": f"k{i}", "n": i}) for i in range(sent, sent + n)]
        )
        sent += n

    async with (
        client("kinesis", moto_endpoint) as kinesis,
        client("dynamodb", moto_endpoint) as ddb,
    ):
        arn = await make_stream(kinesis, name, 4)
        await put(kinesis, 2000)
        cfg_a = lease_config(moto_endpoint, name, arn, table, "a", tmp_path)
        cfg_b = lease_config(moto_endpoint, name, arn, table, "b", tmp_path)
        async with running_daemon(cfg_b):
            async with running_daemon(cfg_a):
                await wait_for(
                    lambda: _split_evenly(ddb, table, name), 30, "the shards split 2 and 2"
                )
                await put(kinesis, 2000)
                await wait_for(lambda: _count(name) >= sent, 30, "records while sharing")
            # a stopped cleanly: its leases are free, b takes them all
            await wait_for(
                lambda: _all_owned_by(ddb, table, name, "b"), 30, "b to hold all four shards"
            )
            await put(kinesis, 2000)
            await wait_for(lambda: _count(name) >= sent, 30, "records after the take-over")
    got = {p["n"] for p in stream_handlers.payloads[name]}
    assert got == set(range(sent))


def _count(name: str) -> int:
    return len({p["n"] for p in stream_handlers.payloads[name]})


async def _split_evenly(ddb: Any, table: str, name: str) -> bool:
    return await owners(ddb, table, name) == Counter({"a": 2, "b": 2})


async def _all_owned_by(ddb: Any, table: str, name: str, owner: str) -> bool:
    return await owners(ddb, table, name) == Counter({owner: 4})
