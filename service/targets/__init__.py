"""Targets: what a mapping invokes. One module per kind, chosen through ``TARGETS``.

Every target takes the event as a dict (the exact JSON Lambda would deliver) and returns an
:class:`InvokeResult`; serialising is the target's business, so the in-process python target
never pays for JSON at all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from service.config import FunctionConfig


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """What came back from one invocation.

    ``function_error`` is Lambda's FunctionError ("Handled"/"Unhandled") or our own label for
    an HTTP failure; ``throttled`` means the call never ran and is retried without counting as
    a function error. ``service_error`` names a failure of the Invoke call itself rather than
    of the function (ResourceNotFound, AccessDenied, KMS*, a 5xx, a refused connection): AWS
    retries those with backoff until the records expire, never counting them as retries.
    """

    payload: Any = None
    function_error: str | None = None
    throttled: bool = False
    service_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.function_error is None and not self.throttled and self.service_error is None


class Target(Protocol):
    name: str

    async def invoke(self, event: dict[str, Any]) -> InvokeResult: ...

    async def close(self) -> None: ...


#: the fields of Lambda's error body: what a runtime client (awslambdaric, the Node, Java and
#: Go clients) posts to /invocation/error, and what Invoke returns with X-Amz-Function-Error
_ERROR_FIELDS = frozenset(
    {"errorMessage", "errorType", "stackTrace", "requestId", "cause", "trace"}
)
_EMULATOR_TIMEOUT = "Task timed out after "


def error_in_body(payload: Any) -> str | None:
    """ "Unhandled" when a response that came back without X-Amz-Function-Error is, by its
    body, a function error; None otherwise.

    Why: the Lambda service answers a handler that raised with 200, X-Amz-Function-Error:
    Unhandled and the error body. The Runtime Interface Emulator (aws-lambda-rie, which
    esmd's tests and many local setups use) loses that header: its handler writes the
    runtime's response through a ResponseWriterProxy whose Header() returns a throwaway map
    (aws/aws-lambda-runtime-interface-emulator#20, still open), so a handler that raised
    comes back as 200 with only ``{"errorMessage": ..., "errorType": ...}``. Treating that as
    success would acknowledge records whose handler failed. So a body that is exactly
    Lambda's error shape (string errorType and errorMessage, no field outside the error
    body's) is a function error, as is the emulator's own timeout text. The price: a handler
    that *returns* such an object on purpose is read as failing; real Lambda responses keep
    the header, which wins when present.
    """
    if isinstance(payload, dict):
        if (
            isinstance(payload.get("errorType"), str)
            and isinstance(payload.get("errorMessage"), str)
            and payload.keys() <= _ERROR_FIELDS
        ):
            return "Unhandled"
    elif isinstance(payload, str) and payload.startswith(_EMULATOR_TIMEOUT):
        return "Unhandled"
    return None


#: kind -> "module:factory"; factories take (name, FunctionConfig, **context).
TARGETS = {
    "python": "service.targets.python:PythonTarget",
    "http": "service.targets.http:HttpTarget",
    "lambda": "service.targets.lambda_:LambdaTarget",
}


def make_target(name: str, config: FunctionConfig, **context: Any) -> Target:
    """Build the target for a ``functions`` entry; imported lazily so unused kinds cost nothing."""
    spec = TARGETS.get(config.kind)
    if spec is None:
        raise ValueError(f"function {name!r}: target kind {config.kind!r} is not available yet")
    module, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    target: Target = factory(name, config, **context)
    return target
