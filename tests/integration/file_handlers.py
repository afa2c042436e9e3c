"""Handlers for tests that run esmd as a separate process: they append what they receive to
the file named by ESMD_TEST_OUT, one JSON line per record, with the worker's pid."""

from __future__ import annotations

import json
import os
from typing import Any


def kafka_records(event: dict[str, Any], context: Any) -> None:
    lines = [
        json.dumps({"partition": r["partition"], "offset": r["offset"], "pid": os.getpid()})
        for records in event["records"].values()
        for r in records
    ]
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        out.write("\n".join(lines) + "\n")


def slow_kafka_records(event: dict[str, Any], context: Any) -> None:
    """kafka_records after a pause of ESMD_TEST_SLEEP seconds: a run that lasts a while."""
    import time

    time.sleep(float(os.environ.get("ESMD_TEST_SLEEP", "0.1")))
    kafka_records(event, context)


def sqs_bodies(event: dict[str, Any], context: Any) -> None:
    """Each SQS record's body and the batch size, with the worker's pid."""
    size = len(event["Records"])
    lines = [
        json.dumps({"body": json.loads(r["body"]), "batch": size, "pid": os.getpid()})
        for r in event["Records"]
    ]
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        out.write("\n".join(lines) + "\n")
