"""SQS handlers for the integration tests, written as they would be for AWS Lambda."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

#: per function name: bodies in the order the handler saw them, and the raw events
seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
events: dict[str, list[dict[str, Any]]] = defaultdict(list)
_lock = threading.Lock()


def collect(event: dict[str, Any], context: Any) -> None:
    with _lock:
        events[context.function_name].append(event)
        seen[context.function_name].extend(json.loads(r["body"]) for r in event["Records"])


async def slow(event: dict[str, Any], context: Any) -> None:
    """Runs well past the queue's visibility timeout."""
    await asyncio.sleep(5)
    collect(event, context)


#: per function name: batches in flight now and the most at once (``paced``)
in_flight: dict[str, int] = defaultdict(int)
most_in_flight: dict[str, int] = defaultdict(int)
PACE_SECONDS = 0.5


async def paced(event: dict[str, Any], context: Any) -> None:
    """Takes PACE_SECONDS a batch, so concurrency, not the handler, limits the rate."""
    name = context.function_name
    in_flight[name] += 1
    most_in_flight[name] = max(most_in_flight[name], in_flight[name])
    try:
        await asyncio.sleep(PACE_SECONDS)
        collect(event, context)
    finally:
        in_flight[name] -= 1


processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    first_time = record.attributes.approximate_receive_count == "1"
    if body["seq"] == 7 or (body["seq"] % 10 == 0 and first_time):
        raise ValueError(f"cannot process {body['seq']} yet")
    with _lock:
        seen["powertools"].append(body)


def powertools_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A Powertools BatchProcessor handler, unchanged from what runs on Lambda."""
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
