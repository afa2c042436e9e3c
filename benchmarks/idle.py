"""Idle cost: how long many idle mappings take to start, and the CPU and memory they cost.

Runs ``esmd run`` (one process, ``server.workers: 1``) over N idle Kafka mappings (one topic
of one partition each, on the local broker) and M idle SQS mappings (one ElasticMQ queue
each), then prints:

- start: seconds from the process's start until every mapping is Enabled and every Kafka
  mapping's partition is assigned to a poller (it really consumes);
- idle CPU: percent of one core over ``--seconds`` after a short settling time;
- RSS: the process's resident memory then.

With ``--compare-groups``, each run happens twice in the same invocation: the Kafka mappings
each with their own pool, then all in one poller group (``PollerGroupName``), so the two
figures come from the same machine load. Topics and queues are named ``idle-bench-<i>`` and
reused by later runs.

    python benchmarks/idle.py --kafka 100 --compare-groups
    python benchmarks/idle.py --kafka 500 --sqs 500 --grouped
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml
from aiobotocore.session import get_session
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.config import GROUP_MAPPINGS

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "000000000000"


@dataclass(frozen=True, slots=True)
class Figures:
    start_seconds: float
    cpu_percent: float
    rss_mb: float


def topic(i: int) -> str:
    return f"idle-bench-{i}"


async def make_topics(bootstrap: str, n: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        have = set(await admin.list_topics())
        missing = [NewTopic(topic(i), 1, 1) for i in range(n) if topic(i) not in have]
        for start in range(0, len(missing), 100):
            await admin.create_topics(missing[start : start + 100])
    finally:
        await admin.close()


async def make_queues(endpoint: str, n: int) -> None:
    async with get_session().create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    ) as sqs:
        for start in range(0, n, 50):
            names = [topic(i) for i in range(start, min(n, start + 50))]
            await asyncio.gather(*(sqs.create_queue(QueueName=name) for name in names))


def config(args: argparse.Namespace, port: int, group: str | None) -> dict[str, Any]:
    kafka = [
        {
            "Name": f"kafka-{i}",
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [args.bootstrap]}},
            "Topics": [topic(i)],
            "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": f"idle-bench-{i}"},
            "StartingPosition": "LATEST",
            "FunctionName": "noop",
            "ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 2}
            # AWS allows 100 mappings a group: groups of 100
            | ({"PollerGroupName": f"{group}-{i // GROUP_MAPPINGS}"} if group else {}),
        }
        for i in range(args.kafka)
    ]
    sqs = [
        {
            "Name": f"sqs-{i}",
            "EventSourceArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{topic(i)}",
            "FunctionName": "noop",
        }
        for i in range(args.sqs)
    ]
    return {
        "server": {"listen": f"127.0.0.1:{port}", "workers": 1},
        "aws": {"region": "us-east-1", "endpoints": {"sqs": args.elasticmq}},
        "functions": {"noop": {"python": "benchmarks.idle:noop"}},
        "mappings": kafka + sqs,
    }


def noop(event: dict[str, Any], context: Any) -> None:
    """The target: never called while the sources stay idle."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def progress(port: int) -> tuple[int, int]:
    """(mappings Enabled with a USER_INITIATED reason or none yet, Kafka mappings with their
    partition assigned)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/mappings", timeout=10) as reply:
            listed = json.loads(reply.read())["mappings"]
    except (urllib.error.URLError, TimeoutError):
        return 0, 0
    enabled = sum(
        m["state"] == "Enabled" and m["state_reason"] in (None, "USER_INITIATED") for m in listed
    )
    assigned = sum(
        1
        for m in listed
        if m["source"] in ("kafka", "msk") and (m["poller"] or {}).get("partitions")
    )
    return enabled, assigned


def measure(args: argparse.Namespace, group: str | None) -> Figures:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "esmd.yaml"
        path.write_text(yaml.safe_dump(config(args, port, group)))
        argv = [sys.executable, "-m", "service", "run", "-c", str(path), "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # ElasticMQ takes any
            env.setdefault(key, "x")
        begin = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env)
        try:
            deadline = begin + args.start_timeout
            while (found := progress(port)) != (args.kafka + args.sqs, args.kafka):
                if time.monotonic() > deadline or proc.poll() is not None:
                    enabled, assigned = found
                    raise SystemExit(
                        f"not started within {args.start_timeout}s: {enabled} mappings "
                        f"enabled, {assigned} of {args.kafka} Kafka mappings assigned"
                    )
                time.sleep(0.5)
            start = time.monotonic() - begin
            time.sleep(args.settle)
            process = psutil.Process(proc.pid)
            before = process.cpu_times()
            time.sleep(args.seconds)
            after = process.cpu_times()
            used = (after.user - before.user) + (after.system - before.system)
            rss = process.memory_info().rss / 1e6
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return Figures(start, 100 * used / args.seconds, rss)


def show(label: str, f: Figures) -> None:
    print(
        f"{label:<34} start {f.start_seconds:6.1f} s   idle CPU {f.cpu_percent:5.1f} % of a core"
        f"   RSS {f.rss_mb:6.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kafka", type=int, default=100, help="idle Kafka mappings")
    parser.add_argument("--sqs", type=int, default=0, help="idle SQS mappings")
    parser.add_argument("--compare-groups", action="store_true", help="again, in groups")
    parser.add_argument("--grouped", action="store_true", help="only in groups")
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measuring time")
    parser.add_argument("--settle", type=float, default=5.0, help="wait after start")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--elasticmq", default="http://127.0.0.1:9324")
    args = parser.parse_args()
    asyncio.run(make_topics(args.bootstrap, args.kafka))
    if args.sqs:
        asyncio.run(make_queues(args.elasticmq, args.sqs))
    print(f"load before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores", flush=True)
    what = f"{args.kafka} Kafka + {args.sqs} SQS" if args.sqs else f"{args.kafka} Kafka"
    if not args.grouped:
        show(f"{what}, a pool each", measure(args, None))
    if args.compare_groups or args.grouped:
        groups = -(-args.kafka // GROUP_MAPPINGS)
        show(f"{what}, {groups} poller group(s)", measure(args, "idle-bench"))
    print(f"load after: {os.getloadavg()[0]:.2f} (1 min)", flush=True)


if __name__ == "__main__":
    main()
