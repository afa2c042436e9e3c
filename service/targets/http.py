"""The ``http`` target: POST the event JSON to a URL; the response body is the return value.

This is also how esmd calls a Lambda Runtime Interface Emulator or any function runtime that
speaks HTTP. A non-2xx status or an ``X-Amz-Function-Error`` header is a function error, and
so is a 2xx body that is exactly Lambda's error shape (the emulator drops the header: see
:func:`service.targets.error_in_body`); 429 is throttling, retried without counting as a
failure.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from service.config import FunctionConfig
from service.targets import InvokeResult, error_in_body

_JSON = {"Content-Type": "application/json"}


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


class HttpTarget:
    def __init__(self, name: str, config: FunctionConfig, **_: Any) -> None:
        assert config.url is not None
        self.name = name
        self._url = config.url
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession must be made inside the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=0)
            )
        return self._session

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        body = orjson.dumps(event)
        try:
            async with self._client().post(self._url, data=body, headers=_JSON) as resp:
                payload = _decode(await resp.read())
                if resp.status == 429:
                    return InvokeResult(payload, throttled=True)
                error = resp.headers.get("X-Amz-Function-Error")
                if error is None:
                    ok = 200 <= resp.status < 300
                    error = error_in_body(payload) if ok else f"HTTP {resp.status}"
                return InvokeResult(payload, error)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The endpoint did not answer: a failed invocation, retried like a function error.
            return InvokeResult({"errorMessage": str(exc) or type(exc).__name__}, "Unreachable")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
