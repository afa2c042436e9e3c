from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from service.config import FunctionConfig
from service.targets import make_target

EVENT = {"records": {"t-0": [{"offset": 1}]}}


def sync_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "n": len(event["records"]),
        "fn": context.function_name,
        "left": context.get_remaining_time_in_millis() > 0,
    }


async def async_handler(event: dict[str, Any], context: Any) -> str:
    await asyncio.sleep(0)
    return "async-ok"


def failing_handler(event: dict[str, Any], context: Any) -> None:
    raise ValueError("bad record")


async def test_python_target_sync_async_and_error() -> None:
    sync = make_target("f", FunctionConfig(python=f"{__name__}:sync_handler"))
    result = await sync.invoke(EVENT)
    assert result.ok and result.payload == {"n": 1, "fn": "f", "left": True}
    result = await make_target("g", FunctionConfig(python=f"{__name__}:async_handler")).invoke(
        EVENT
    )
    assert result.payload == "async-ok"
    result = await make_target("h", FunctionConfig(python=f"{__name__}:failing_handler")).invoke(
        EVENT
    )
    assert result.function_error == "Unhandled"
    assert result.payload["errorType"] == "ValueError"
    assert result.payload["errorMessage"] == "bad record"


def test_function_config_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FunctionConfig(python="a:b", url="http://x")
    with pytest.raises(ValueError, match="module:function"):
        FunctionConfig(python="nocolon")


@pytest.fixture
async def http_server() -> Any:
    """A real HTTP server on 127.0.0.1 that answers as told by the request path's query."""
    seen: list[Any] = []

    async def invoke(request: web.Request) -> web.Response:
        seen.append(await request.json())
        mode = request.query.get("mode", "ok")
        if mode == "ok":
            return web.json_response({"batchItemFailures": []})
        if mode == "fn-error":
            return web.json_response(
                {"errorMessage": "x"}, headers={"X-Amz-Function-Error": "Unhandled"}
            )
        if mode == "throttle":
            return web.json_response({"message": "Rate exceeded"}, status=429)
        return web.Response(status=500, text="oops")

    app = web.Application()
    app.router.add_post("/invoke", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/invoke", seen
    await runner.cleanup()


async def test_http_target_statuses(http_server: Any) -> None:
    url, seen = http_server

    async def call(mode: str) -> Any:
        target = make_target("f", FunctionConfig(url=f"{url}?mode={mode}"))
        try:
            return await target.invoke(EVENT)
        finally:
            await target.close()

    ok = await call("ok")
    assert ok.ok and ok.payload == {"batchItemFailures": []}
    assert seen[0] == EVENT
    assert (await call("fn-error")).function_error == "Unhandled"
    assert (await call("throttle")).throttled
    r500 = await call("500")
    assert r500.function_error == "HTTP 500" and r500.payload == "oops"


async def test_http_target_unreachable_is_a_failure() -> None:
    target = make_target("f", FunctionConfig(url="http://127.0.0.1:9/nothing"))
    result = await target.invoke(EVENT)
    await target.close()
    assert result.function_error == "Unreachable"
