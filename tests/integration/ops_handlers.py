"""Handlers for the operator tools' tests."""

from __future__ import annotations

import base64
import json
import os
from typing import Any


def fails_on_poison(event: dict[str, Any], context: Any) -> None:
    """A Kafka handler that fails any batch holding a ``poison`` record while the file named
    by ESMD_TEST_FLAG exists (the bug), and appends each record it took to ESMD_TEST_OUT."""
    records = [r for rs in event["records"].values() for r in rs]
    values = [json.loads(base64.b64decode(r["value"])) for r in records]
    if os.path.exists(os.environ["ESMD_TEST_FLAG"]) and any(v.get("poison") for v in values):
        raise RuntimeError("poison record")
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        for r, v in zip(records, values, strict=True):
            out.write(json.dumps({"offset": r["offset"], "seq": v["seq"]}) + "\n")


def ddb_to_file(event: dict[str, Any], context: Any) -> None:
    """Appends each DynamoDB record's key and blob to ESMD_TEST_OUT."""
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        for r in event["Records"]:
            image = r["dynamodb"]["NewImage"]
            out.write(json.dumps({"pk": image["pk"]["S"], "blob": image["blob"]}) + "\n")
