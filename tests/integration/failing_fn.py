"""A Lambda handler run by awslambdaric under the emulator that raises when a batch holds a
record whose JSON value has ``"fail": true``; it appends the offsets of every batch it
completes to the file named by $ESMD_TEST_OUT."""

from __future__ import annotations

import base64
import json
import os
from typing import Any


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = [r for batch in event["records"].values() for r in batch]
    bad = [r["offset"] for r in records if json.loads(base64.b64decode(r["value"])).get("fail")]
    if bad:
        raise ValueError(f"refusing offsets {bad}")
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        out.write(json.dumps({"offsets": [r["offset"] for r in records]}) + "\n")
    return {"processed": len(records)}
