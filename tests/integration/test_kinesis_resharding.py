"""SplitShard in the middle of a run: the parent is finished before its children start.

moto's own SplitShard is not Kinesis's (see moto_resharding.py), so this test runs a private
moto_server with Kinesis's resharding behaviour patched in, on a port of its own.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import stream_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import client, make_stream, put_json, stream_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BEFORE = AFTER = 3000


@pytest.fixture
def resharding_moto() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.moto_resharding", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "moto_resharding exited"
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_resharding did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_split_shard_mid_run_parent_before_children(
    resharding_moto: str, unique: str, tmp_path: Path
) -> None:
    name = f"split-{unique}"
    async with client("kinesis", resharding_moto) as kinesis:
        arn = await make_stream(kinesis, name, 1)
        keys = [f"key-{i % 64}" for i in range(BEFORE + AFTER)]
        await put_json(kinesis, name, [(keys[i], {"key": keys[i], "n": i}) for i in range(BEFORE)])
        cfg = stream_config(
            resharding_moto, name, arn, "slow_collect", str(tmp_path / "state.db"), BatchSize=50
        )
        async with running_daemon(cfg):
            await wait_for(lambda: len(stream_handlers.payloads[name]) >= 500, 30, "a first part")
            parent = (await kinesis.list_shards(StreamName=name))["Shards"][0]
            middle = (int(parent["HashKeyRange"]["EndingHashKey"]) + 1) // 2
            await kinesis.split_shard(
                StreamName=name, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(middle)
            )
            split_at = len(stream_handlers.payloads[name])
            await put_json(
                kinesis,
                name,
                [(keys[i], {"key": keys[i], "n": i}) for i in range(BEFORE, BEFORE + AFTER)],
            )
            shards = (await kinesis.list_shards(StreamName=name))["Shards"]
            await wait_for(
                lambda: len({p["n"] for p in stream_handlers.payloads[name]}) >= BEFORE + AFTER,
                60,
                "every record of parent and children",
            )
    assert split_at < BEFORE, "the parent was finished before the split: not mid-run"
    children = {s["ShardId"] for s in shards if s.get("ParentShardId") == parent["ShardId"]}
    assert len(children) == 2
    events = stream_handlers.events[name]
    shard_of = [e["Records"][0]["eventID"].split(":")[0] for e in events]
    assert set(shard_of) == {parent["ShardId"], *children}  # both children got records
    last_parent = max(i for i, s in enumerate(shard_of) if s == parent["ShardId"])
    first_child = min(i for i, s in enumerate(shard_of) if s in children)
    assert last_parent < first_child
    ns = [p["n"] for p in stream_handlers.payloads[name]]
    assert sorted(set(ns)) == list(range(BEFORE + AFTER))
    assert ns[:BEFORE] == list(range(BEFORE))  # the parent's records, first and in order
