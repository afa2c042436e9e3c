"""A Lambda handler run by the real runtime (awslambdaric) under the Runtime Interface
Emulator; it appends each record's offset to the file named by $ESMD_TEST_OUT."""

from __future__ import annotations

import json
import os
from typing import Any


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    offsets = [r["offset"] for records in event["records"].values() for r in records]
    with open(os.environ["ESMD_TEST_OUT"], "a") as out:
        out.write(json.dumps({"offsets": offsets, "function": context.function_name}) + "\n")
    return {"processed": len(offsets)}
