"""SQS throughput: esmd against a plain aiobotocore receive-and-delete loop, in one run.

Both read the same number of messages from ElasticMQ (127.0.0.1:9324) with the same number
of concurrent receivers (10 messages a receive, batches of 10): the plain loop receives and
deletes, esmd receives, builds the Lambda event, invokes an in-process handler and deletes.
Prints messages/s for each and their ratio (target: esmd >= 0.9x the plain loop).

    python benchmarks/sqs_throughput.py --messages 20000 --pollers 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.logs import configure_logging

ENDPOINT = "http://127.0.0.1:9324"
delivered = 0


async def count_handler(event: dict[str, Any], context: Any) -> None:
    global delivered
    delivered += len(event["Records"])


def client() -> Any:
    return get_session().create_client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


async def fill(sqs: Any, name: str, n: int) -> str:
    url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
    body = json.dumps({"type": "order", "pad": "x" * 900})

    async def batch(start: int) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i in range(min(10, n - start))]
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)

    starts = list(range(0, n, 10))
    for i in range(0, len(starts), 100):
        await asyncio.gather(*(batch(s) for s in starts[i : i + 100]))
    return url


async def plain_loop(sqs: Any, url: str, n: int, pollers: int) -> float:
    done = 0

    async def receiver() -> None:
        nonlocal done
        while done < n:
            resp = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = resp.get("Messages", [])
            if messages:
                await sqs.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                done += len(messages)

    started = time.perf_counter()
    await asyncio.gather(*(receiver() for _ in range(pollers)))
    return time.perf_counter() - started


async def esmd_run(name: str, n: int, pollers: int) -> float:
    import benchmarks.sqs_throughput as handler_module

    handler_module.delivered = 0
    config = parse_config(
        {
            "server": {"listen": "127.0.0.1:0"},
            "aws": {"endpoints": {"sqs": ENDPOINT}},
            "functions": {"count": {"python": "benchmarks.sqs_throughput:count_handler"}},
            "mappings": [
                {
                    "Name": "bench",
                    "EventSourceArn": f"arn:aws:sqs:us-east-1:000000000000:{name}",
                    "FunctionName": "count",
                    "BatchSize": 10,
                    "ProvisionedPollerConfig": {
                        "MinimumPollers": pollers,
                        "MaximumPollers": pollers,
                    },
                    "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"type": ["order"]}}'}]},
                }
            ],
        },
        "bench",
    )
    daemon = Daemon(config)
    started = time.perf_counter()
    task = asyncio.create_task(daemon.run(handle_signals=False))
    deleted = daemon.metrics.deleted.labels("bench", "sqs")
    while deleted._value.get() < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    daemon.request_stop()
    await task
    assert handler_module.delivered >= n
    return elapsed


async def main(args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    async with client() as sqs:
        plain_runs, esmd_runs = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same machine load
            name = f"bench-{uuid.uuid4().hex[:8]}"
            url = await fill(sqs, name, args.messages)
            plain_runs.append(await plain_loop(sqs, url, args.messages, args.pollers))
            name = f"bench-{uuid.uuid4().hex[:8]}"
            await fill(sqs, name, args.messages)
            esmd_runs.append(await esmd_run(name, args.messages, args.pollers))
    plain, esmd = min(plain_runs), min(esmd_runs)
    n = args.messages
    print(
        f"{args.messages} messages of ~1 KB, {args.pollers} concurrent receivers, "
        f"best of {args.repeat}"
    )
    print(f"{'':36}{'messages/s':>12}{'seconds':>10}")
    print(f"{'plain receive+delete (aiobotocore)':36}{n / plain:12.0f}{plain:10.2f}")
    print(f"{'esmd (filter, invoke, delete)':36}{n / esmd:12.0f}{esmd:10.2f}")
    print(f"ratio esmd/plain: {plain / esmd:.2f}x   (target: >= 0.9x)")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--pollers", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    configure_logging("WARNING")
    run_async(main(args))


if __name__ == "__main__":
    cli()
