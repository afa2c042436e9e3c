"""The ``lambda`` target: the Lambda Invoke API (RequestResponse) through aiobotocore.

FunctionName may be a name, an ARN or a qualified ARN/alias; ``endpoint_url`` (per function,
else the ``aws`` section's) points it at any Lambda-compatible endpoint, such as the Lambda
Runtime Interface Emulator. FunctionError (Handled/Unhandled) is a function error, and so is
a body that is exactly Lambda's error shape, since the emulator drops the FunctionError header
(see :func:`service.targets.error_in_body`); TooManyRequestsException is throttling, backed off
without counting as a failure.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from service.config import MAX_PAYLOAD_BYTES, FunctionConfig
from service.targets import InvokeResult, error_in_body

_THROTTLED = {"TooManyRequestsException", "EC2ThrottledException", "ThrottlingException"}


class LambdaTarget:
    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        **_: Any,
    ) -> None:
        assert config.lambda_ is not None
        self.name = name
        self._function = config.lambda_
        self._region = region
        self._endpoint = config.endpoint_url or endpoint_url
        # botocore's own retries would hide throttling from the Invoker's backoff
        self._config = AioConfig(
            read_timeout=config.timeout_seconds + 5,
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=100,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def _lambda(self) -> Any:
        if self._client is None:
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "lambda",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    config=self._config,
                )
            )
        return self._client

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        payload = orjson.dumps(event)
        if len(payload) > MAX_PAYLOAD_BYTES:
            return InvokeResult(
                {
                    "errorMessage": f"request of {len(payload)} bytes is over "
                    "the 6 MB invocation limit"
                },
                "RequestTooLarge",
            )
        client = await self._lambda()
        try:
            resp = await client.invoke(
                FunctionName=self._function, InvocationType="RequestResponse", Payload=payload
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _THROTTLED:
                return InvokeResult({"errorMessage": str(exc)}, throttled=True)
            return InvokeResult({"errorMessage": str(exc), "errorType": code}, code or "Error")
        async with resp["Payload"] as stream:
            body = await stream.read()
        try:
            result = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            result = body.decode("utf-8", "replace")
        return InvokeResult(result, resp.get("FunctionError") or error_in_body(result))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
