"""Lambda-style handlers, written exactly as they would be for AWS Lambda."""

from __future__ import annotations

import base64
import json
from typing import Any

#: totals kept by ``handle``; the demo prints them
seen = {"records": 0, "amount": 0.0}


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A Kafka handler: decode each record's value and add up the order amounts."""
    count = 0
    for records in event["records"].values():
        for record in records:
            order = json.loads(base64.b64decode(record["value"]))
            seen["amount"] += float(order.get("amount", 0))
            count += 1
    seen["records"] += count
    return {"processed": count}
