"""Handlers for the dashboard test: slow enough that invocations overlap scrapes (invoke
concurrency and offset lag are seen above 0), and failing the records marked ``fail``."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

#: seconds each invocation takes: with 1 s scrapes, invocations in flight and a backlog of
#: records are caught by the scrapes, so their gauges show more than 0
KAFKA_SECONDS = 0.1
SQS_SECONDS = 0.2
STREAM_SECONDS = 0.05


async def kafka(event: dict[str, Any], context: Any) -> None:
    """Fails the whole batch when one of its records is marked ``fail``."""
    await asyncio.sleep(KAFKA_SECONDS)
    for records in event["records"].values():
        for r in records:
            if json.loads(base64.b64decode(r["value"])).get("fail"):
                raise ValueError(f"record {r['partition']}/{r['offset']} is marked fail")


async def sqs(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """ReportBatchItemFailures: only the messages marked ``fail`` fail."""
    await asyncio.sleep(SQS_SECONDS)
    failed = [
        {"itemIdentifier": r["messageId"]}
        for r in event["Records"]
        if json.loads(r["body"]).get("fail")
    ]
    return {"batchItemFailures": failed}


async def stream(event: dict[str, Any], context: Any) -> None:
    """Kinesis: fails the batch when one of its records is marked ``fail``."""
    await asyncio.sleep(STREAM_SECONDS)
    for r in event["Records"]:
        if json.loads(base64.b64decode(r["kinesis"]["data"])).get("fail"):
            raise ValueError(f"record {r['kinesis']['sequenceNumber']} is marked fail")
