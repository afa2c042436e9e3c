"""Kinesis throughput: esmd against a plain aiobotocore GetRecords loop, on moto_server.

Both read the same stream (N shards, 1 KB JSON records) from TRIM_HORIZON to the end: the
plain loop calls GetRecords per shard until it has every record; esmd lists shards, takes its
sqlite checkpoints, converts each record to Lambda's Kinesis record, invokes an in-process
handler and checkpoints. Prints records/s for each and their ratio. moto is the bottleneck of
both (it serves GetRecords in Python), so the ratio is what to read.

    python benchmarks/kinesis_throughput.py --records 20000 --shards 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
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

ENDPOINT = "http://127.0.0.1:5000"
delivered = 0


async def count_handler(event: dict[str, Any], context: Any) -> None:
    global delivered
    delivered += len(event["Records"])


def client() -> Any:
    return get_session().create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=ENDPOINT,
    )


async def fill(name: str, records: int, shards: int) -> str:
    body = json.dumps({"pad": "x" * 1000}).encode()
    async with client() as k:
        await k.create_stream(StreamName=name, ShardCount=shards)
        for i in range(0, records, 500):
            entries = [
                {"PartitionKey": f"k{j}", "Data": body} for j in range(i, min(records, i + 500))
            ]
            await k.put_records(StreamName=name, Records=entries)
        summary = await k.describe_stream_summary(StreamName=name)
        return str(summary["StreamDescriptionSummary"]["StreamARN"])


async def plain(arn: str, records: int) -> float:
    async with client() as k:
        started = time.perf_counter()
        shards = (await k.list_shards(StreamARN=arn))["Shards"]

        async def read(shard_id: str) -> int:
            it = (
                await k.get_shard_iterator(
                    StreamARN=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            got = 0
            while True:
                resp = await k.get_records(ShardIterator=it, Limit=10000, StreamARN=arn)
                got += len(resp["Records"])
                if not resp["Records"]:
                    return got
                it = resp["NextShardIterator"]

        total = sum(await asyncio.gather(*(read(s["ShardId"]) for s in shards)))
        assert total == records, total
        return time.perf_counter() - started


async def esmd(arn: str, records: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "server": {"listen": "127.0.0.1:0"},
                "aws": {"endpoint_url": ENDPOINT},
                "checkpoints": {"path": f"{tmp}/state.db"},
                "functions": {"bench": {"python": "benchmarks.kinesis_throughput:count_handler"}},
                "mappings": [
                    {
                        "Name": "bench",
                        "EventSourceArn": arn,
                        "FunctionName": "bench",
                        "StartingPosition": "TRIM_HORIZON",
                        "BatchSize": batch,
                    }
                ],
            }
        )
        daemon = Daemon(config)
        # the handler runs in the module as imported by name, not in __main__
        from benchmarks import kinesis_throughput as handlers

        started = time.perf_counter()
        task = asyncio.create_task(daemon.run(handle_signals=False))
        while handlers.delivered < records:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        daemon.request_stop()
        await task
        return elapsed


async def main(args: argparse.Namespace) -> None:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    arn = await fill(name, args.records, args.shards)
    raw = await plain(arn, args.records)
    ours = await esmd(arn, args.records, args.batch)
    print(f"records: {args.records} x 1 KB over {args.shards} shards (moto_server)")
    print(f"plain GetRecords loop: {args.records / raw:10,.0f} records/s")
    print(f"esmd end to end:       {args.records / ours:10,.0f} records/s")
    print(f"ratio: {raw / ours:.2f}x")


if __name__ == "__main__":
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")  # moto takes any credentials
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch", type=int, default=1000)
    configure_logging("WARNING", False)
    run_async(main(p.parse_args()))
