"""The compose example's function: a tiny HTTP target that esmd invokes.

It answers every POST with 200 and a JSON body, and logs one line per invocation with the
number of records in the event (Kafka: ``records`` by topic-partition; SQS, Kinesis and
DynamoDB Streams: ``Records``). GET answers 200 too, for health checks. Standard library only,
so it runs on a bare python:3.11-slim image.
"""

from __future__ import annotations

import json
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

_lock = Lock()
_totals = {"invocations": 0, "records": 0}


def count_records(event: Any) -> int:
    """How many records an ESM event carries, whatever its source."""
    if not isinstance(event, dict):
        return 0
    records = event.get("records")
    if isinstance(records, dict):  # Kafka / MSK: {"topic-partition": [record, ...]}
        return sum(len(batch) for batch in records.values() if isinstance(batch, list))
    records = event.get("Records")
    return len(records) if isinstance(records, list) else 0


class Handler(BaseHTTPRequestHandler):
    server_version = "esmd-example-target"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            self._reply(400, {"error": "the body is not JSON"})
            return
        count = count_records(event)
        with _lock:
            _totals["invocations"] += 1
            _totals["records"] += count
            line = {
                "path": self.path,
                "records": count,
                "invocations": _totals["invocations"],
                "records_total": _totals["records"],
            }
        print(json.dumps(line), flush=True)
        self._reply(200, {"processed": count})

    def do_GET(self) -> None:
        with _lock:
            self._reply(200, dict(_totals))

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one JSON line per invocation is enough


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # PID 1 in a container ignores SIGTERM unless it is handled


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    host = os.environ.get("TARGET_HOST", "0.0.0.0")
    port = int(os.environ.get("TARGET_PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    print(json.dumps({"listening": f"{host}:{server.server_address[1]}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
