"""Crash recovery with Kafka static membership: `esmd run` with two workers is SIGKILLed as
a whole process group in the middle of a run and started again at once. Each poller rejoins
its group with the group.instance.id it had, so the broker hands its partitions back without
waiting out the dead members' session: delivery resumes within seconds, nothing is lost, and
only records after the last commit are delivered twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.integration.kafka_helpers import create_topic, kafka_mapping, offsets, produce_json
from tests.integration.test_workers import ROOT, free_port, handled, wait

pytestmark = pytest.mark.integration
PARTITIONS = 4
RECORDS = 2000
BATCH = 10


def start(path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "service", "run", "-c", str(path), "--log-level", "WARNING"]
    # its own process group: the test kills the supervisor and both workers at once
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def test_sigkilled_daemon_restarted_at_once_resumes_within_5s(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    topic, group = f"restart-{unique}", f"g-restart-{unique}"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    values = [(i % PARTITIONS, {"i": i}) for i in range(RECORDS)]
    asyncio.run(produce_json(kafka_bootstrap, topic, values))
    config = {
        "server": {"listen": f"127.0.0.1:{free_port()}", "workers": 2},
        "kafka": {"instance_id": f"test-{unique}", "session_timeout_seconds": 45},
        "functions": {"slow": {"python": "tests.integration.file_handlers:slow_kafka_records"}},
        "mappings": [
            kafka_mapping(
                "slow", kafka_bootstrap, topic, group, FunctionName="slow", BatchSize=BATCH
            )
        ],
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "ESMD_TEST_OUT": str(out), "ESMD_TEST_SLEEP": "0.1"}
    env["PYTHONPATH"] = str(ROOT)
    first = start(path, env)
    try:
        wait(lambda: len(handled(out)) >= RECORDS // 5, 60, "a fifth of the records")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    before = {(r["partition"], r["offset"]) for r in handled(out)}
    old_pids = {r["pid"] for r in handled(out)}
    committed, _ = asyncio.run(offsets(kafka_bootstrap, topic, group, PARTITIONS))
    assert len(before) < RECORDS, "the run was over before the kill: nothing to show"

    restarted_at = time.monotonic()
    second = start(path, env)
    try:
        wait(
            lambda: any(r["pid"] not in old_pids for r in handled(out)),
            5,
            "delivery to resume after the restart (static membership)",
        )
        resumed = time.monotonic() - restarted_at
        wait(
            lambda: len({(r["partition"], r["offset"]) for r in handled(out)}) >= RECORDS,
            60,
            "every record",
        )
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
    seen = Counter((r["partition"], r["offset"]) for r in handled(out))
    expected = {(i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS)}
    assert set(seen) == expected, "records were lost"
    twice = {key for key, n in seen.items() if n > 1}
    # only what was delivered but not yet committed when the process group died comes again
    assert all(offset >= committed[partition] for partition, offset in twice), twice
    assert twice <= before
    print(f"resumed {resumed:.2f}s after the restart; {len(twice)} records delivered twice")
