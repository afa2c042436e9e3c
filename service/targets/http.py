"""The ``http`` target: POST the event JSON to a URL; the response body is the return value.

This is also how esmd calls a Lambda Runtime Interface Emulator or any function runtime that
speaks HTTP. How a response is read:

- 2xx: the return value, unless the body is exactly Lambda's error shape (the emulator drops
  the FunctionError header: see :func:`service.targets.error_in_body`);
- 429: throttling, retried without counting as a failure;
- an ``X-Amz-Function-Error`` header, whatever the status: a function error;
- an ``x-amzn-ErrorType`` header (a Lambda-compatible Invoke endpoint answering for itself,
  e.g. ResourceNotFoundException): read as the lambda target reads it
  (:func:`service.targets.invoke_api_error`);
- 502, 503 and 504: a gateway or proxy in front of the function saying the function is not
  there (bad gateway, unavailable, gateway timeout): a ``service_error`` (``HTTP 503``), since
  the function did not run;
- any other status (a 500 with the handler's traceback, a 4xx the handler chose): a function
  error ``HTTP <status>``, with the body as its payload.

Failures to talk to the endpoint: not connecting (refused, DNS, a connect timeout) or the
connection dropping before an answer are service errors named by the exception's type
(``ClientConnectorError``, ``ServerDisconnectedError``, ...); no answer within
``timeout_seconds`` is the function timing out, a function error as Lambda's own timeout is
(``Unhandled``, errorType ``Sandbox.Timedout``).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from service.config import FunctionConfig
from service.targets import (
    InvokeResult,
    ServiceErrorLog,
    error_in_body,
    invoke_api_error,
    unreachable,
)

_JSON = {"Content-Type": "application/json"}
#: statuses a gateway or proxy gives when the function behind it is not reachable
GATEWAY_STATUSES = frozenset({502, 503, 504})


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _message(payload: Any) -> str:
    if isinstance(payload, dict):
        for key in ("errorMessage", "Message", "message"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return str(payload)[:1000] if payload is not None else ""


def read_response(status: int, headers: Any, payload: Any) -> InvokeResult:
    """An HTTP answer as an InvokeResult (see the module's docstring)."""
    if status == 429:
        return InvokeResult(payload, throttled=True)
    function_error = headers.get("X-Amz-Function-Error")
    if function_error is not None:
        return InvokeResult(payload, function_error)
    api_error = headers.get("x-amzn-ErrorType")
    if api_error is not None and status >= 400:
        return invoke_api_error(api_error, _message(payload), status)
    if 200 <= status < 300:
        return InvokeResult(payload, error_in_body(payload))
    if status in GATEWAY_STATUSES:
        return InvokeResult(payload, service_error=f"HTTP {status}")
    return InvokeResult(payload, f"HTTP {status}")


class HttpTarget:
    def __init__(self, name: str, config: FunctionConfig, **_: Any) -> None:
        assert config.url is not None
        self.name = name
        self._url = config.url
        self._timeout_seconds = config.timeout_seconds
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None
        self._service_errors = ServiceErrorLog(name, "http")

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0)
            )
        return self._session

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        return self._service_errors.seen(await self._post(orjson.dumps(event)))

    async def _post(self, body: bytes) -> InvokeResult:
        try:
            async with self._client().post(self._url, data=body, headers=_JSON) as resp:
                return read_response(resp.status, resp.headers, _decode(await resp.read()))
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return unreachable(exc)  # refused, DNS, unroutable, connect timeout
        except aiohttp.ServerDisconnectedError as exc:
            # often a kept-alive connection the server had closed: it never saw the request
            return unreachable(exc)
        except TimeoutError:
            message = f"Task timed out after {self._timeout_seconds:.2f} seconds"
            return InvokeResult(
                {"errorMessage": message, "errorType": "Sandbox.Timedout"}, "Unhandled"
            )
        except aiohttp.ClientError as exc:
            return unreachable(exc)  # the connection broke while reading the answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
