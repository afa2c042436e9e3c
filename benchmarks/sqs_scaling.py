"""SQS scaling during a burst: the concurrency curve, on demand vs provisioned, against AWS.

One esmd daemon (in this process) runs two mappings side by side on two ElasticMQ queues that
hold the same burst: one on demand, one with ProvisionedPollerConfig. The handler takes a
fixed time per batch (a slow target, as a function that calls a database), so concurrency,
not the handler, sets the pace and the ramp shows. AWS's minute is compressed to
``--minute`` seconds (esmd's ``scaling.sqs_minute_seconds``), so the whole curve takes
seconds.

Every quarter of an AWS minute it prints, for each mapping, AWS's documented figure (on
demand: 5 concurrent batches + 300 a minute up to 1,000; provisioned: MinimumPollers x 10 +
1,000 a minute up to MaximumPollers x 10 and 20,000, while messages are available), the
concurrency esmd allows (esm_invoke_concurrency_limit), the batches in flight and the
pollers, and when each queue drained. t = 0 is when both mappings have connected. After an
idle minute both shrink back.

    python benchmarks/sqs_scaling.py --messages 5000 --minute 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.cli import run_async
from service.config import parse_config
from service.daemon import Daemon
from service.logs import configure_logging
from service.sources.sqs_scaling import (
    INVOKES_PER_POLLER,
    ON_DEMAND_MAX,
    ON_DEMAND_PER_MINUTE,
    ON_DEMAND_START,
    PROVISIONED_MAX_CONCURRENCY,
    PROVISIONED_PER_MINUTE,
)

ENDPOINT = "http://127.0.0.1:9324"
HANDLER_SECONDS = 2.0
in_flight: dict[str, int] = defaultdict(int)
delivered: dict[str, int] = defaultdict(int)


async def slow_handler(event: dict[str, Any], context: Any) -> None:
    """Takes HANDLER_SECONDS a batch (a function that waits on a database)."""
    name = context.function_name
    in_flight[name] += 1
    try:
        await asyncio.sleep(HANDLER_SECONDS)
        delivered[name] += len(event["Records"])
    finally:
        in_flight[name] -= 1


def aws_on_demand(minutes: float) -> float:
    return min(ON_DEMAND_MAX, ON_DEMAND_START + ON_DEMAND_PER_MINUTE * minutes)


def aws_provisioned(minutes: float, min_pollers: int, max_pollers: int) -> float:
    ceiling = min(max_pollers * INVOKES_PER_POLLER, PROVISIONED_MAX_CONCURRENCY)
    return min(ceiling, min_pollers * INVOKES_PER_POLLER + PROVISIONED_PER_MINUTE * minutes)


async def fill(sqs: Any, name: str, n: int) -> str:
    url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
    body = json.dumps({"order": "x" * 200})

    async def batch(start: int) -> None:
        entries = [{"Id": str(i), "MessageBody": body} for i in range(min(10, n - start))]
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)

    starts = list(range(0, n, 10))
    for i in range(0, len(starts), 50):
        await asyncio.gather(*(batch(s) for s in starts[i : i + 50]))
    return url


def mapping(name: str, queue: str, batch_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "EventSourceArn": f"arn:aws:sqs:us-east-1:000000000000:{queue}",
        "FunctionName": name,
        "BatchSize": batch_size,
        **extra,
    }


def gauge(daemon: Daemon, name: str, mapping: str, **labels: str) -> float:
    value = daemon.metrics.registry.get_sample_value(
        name, {"mapping": mapping, "source": "sqs", **labels}
    )
    return value or 0.0


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    global HANDLER_SECONDS
    HANDLER_SECONDS = args.handler_seconds
    tag = uuid.uuid4().hex[:6]
    queues = {"on-demand": f"burst-od-{tag}", "provisioned": f"burst-pv-{tag}"}
    async with get_session().create_client(
        "sqs", region_name="us-east-1", endpoint_url=ENDPOINT
    ) as sqs:
        await asyncio.gather(*(fill(sqs, q, args.messages) for q in queues.values()))
    handler = {"python": "benchmarks.sqs_scaling:slow_handler"}
    pollers = {"MinimumPollers": args.min_pollers, "MaximumPollers": args.max_pollers}
    config = parse_config(
        {
            "server": {"listen": "127.0.0.1:0"},
            "aws": {"endpoints": {"sqs": ENDPOINT}},
            "scaling": {"sqs_minute_seconds": args.minute, "sqs_period_seconds": args.minute / 60},
            "functions": {name: handler for name in queues},
            "mappings": [
                mapping("on-demand", queues["on-demand"], args.batch_size),
                mapping(
                    "provisioned",
                    queues["provisioned"],
                    args.batch_size,
                    ProvisionedPollerConfig=pollers,
                ),
            ],
        },
        "sqs scaling benchmark",
    )
    import benchmarks.sqs_scaling as handler_module  # where the handler counts

    counts = handler_module.delivered
    print(
        f"burst of {args.messages} messages on each queue; handler {args.handler_seconds:g} s "
        f"a batch of {args.batch_size}; AWS's minute = {args.minute:g} s; provisioned "
        f"{args.min_pollers}..{args.max_pollers} pollers; load {os.getloadavg()[0]:.1f}"
    )
    header = ("on demand: AWS", "esmd", "flying", "provisioned: AWS", "esmd", "flying", "pollers")
    print(f"{'t (AWS min)':>11}" + "".join(f"{h:>{max(8, len(h) + 2)}}" for h in header))
    daemon = Daemon(config)
    task = asyncio.create_task(daemon.run(handle_signals=False))
    launched = time.monotonic()
    # t = 0 when both mappings have connected and show their starting concurrency
    while not all(gauge(daemon, "esm_invoke_concurrency_limit", name) for name in queues):
        await asyncio.sleep(0.01)
    started = time.monotonic()
    print(f"(both mappings connected {started - launched:.1f} s after the daemon started)")
    drained: dict[str, float] = {}
    # a level each ramp reaches, and when AWS's figures reach it
    marks = {
        "on-demand": ON_DEMAND_START + ON_DEMAND_PER_MINUTE,
        "provisioned": aws_provisioned(1.0, args.min_pollers, args.max_pollers),
    }
    reached: dict[str, float] = {}
    floors = {"on-demand": ON_DEMAND_START, "provisioned": args.min_pollers * INVOKES_PER_POLLER}
    next_row = 0.0
    while True:  # sampled every 1/40 minute, printed every quarter
        minutes = (time.monotonic() - started) / args.minute
        for name in queues:
            if name not in drained and counts[name] >= args.messages:
                drained[name] = minutes
        row = [
            aws_on_demand(minutes),
            gauge(daemon, "esm_invoke_concurrency_limit", "on-demand"),
            handler_module.in_flight["on-demand"],
            aws_provisioned(minutes, args.min_pollers, args.max_pollers),
            gauge(daemon, "esm_invoke_concurrency_limit", "provisioned"),
            handler_module.in_flight["provisioned"],
            gauge(daemon, "esm_pollers", "provisioned", kind="current"),
        ]
        for name, i in (("on-demand", 1), ("provisioned", 4)):
            if name not in reached and row[i] >= marks[name]:
                reached[name] = minutes
        back = all(row[i] == floors[n] for i, n in ((1, "on-demand"), (4, "provisioned")))
        end = (len(drained) == 2 and back) or minutes > args.timeout_minutes
        if minutes >= next_row or end:
            next_row += 0.25
            widths = [max(8, len(h) + 2) for h in header]
            cells = "".join(f"{v:>{w}.0f}" for v, w in zip(row, widths, strict=True))
            print(f"{minutes:11.2f}{cells}", flush=True)
        if end:
            break
        await asyncio.sleep(args.minute / 40)
    daemon.request_stop()
    await task
    floor = args.min_pollers * INVOKES_PER_POLLER
    aws_reach = {
        "on-demand": (marks["on-demand"] - ON_DEMAND_START) / ON_DEMAND_PER_MINUTE,
        "provisioned": (marks["provisioned"] - floor) / PROVISIONED_PER_MINUTE,
    }
    for name in queues:
        when = f"at {drained[name]:.2f} AWS minutes" if name in drained else "not drained"
        got = f"{reached[name]:.2f}" if name in reached else "never"
        print(
            f"{name}: {marks[name]:.0f} concurrent allowed at {got} AWS minutes "
            f"(AWS: {aws_reach[name]:.2f}); {counts[name]} of {args.messages} delivered, {when}"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=5000, help="the burst, on each queue")
    p.add_argument("--minute", type=float, default=10.0, help="seconds standing for a minute")
    p.add_argument("--handler-seconds", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--min-pollers", type=int, default=2)
    p.add_argument("--max-pollers", type=int, default=100)
    p.add_argument("--timeout-minutes", type=float, default=8.0)
    args = p.parse_args()
    configure_logging("WARNING")
    run_async(main(args))


if __name__ == "__main__":
    cli()
