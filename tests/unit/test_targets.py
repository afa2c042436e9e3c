"""Targets against real servers on 127.0.0.1: how each reads success, function errors,
throttling and service errors (the Invoke call failing before the function ran)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from service.config import FunctionConfig
from service.targets import InvokeResult, Target, make_target

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


_running: list[int] = []
_overlaps: list[int] = []


def global_state_handler(event: dict[str, Any], context: Any) -> None:
    """Keeps per-invocation state in a module global, as Lambda handlers may."""
    import time

    _running.append(1)
    if len(_running) > 1:
        _overlaps.append(len(_running))
    time.sleep(0.02)
    _running.pop()


async def test_a_plain_handler_runs_one_call_at_a_time() -> None:
    """As in one Lambda execution environment: module globals are not shared between
    concurrent invocations."""
    target = make_target("g", FunctionConfig(python=f"{__name__}:global_state_handler"))
    results = await asyncio.gather(*(target.invoke(EVENT) for _ in range(5)))
    assert all(r.ok for r in results)
    assert _overlaps == []


def test_function_config_needs_exactly_one_kind() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        FunctionConfig(python="a:b", url="http://x")
    with pytest.raises(ValueError, match="module:function"):
        FunctionConfig(python="nocolon")


async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 with these routes; yields its base URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def call(target: Target, event: dict[str, Any] = EVENT) -> InvokeResult:
    try:
        return await target.invoke(event)
    finally:
        await target.close()


# --- http -----------------------------------------------------------------------------------


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, list[Any]]]:
    """Answers as told by the request's ``mode`` query parameter."""
    seen: list[Any] = []

    async def invoke(request: web.Request) -> web.StreamResponse:
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
        if mode == "not-found":  # a Lambda-compatible Invoke endpoint answering for itself
            return web.json_response(
                {"Type": "User", "Message": "Function not found: arn:aws:lambda:...:f"},
                status=404,
                headers={"x-amzn-ErrorType": "ResourceNotFoundException:http://internal/"},
            )
        if mode == "500":
            return web.Response(status=500, text="oops")
        if mode.isdigit():
            return web.Response(status=int(mode), text="<html>bad gateway</html>")
        if mode == "slow":
            await asyncio.sleep(1)
            return web.json_response({})
        if mode == "drop":
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.1)
            return web.json_response({})
        raise AssertionError(f"unknown mode {mode}")

    async for base in serve([web.post("/invoke", invoke)]):
        yield f"{base}/invoke", seen


async def test_http_target_statuses(http_server: tuple[str, list[Any]]) -> None:
    url, seen = http_server

    async def mode(name: str) -> InvokeResult:
        return await call(make_target("f", FunctionConfig(url=f"{url}?mode={name}")))

    ok = await mode("ok")
    assert ok.ok and ok.payload == {"batchItemFailures": []}
    assert seen[0] == EVENT
    assert (await mode("fn-error")).function_error == "Unhandled"
    throttled = await mode("throttle")
    assert throttled.throttled and throttled.service_error is None
    r500 = await mode("500")  # the handler's own failure
    assert r500.function_error == "HTTP 500" and r500.payload == "oops"
    assert r500.service_error is None
    r400 = await mode("400")
    assert r400.function_error == "HTTP 400" and r400.service_error is None


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_http_gateway_statuses_are_service_errors(
    http_server: tuple[str, list[Any]], status: int
) -> None:
    url, _ = http_server
    result = await call(make_target("f", FunctionConfig(url=f"{url}?mode={status}")))
    assert result.service_error == f"HTTP {status}"
    assert result.function_error is None and not result.throttled and not result.ok


async def test_http_invoke_api_errors_are_read_like_the_lambda_targets(
    http_server: tuple[str, list[Any]],
) -> None:
    url, _ = http_server
    result = await call(make_target("f", FunctionConfig(url=f"{url}?mode=not-found")))
    assert result.service_error == "ResourceNotFoundException"
    assert result.function_error is None
    assert result.payload["errorMessage"].startswith("Function not found")


async def test_http_connection_refused_is_a_service_error() -> None:
    url = f"http://127.0.0.1:{closed_port()}/nothing"
    result = await call(make_target("f", FunctionConfig(url=url)))
    assert result.service_error == "ClientConnectorError"
    assert result.function_error is None and not result.throttled
    assert "Cannot connect" in result.payload["errorMessage"]


async def test_http_dropped_connection_is_a_service_error(
    http_server: tuple[str, list[Any]],
) -> None:
    url, _ = http_server
    result = await call(make_target("f", FunctionConfig(url=f"{url}?mode=drop")))
    assert result.service_error == "ServerDisconnectedError"


async def test_http_no_answer_in_time_is_the_function_timing_out(
    http_server: tuple[str, list[Any]],
) -> None:
    url, _ = http_server
    config = FunctionConfig(url=f"{url}?mode=slow", timeout_seconds=0.2)
    result = await call(make_target("f", config))
    assert result.function_error == "Unhandled" and result.service_error is None
    assert result.payload == {
        "errorMessage": "Task timed out after 0.20 seconds",
        "errorType": "Sandbox.Timedout",
    }


