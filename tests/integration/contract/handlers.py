"""The contract suite's targets: a python handler, and an HTTP endpoint that first refuses
as the Invoke API does (throttling, or an error of the call itself).

Both record every invocation they receive, decoded by the source's adapter into ``Rec`` s
(the record's test number ``n``, the itemIdentifier a partial batch response names it by, its
position in the source, and SQS's receive count), and answer what the test's *behaviour* says:
a return value (None, a batchItemFailures response) or an exception (a function error).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Rec:
    """One record as the target received it."""

    n: int  # the number the test gave it when producing
    ident: Any  # its itemIdentifier in a ReportBatchItemFailures response
    pos: Hashable  # its position: Kafka offset, sequence number, SQS message id
    receive_count: int = 0  # SQS ApproximateReceiveCount; 0 for other sources


Decode = Callable[[dict[str, Any]], list[Rec]]
#: (the records of this invocation, the invocation's index for this function) -> response;
#: raising is a function error
Behaviour = Callable[[list[Rec], int], Any]

_plans: dict[str, tuple[Decode, Behaviour]] = {}
#: per function name: the records of every invocation, in the order they came
calls: dict[str, list[list[Rec]]] = defaultdict(list)


class FunctionError(Exception):
    """What a failing handler raises (an Unhandled function error)."""


def plan(function: str, decode: Decode, behaviour: Behaviour) -> None:
    _plans[function] = (decode, behaviour)
    calls.pop(function, None)


def forget(function: str) -> None:
    _plans.pop(function, None)
    calls.pop(function, None)


async def handle(event: dict[str, Any], context: Any) -> Any:
    """The python target (a coroutine, so it runs on the daemon's loop)."""
    decode, behaviour = _plans[context.function_name]
    recs = decode(event)
    mine = calls[context.function_name]
    mine.append(recs)
    out = behaviour(recs, len(mine) - 1)
    return await out if inspect.isawaitable(out) else out


def succeed(recs: list[Rec], index: int) -> None:
    return None


def fail(recs: list[Rec], index: int) -> None:
    raise FunctionError(f"invocation {index} fails")


def failures(*idents: Any) -> dict[str, Any]:
    """A ReportBatchItemFailures response naming these itemIdentifiers."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in idents]}


#: the Invoke API's path (the lambda target with endpoint_url); the url target posts to "/"
INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"


class FakeFunction:
    """An endpoint for the ``url`` target ("/") and the ``lambda`` target (the Invoke API's
    path) that refuses its first requests as the Invoke API does, one ``(HTTP status, error
    type)`` each (429 TooManyRequestsException: throttling; 404 ResourceNotFoundException,
    500 ServiceException...: the call failed, the function did not run), then records and
    succeeds."""

    def __init__(self, function: str, decode: Decode, refusals: list[tuple[int, str]]) -> None:
        self.function = function
        self._decode = decode
        self._refusals = list(refusals)
        self.refused_at: list[float] = []
        self.first_success_at: float | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _invoke(self, request: web.Request) -> web.Response:
        event = orjson.loads(await request.read())
        if self._refusals:
            status, error = self._refusals.pop(0)
            self.refused_at.append(time.monotonic())
            return web.json_response(
                {"Type": "User", "message": f"{error} (contract test)"},
                status=status,
                headers={"x-amzn-ErrorType": error},
            )
        if self.first_success_at is None:
            self.first_success_at = time.monotonic()
        calls[self.function].append(self._decode(event))
        return web.json_response(None)

    async def __aenter__(self) -> FakeFunction:
        app = web.Application()
        app.router.add_post("/", self._invoke)
        app.router.add_post(INVOKE_PATH, self._invoke)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Gate:
    """Holds an invocation until the test has looked at the source (with a deadline, so a
    test that fails before opening it does not hang the daemon's shutdown)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self.reached = asyncio.Event()

    async def wait(self, seconds: float = 20) -> None:
        self.reached.set()
        async with asyncio.timeout(seconds):
            await self._open.wait()

    def open(self) -> None:
        self._open.set()
