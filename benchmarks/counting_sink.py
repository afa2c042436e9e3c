"""A fast HTTP sink for the peer benchmark: counts the records each POST carries.

``POST /<name>`` takes either a Lambda Kafka event (esmd's http target) or a JSON array of
benchmark records (Benthos's ``archive: json_array`` batch), and answers 200 with no body at
once. It counts without parsing (parsing would make the sink the slowest of the three
processes): each Lambda Kafka record has one ``"offset":`` key (its value is base64, its
headers empty), each benchmark record one ``"id":`` key.

``GET /<name>`` returns ``{"count": N, "log": [[t, cumulative], ...]}``, ``t`` from
``time.monotonic()``, so a benchmark can time any stretch of a run at the sink.

    python -m benchmarks.counting_sink PORT
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict

import orjson
from aiohttp import web

from service.cli import run_async


def records_in(body: bytes) -> int:
    """Records in a Lambda Kafka event (a JSON object) or a JSON array of benchmark records."""
    marker = b'"offset":' if body.lstrip()[:1] == b"{" else b'"id":'
    return body.count(marker)


class Sink:
    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)
        self.logs: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)

    async def post(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        count = records_in(await request.read())
        self.counts[name] += count
        self.logs[name].append((time.monotonic(), self.counts[name]))
        return web.Response()

    async def get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = {"count": self.counts[name], "log": self.logs[name]}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


async def serve(port: int) -> None:
    sink = Sink()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{name}", sink.post)
    app.router.add_get("/{name}", sink.get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until the benchmark terminates the process


if __name__ == "__main__":
    run_async(serve(int(sys.argv[1])))
