"""The ``lambda`` target: the Lambda Invoke API (RequestResponse) through aiobotocore.

FunctionName may be a name, an ARN or a qualified ARN/alias; ``endpoint_url`` (per function,
else the ``aws`` section's) points it at any Lambda-compatible endpoint, such as the Lambda
Runtime Interface Emulator. What comes back:

- FunctionError (Handled/Unhandled) is a function error, and so is a body that is exactly
  Lambda's error shape, since the emulator drops the FunctionError header (see
  :func:`service.targets.error_in_body`);
- TooManyRequestsException (and EC2 throttling) is throttling, backed off without counting
  as a failure;
- every other error of the Invoke call itself (ResourceNotFoundException,
  AccessDeniedException, KMS*, EC2*/ENI*, ServiceException, other 5xx) and every failure to
  talk to the endpoint (refused, DNS, timeouts, credentials) is a ``service_error``: the
  function did not run. Payload errors (RequestTooLargeException, ...) stay function errors,
  since retrying the same batch cannot help (:func:`service.targets.invoke_api_error`).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from service.aws import NO_RETRIES, LazyClient
from service.config import MAX_PAYLOAD_BYTES, AwsConfig, FunctionConfig
from service.targets import (
    InvokeResult,
    ServiceErrorLog,
    error_in_body,
    invoke_api_error,
    unreachable,
)


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
        # botocore's own retries would hide throttling from the Invoker's backoff
        self._client = LazyClient(
            AwsConfig(region=region),
            "lambda",
            100,
            endpoint_url=config.endpoint_url or endpoint_url,
            read_timeout=config.timeout_seconds + 5,
            retries=NO_RETRIES,
        )
        self._service_errors = ServiceErrorLog(name, "lambda")

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
        return self._service_errors.seen(await self._call(payload))

    async def _call(self, payload: bytes) -> InvokeResult:
        try:
            client = await self._client.get()
            resp = await client.invoke(
                FunctionName=self._function, InvocationType="RequestResponse", Payload=payload
            )
            async with resp["Payload"] as stream:
                body = await stream.read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return invoke_api_error(
                str(error.get("Code", "")), str(error.get("Message") or exc), status
            )
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            # refused, DNS, connect or read timeouts, a dropped connection, no credentials
            return unreachable(exc)
        try:
            result = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            result = body.decode("utf-8", "replace")
        return InvokeResult(result, resp.get("FunctionError") or error_in_body(result))

    async def close(self) -> None:
        await self._client.close()
