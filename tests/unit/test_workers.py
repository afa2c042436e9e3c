from __future__ import annotations

import os
from pathlib import Path

from service.config import parse_config
from service.scaling import PoolBounds
from service.workers import Worker, usable_cores


def test_pool_bounds_are_split_and_every_running_worker_keeps_one_poller() -> None:
    workers = [Worker(i, 3) for i in range(3)]
    shares = [w.share(PoolBounds(1, 8)) for w in workers]
    assert shares == [PoolBounds(1, 3), PoolBounds(1, 3), PoolBounds(1, 2)]
    assert sum(s.maximum for s in shares) == 8
    assert Worker(1, 2).share(PoolBounds(5, 100)) == PoolBounds(2, 50)


def test_kafka_shares_add_up_to_the_mappings_minimum() -> None:
    """Kafka reads lag without a consumer, so a worker's share of the minimum may be zero:
    Min 1 / Max 8 over two workers idles at one poller for the whole daemon."""
    shares = [Worker(i, 2).share(PoolBounds(1, 8), keep_one=False) for i in range(2)]
    assert shares == [PoolBounds(1, 4), PoolBounds(0, 4)]
    assert sum(s.minimum for s in shares) == 1


def test_which_worker_runs_what() -> None:
    config = parse_config(
        {
            "mappings": [
                {
                    "Name": "one-poller",
                    "SelfManagedEventSource": {
                        "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["k:9092"]}
                    },
                    "Topics": ["t"],
                    "StartingPosition": "LATEST",
                    "FunctionName": "f",
                    "ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 1},
                },
                {
                    "Name": "stream",
                    "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                    "StartingPosition": "LATEST",
                    "FunctionName": "f",
                },
            ]
        },
        "test",
    )
    kafka, stream = config.mappings
    assert [Worker(i, 2).runs(kafka, config) for i in range(2)] == [True, False]
    # sqlite checkpoints have one writer: worker 0
    assert [Worker(i, 2).runs(stream, config) for i in range(2)] == [True, False]


def test_usable_cores_follow_the_cgroup_quota(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    limit = tmp_path / "cpu.max"
    limit.write_text("max 100000\n")
    assert usable_cores(limit) == cores
    limit.write_text("50000 100000\n")  # half a core: still one worker
    assert usable_cores(limit) == 1
    limit.write_text(f"{cores * 300000} 100000\n")  # a quota above the machine: the machine
    assert usable_cores(limit) == cores
    assert usable_cores(tmp_path / "missing") == cores


def test_sqs_maximum_concurrency_is_shared_by_the_workers() -> None:
    config = parse_config(
        {
            "mappings": [
                {
                    "Name": "q",
                    "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q",
                    "FunctionName": "f",
                    "ScalingConfig": {"MaximumConcurrency": 2},
                }
            ]
        },
        "test",
    )
    (queue,) = config.mappings
    assert [Worker(i, 3).runs(queue, config) for i in range(3)] == [True, True, False]
    assert [Worker(i, 3).part(2) for i in range(2)] == [1, 1]