async def test_service_errors_are_logged_once_per_outage() -> None:
    state = {"status": 503}

    async def invoke(request: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="{}")

    async for base in serve([web.post("/invoke", invoke)]):
        with capture_logs() as logs:
            target = make_target("f", FunctionConfig(url=f"{base}/invoke"))
            for _ in range(3):
                assert (await target.invoke(EVENT)).service_error == "HTTP 503"
            state["status"] = 502
            assert (await target.invoke(EVENT)).service_error == "HTTP 502"
            state["status"] = 200
            assert (await target.invoke(EVENT)).ok
            await target.close()
    levels = [(e["log_level"], e.get("service_error")) for e in logs]
    assert levels == [
        ("warning", "HTTP 503"),
        ("debug", "HTTP 503"),
        ("debug", "HTTP 503"),
        ("warning", "HTTP 502"),
        ("info", None),
    ]
    assert logs[0]["event"] == "invoke failed before the function ran (service error)"
    assert logs[-1]["failed_calls"] == 1


# --- lambda: a real HTTP server answering with the Invoke API's REST shapes -----------------

#: FunctionName -> (status, x-amzn-ErrorType, body) the fake Lambda answers with
LAMBDA_ERRORS: dict[str, tuple[int, str | None, str]] = {
    "missing": (404, "ResourceNotFoundException", '{"Type":"User","Message":"Function not found"}'),
    "denied": (403, "AccessDeniedException", '{"Message":"not authorized to invoke"}'),
    "kms-denied": (502, "KMSAccessDeniedException", '{"Type":"User","Message":"KMS denied"}'),
    "kms-disabled": (502, "KMSDisabledException", '{"Type":"User","Message":"key disabled"}'),
    "kms-state": (502, "KMSInvalidStateException", '{"Message":"key pending deletion"}'),
    "kms-missing": (502, "KMSNotFoundException", '{"Message":"key not found"}'),
    "internal": (500, "ServiceException", '{"Type":"Service","Message":"internal error"}'),
    "ec2": (502, "EC2UnexpectedException", '{"Message":"EC2 client exception"}'),
    "eni": (502, "ENILimitReachedException", '{"Message":"ENI limit"}'),
    "busy": (409, "ResourceConflictException", '{"Message":"update in progress"}'),
    "gateway": (502, None, "<html>Bad Gateway</html>"),
}


@pytest.fixture
async def fake_lambda() -> AsyncIterator[tuple[str, list[tuple[str, Any]]]]:
    seen: list[tuple[str, Any]] = []

    async def invoke(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        seen.append((name, await request.json()))
        assert request.headers.get("X-Amz-Invocation-Type") == "RequestResponse"
        if name in LAMBDA_ERRORS:
            status, code, body = LAMBDA_ERRORS[name]
            headers = {"x-amzn-RequestId": "r-1"}
            if code is not None:
                headers["x-amzn-ErrorType"] = code
            return web.Response(status=status, text=body, headers=headers)
        if name == "throttled":
            return web.json_response(
                {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "message": "Rate"},
                status=429,
                headers={"x-amzn-ErrorType": "TooManyRequestsException"},
            )
        if name == "too-big":
            return web.json_response(
                {"message": "Request must be smaller than 6291456 bytes"},
                status=413,
                headers={"x-amzn-ErrorType": "RequestTooLargeException"},
            )
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if name == "raises":
            headers["X-Amz-Function-Error"] = "Unhandled"
            return web.json_response(
                {"errorMessage": "boom", "errorType": "ValueError"}, headers=headers
            )
        return web.json_response({"batchItemFailures": []}, headers=headers)

    async for base in serve([web.post("/2015-03-31/functions/{name}/invocations", invoke)]):
        yield base, seen


def lambda_target(endpoint: str, function: str) -> Target:
    return make_target("f", FunctionConfig(**{"lambda": function, "endpoint_url": endpoint}))


async def test_lambda_target_success_function_error_and_throttle(
    fake_lambda: tuple[str, list[tuple[str, Any]]],
) -> None:
    endpoint, seen = fake_lambda
    ok = await call(lambda_target(endpoint, "thumbs"))
    assert ok.ok and ok.payload == {"batchItemFailures": []}
    assert seen == [("thumbs", EVENT)]
    raised = await call(lambda_target(endpoint, "raises"))
    assert raised.function_error == "Unhandled" and raised.service_error is None
    throttled = await call(lambda_target(endpoint, "throttled"))
    assert throttled.throttled and throttled.service_error is None
    too_big = await call(lambda_target(endpoint, "too-big"))  # the batch's fault: bisect it
    assert too_big.function_error == "RequestTooLargeException" and too_big.service_error is None


@pytest.mark.parametrize("function", sorted(LAMBDA_ERRORS))
async def test_lambda_invoke_api_errors_are_service_errors(
    fake_lambda: tuple[str, list[tuple[str, Any]]], function: str
) -> None:
    endpoint, _ = fake_lambda
    result = await call(lambda_target(endpoint, function))
    status, code, _ = LAMBDA_ERRORS[function]
    assert result.service_error == (code or f"HTTP {status}")
    assert result.function_error is None and not result.throttled and not result.ok
    assert result.payload["errorType"] == result.service_error


async def test_lambda_connection_refused_is_a_service_error() -> None:
    result = await call(lambda_target(f"http://127.0.0.1:{closed_port()}", "thumbs"))
    assert result.service_error == "EndpointConnectionError"
    assert result.function_error is None and not result.throttled


async def test_python_target_names_the_configured_function_arn() -> None:
    arn = "arn:aws:lambda:eu-west-1:111122223333:function:g"
    target = make_target("g", FunctionConfig(python=f"{__name__}:context_arn"), function_arn=arn)
    assert (await call(target)).payload == arn
    default = make_target("g", FunctionConfig(python=f"{__name__}:context_arn"), region="eu-west-1")
    assert (await call(default)).payload == "arn:aws:lambda:eu-west-1:000000000000:function:g"


def context_arn(event: dict[str, Any], context: Any) -> str:
    return str(context.invoked_function_arn)
