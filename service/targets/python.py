"""The ``python`` target: an in-process handler ``module:function`` taking ``(event, context)``.

Existing Lambda handlers run unchanged: they get the event dict and a context object with the
attributes of Lambda's. A coroutine function is awaited on the loop; a plain function runs in
a worker thread, as a blocking handler (requests, time.sleep) would otherwise stall every
mapping, and one call at a time: Lambda runs one invocation per execution environment, so
handlers keep per-invocation state in module globals (Powertools' module-level
``BatchProcessor`` is the documented pattern), which concurrent threads would mix up. For
concurrent invocations in one process, write the handler as a coroutine function (or use an
http or lambda target). An exception is an Unhandled function error with Lambda's error body.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.arns import lambda_function_arn
from service.config import FunctionConfig
from service.targets import InvokeResult


@dataclass
class LambdaContext:
    """The attributes and method of Lambda's Python context object."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    deadline: float  # time.monotonic() at which the invocation times out
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def load_handler(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function may be dotted, e.g. ``mod:Class.method``)."""
    module_name, _, attr_path = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{spec} is not callable")
    return obj  # type: ignore[no-any-return]


def error_body(exc: BaseException, request_id: str) -> dict[str, Any]:
    """Lambda's body for an unhandled exception."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


class PythonTarget:
    def __init__(
        self,
        name: str,
        config: FunctionConfig,
        *,
        region: str = "us-east-1",
        function_arn: str | None = None,
        **_: Any,
    ) -> None:
        """``function_arn``: the context's invoked_function_arn (EsmdConfig.function_arn);
        by default one in the region under esmd's default account."""
        assert config.python is not None
        self.name = name
        self._handler = load_handler(config.python)
        self._is_async = inspect.iscoroutinefunction(self._handler)
        self._timeout = config.timeout_seconds
        self._arn = function_arn or lambda_function_arn(name, region)
        #: a plain function runs one call at a time, as in one execution environment
        self._one_at_a_time = asyncio.Lock()

    async def invoke(self, event: dict[str, Any]) -> InvokeResult:
        context = LambdaContext(
            function_name=self.name,
            invoked_function_arn=self._arn,
            memory_limit_in_mb=128,
            deadline=time.monotonic() + self._timeout,
            log_group_name=f"/aws/lambda/{self.name}",
        )
        try:
            if self._is_async:
                async with asyncio.timeout(self._timeout):
                    payload = await self._handler(event, context)
            else:
                async with self._one_at_a_time, asyncio.timeout(self._timeout):
                    context.deadline = time.monotonic() + self._timeout  # from its turn
                    payload = await asyncio.to_thread(self._handler, event, context)
        except TimeoutError as exc:
            return InvokeResult(error_body(exc, context.aws_request_id), "Unhandled")
        except Exception as exc:
            return InvokeResult(error_body(exc, context.aws_request_id), "Unhandled")
        return InvokeResult(payload)

    async def close(self) -> None:
        return None
