"""`esmd run` with several worker processes: the partitions spread over them, /metrics merges
their samples, and SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.kafka_helpers import create_topic, kafka_mapping, produce_json

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
RECORDS = 4000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def samples(port: int, name: str) -> dict[str, float]:
    """The merged values of one metric for the mapping, keyed by `kind` ("" when none)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except urllib.error.URLError:
        return {}  # not listening yet
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("mapping") == "spread":
                key = s.labels.get("kind", "")
                out[key] = out.get(key, 0) + s.value
    return out


async def stable_with_two_members(bootstrap: str, group: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _, _, state, _, _, members = described.groups[0][:6]
    return bool(state == "Stable" and len(members) == 2)


def handled(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line]


def wait(cond: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def test_two_workers_share_the_partitions_and_one_metrics_page(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    topic, group = f"workers-{unique}", f"g-{unique}"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2, "shutdown_grace_seconds": 5},
        "functions": {"spread": {"python": "tests.integration.file_handlers:kafka_records"}},
        "mappings": [
            kafka_mapping(
                "spread",
                kafka_bootstrap,
                topic,
                group,
                FunctionName="spread",
                ProvisionedPollerConfig={"MinimumPollers": 2, "MaximumPollers": 2},
            )
        ],
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "ESMD_TEST_OUT": str(out), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "service", "run", "-c", str(path)]
    with subprocess.Popen(argv, cwd=ROOT, env=env) as proc:
        try:
            wait(lambda: samples(port, "esm_pollers").get("current") == 2, 30, "2 pollers")
            wait(
                lambda: asyncio.run(stable_with_two_members(kafka_bootstrap, group)),
                30,
                "a group of two members",
            )
            values = [(i % PARTITIONS, {"i": i}) for i in range(RECORDS)]
            asyncio.run(produce_json(kafka_bootstrap, topic, values))
            wait(
                lambda: len({(r["partition"], r["offset"]) for r in handled(out)}) >= RECORDS,
                60,
                f"{RECORDS} records",
            )
            pids = {r["pid"] for r in handled(out)}
            assert len(pids) == 2, f"records were handled by {len(pids)} worker(s), not 2"
            assert proc.pid not in pids, "the supervisor itself runs no mapping"
            wait(
                lambda: samples(port, "esm_polled_events_total").get("", 0) >= RECORDS,
                10,
                "the merged polled count",
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
                assert json.loads(reply.read())["workers"] == {"0": True, "1": True}
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/mappings", timeout=5) as reply:
                listed = json.loads(reply.read())["mappings"]
            assert sorted((m["name"], m["worker"]) for m in listed) == [
                ("spread", 0),
                ("spread", 1),
            ]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            for pid in pids:  # the workers are gone too
                assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"
        finally:
            if proc.poll() is None:
                proc.kill()


def pollers_per_worker(port: int) -> dict[int, int]:
    """Each worker's pool size for the mapping, as /mappings reports it."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/mappings", timeout=5) as reply:
            listed = json.loads(reply.read())["mappings"]
    except urllib.error.URLError:
        return {}
    return {m["worker"]: (m["poller"] or {}).get("pollers", 0) for m in listed}


def test_two_workers_idle_at_the_mappings_minimum_and_grow_from_zero_on_lag(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """MinimumPollers 1 / MaximumPollers 8 under two workers: one poller for the whole
    daemon while idle; the worker holding none reads the group's lag, grows during a
    burst (it handles records too), and the daemon returns to exactly one poller."""
    topic, group = f"minimum-{unique}", f"g-{unique}"
    asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
    port = free_port()
    mapping = kafka_mapping(
        "spread",
        kafka_bootstrap,
        topic,
        group,
        FunctionName="spread",
        BatchSize=10,
        MaximumBatchingWindowInSeconds=0.1,
        ProvisionedPollerConfig={"MinimumPollers": 1, "MaximumPollers": 8},
    )
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2, "shutdown_grace_seconds": 5},
        "scaling": {
            "period_seconds": 0.5,
            "scale_up_after_seconds": 1.0,
            "scale_down_cooldown_seconds": 2.0,
        },
        "functions": {"spread": {"python": "tests.integration.file_handlers:slow_kafka_records"}},
        "mappings": [mapping],
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out.jsonl"
    env = {
        **os.environ,
        "ESMD_TEST_OUT": str(out),
        "ESMD_TEST_SLEEP": "0.15",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "service", "run", "-c", str(path)]
    records = 3000
    with subprocess.Popen(argv, cwd=ROOT, env=env) as proc:
        try:
            wait(lambda: pollers_per_worker(port) == {0: 1, 1: 0}, 30, "one poller in worker 0")
            wait(lambda: samples(port, "esm_pollers").get("current") == 1, 10, "esm_pollers 1")
            values = [(i % PARTITIONS, {"i": i}) for i in range(records)]
            asyncio.run(produce_json(kafka_bootstrap, topic, values))
            wait(lambda: pollers_per_worker(port).get(1, 0) >= 1, 20, "worker 1 to grow")
            wait(
                lambda: len({(r["partition"], r["offset"]) for r in handled(out)}) >= records,
                90,
                f"{records} records",
            )
            pids = {r["pid"] for r in handled(out)}
            assert len(pids) == 2, f"records were handled by {len(pids)} worker(s), not 2"
            wait(lambda: pollers_per_worker(port) == {0: 1, 1: 0}, 30, "back to one poller")
            assert samples(port, "esm_pollers").get("current") == 1
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_poller_group_idles_at_its_minimum_for_the_whole_daemon(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Two mappings in one poller group under two workers: one group poller in all, and both
    mappings deliver through it."""
    port = free_port()
    mappings = []
    for name in ("ga", "gb"):
        topic = f"{name}-{unique}"
        asyncio.run(create_topic(kafka_bootstrap, topic, PARTITIONS))
        mappings.append(
            kafka_mapping(
                name,
                kafka_bootstrap,
                topic,
                f"g-{name}-{unique}",
                FunctionName="spread",
                ProvisionedPollerConfig={
                    "MinimumPollers": 1,
                    "MaximumPollers": 4,
                    "PollerGroupName": f"pg-{unique}",
                },
            )
        )
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2, "shutdown_grace_seconds": 5},
        "functions": {"spread": {"python": "tests.integration.file_handlers:kafka_records"}},
        "mappings": mappings,
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "ESMD_TEST_OUT": str(out), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "service", "run", "-c", str(path)]

    def group_pollers() -> dict[tuple[str, int], int]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/mappings", timeout=5) as reply:
                listed = json.loads(reply.read())["mappings"]
        except urllib.error.URLError:
            return {}
        return {
            (m["name"], m["worker"]): (m["poller"] or {}).get("group_pollers", -1) for m in listed
        }

    with subprocess.Popen(argv, cwd=ROOT, env=env) as proc:
        try:
            idle = {("ga", 0): 1, ("gb", 0): 1, ("ga", 1): 0, ("gb", 1): 0}
            wait(lambda: group_pollers() == idle, 30, "one group poller, in worker 0")
            for name in ("ga", "gb"):
                values = [(i % PARTITIONS, {"i": i}) for i in range(100)]
                asyncio.run(produce_json(kafka_bootstrap, f"{name}-{unique}", values))
            wait(lambda: len(handled(out)) >= 200, 30, "both mappings' records")
            assert len(handled(out)) == 200  # each record once (the two topics share offsets)
            assert group_pollers() == idle
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
