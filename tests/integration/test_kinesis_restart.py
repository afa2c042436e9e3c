"""A daemon killed with SIGKILL resumes from its sqlite checkpoints: nothing is lost."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kafka_helpers import wait_for
from tests.integration.stream_helpers import client, make_stream, put_json, stream_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TOTAL = 20_000
BATCH = 100


def delivered(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def checkpointed_to_the_end(kinesis: Any, stream: str, state: Path) -> bool:
    """Every shard's checkpoint (the daemon's sqlite store) has no record after it."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT shard_id, checkpoint FROM shard_checkpoints").fetchall()
    if not rows:
        return False
    for shard_id, checkpoint in rows:
        if not checkpoint[:1].isdigit():  # TRIM_HORIZON: nothing delivered yet
            return False
        iterator = await kinesis.get_shard_iterator(
            StreamName=stream,
            ShardId=shard_id,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            StartingSequenceNumber=checkpoint,
        )
        after = await kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=1)
        if after["Records"]:
            return False
    return True


def start(config: Path, output: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ESMD_TEST_OUTPUT": str(output), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run", "-c", str(config), "--log-level", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_mid_run_then_resume(moto_endpoint: str, unique: str, tmp_path: Path) -> None:
    name = f"kill-{unique}"
    async with client("kinesis", moto_endpoint) as kinesis:
        arn = await make_stream(kinesis, name, 2)
        await put_json(
            kinesis, name, [(f"k{i % 50}", {"key": f"k{i % 50}", "n": i}) for i in range(TOTAL)]
        )
    cfg = stream_config(
        moto_endpoint, name, arn, "append_to_file", str(tmp_path / "state.db"), BatchSize=BATCH
    )
    cfg["server"] = {"listen": "127.0.0.1:0", "workers": 1}
    config = tmp_path / "esmd.yaml"
    config.write_text(yaml.safe_dump(cfg))
    output = tmp_path / "delivered.txt"

    first = start(config, output)
    try:
        await wait_for(lambda: len(delivered(output)) >= 3000, 60, "a first share delivered")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = len(delivered(output))
    assert at_kill < TOTAL, "the run finished before the kill: nothing to resume"

    second = start(config, output)
    try:
        await wait_for(lambda: len(set(delivered(output))) >= TOTAL, 90, "every record")
        # once every shard is checkpointed past its last record nothing is due again: the
        # duplicates counted below are all there will be
        async with client("kinesis", moto_endpoint) as kinesis:
            await wait_for(
                lambda: checkpointed_to_the_end(kinesis, name, tmp_path / "state.db"),
                30,
                "the checkpoints to reach the end of every shard",
            )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    lines = delivered(output)
    counts = Counter(lines)
    assert {int(line.split()[1]) for line in counts} == set(range(TOTAL))
    duplicates = sum(c - 1 for c in counts.values())
    # at most the batches in flight at the kill: per shard, one being invoked and one
    # delivered whose checkpoint write was under way (a lane waits for that write before
    # it starts a third)
    assert duplicates <= 2 * 2 * BATCH, duplicates
    assert second.returncode == 0
