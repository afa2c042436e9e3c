"""A recording HTTP function for soak and chaos runs: the ``url`` target of their mappings.

It lives in the process that checks the run, not in the daemon under test, so it outlives a
SIGKILLed ``esmd run`` and remembers every record that was delivered. Each record carries a
JSON ``id``; an invocation fails as a whole (``X-Amz-Function-Error: Unhandled``) with
probability ``failure_rate``, drawn from a seeded random generator so a run can be repeated.
A record counts as delivered only when its invocation succeeded, so the ids delivered, with
those in the OnFailure destination (or the SQS dead-letter queue) and those filtered out,
must cover every record produced, whatever happened to the daemon in between.

    sink = Sink(failure_rate=0.1, seed=7)
    url = await sink.start()           # POST {url}/<function> per invocation
    ...
    sink.delivered["kafka"]            # Counter of ids delivered by successful invocations
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

_FAILED = {"X-Amz-Function-Error": "Unhandled"}


def record_ids(event: dict[str, Any]) -> Iterator[int]:
    """The ``id`` of each record of a Lambda event from Kafka, SQS or Kinesis."""
    if "records" in event:  # Kafka: {"<topic>-<partition>": [records]}
        for batch in event["records"].values():
            for record in batch:
                yield int(orjson.loads(base64.b64decode(record["value"]))["id"])
        return
    for record in event["Records"]:
        if "body" in record:  # SQS
            yield int(orjson.loads(record["body"])["id"])
        else:  # Kinesis
            yield int(orjson.loads(base64.b64decode(record["kinesis"]["data"]))["id"])


class Sink:
    """Counts delivered ids per function (the last path segment) and fails at a rate."""

    def __init__(self, failure_rate: float = 0.0, seed: int = 0, delay: float = 0.0) -> None:
        self.failure_rate = failure_rate
        #: seconds each invocation takes: keeps batches in flight, where a kill hurts most
        self.delay = delay
        self.delivered: dict[str, Counter[int]] = {}
        self.invocations: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        #: successes by the URL's optional last segment: a run that restarts a daemon gives
        #: each start its own (``<base>/<function>/<n>``), so a request that a killed daemon
        #: sent, read by the sink only later, never counts for the next one
        self.by_generation: Counter[str] = Counter()
        self.url: str | None = None
        self._random = random.Random(seed)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve; returns the base URL (a function's URL is ``<base>/<function>``)."""
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/{function}", self._invoke)
        app.router.add_post("/{function}/{generation}", self._invoke)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def successes(self, function: str) -> int:
        """Records delivered by successful invocations, duplicates included."""
        return sum(self.delivered.get(function, Counter()).values())

    async def _invoke(self, request: web.Request) -> web.Response:
        function = request.match_info["function"]
        generation = request.match_info.get("generation", "")
        event = orjson.loads(await request.read())
        self.invocations[function] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._random.random() < self.failure_rate:
            self.failures[function] += 1
            body = {"errorMessage": "injected failure", "errorType": "SinkFailure"}
            return web.Response(body=orjson.dumps(body), headers=_FAILED)
        ids = list(record_ids(event))
        self.delivered.setdefault(function, Counter()).update(ids)
        self.by_generation[generation] += len(ids)
        return web.Response(body=b"null", content_type="application/json")
