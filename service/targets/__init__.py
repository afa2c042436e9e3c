"""Targets: what a mapping invokes. One module per kind, chosen through ``TARGETS``.

Every target takes the event as a dict (the exact JSON Lambda would deliver) and returns an
:class:`InvokeResult`; serialising is the target's business, so the in-process python target
never pays for JSON at all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

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


#: Invoke API errors that mean "slow down": the call is retried after a throttle backoff
THROTTLE_ERRORS = frozenset(
    {"TooManyRequestsException", "EC2ThrottledException", "ThrottlingException"}
)
#: Invoke API errors about the request's payload rather than the function or the service:
#: retrying the same batch cannot help, so they are function errors (bisection, retry limit,
#: OnFailure destination), as esmd's own check of the 6 MB limit is
PAYLOAD_ERRORS = frozenset(
    {
        "RequestTooLargeException",
        "SerializedRequestEntityTooLargeException",
        "InvalidRequestContentException",
        "UnsupportedMediaTypeException",
    }
)


def invoke_api_error(code: str, message: str, status: int | None = None) -> InvokeResult:
    """The result of an error answered by the Invoke API itself (botocore's Error.Code, or the
    ``x-amzn-ErrorType`` header of a Lambda-compatible endpoint), not by the function.

    Throttling (TooManyRequestsException, 429) is ``throttled``; a payload error is a
    function error named by its code; every other one (ResourceNotFoundException,
    AccessDeniedException, KMS*, EC2*/ENI*/Subnet*, EFS*, ServiceException, ResourceConflict,
    a 5xx without a code, ...) is a ``service_error``: the function did not run, and AWS
    retries such a batch until its records expire without counting a retry.
    """
    code = code.split(":", 1)[0].strip()  # the header may read "Code:http://internal..."
    if not code or code.isdigit():
        code = f"HTTP {status}" if status else "Error"
    body = {"errorMessage": message, "errorType": code}
    if code in THROTTLE_ERRORS or status == 429:
        return InvokeResult(body, throttled=True)
    if code in PAYLOAD_ERRORS:
        return InvokeResult(body, code)
    return InvokeResult(body, service_error=code)


def unreachable(exc: BaseException) -> InvokeResult:
    """The endpoint could not be talked to (refused, DNS, a timeout, a dropped connection): a
    service error named by the exception's type."""
    kind = type(exc).__name__
    return InvokeResult({"errorMessage": str(exc) or kind, "errorType": kind}, service_error=kind)


class ServiceErrorLog:
    """Logs a target's service errors once per outage rather than once per call: a warning
    when they start (or their code changes), debug while the same code repeats, info when
    the endpoint answers again. The Invoker's retries of one batch, and every lane sharing
    the target, would otherwise repeat the same line for as long as the outage lasts."""

    def __init__(self, target: str, kind: str) -> None:
        self._log = structlog.get_logger("esmd.target").bind(function=target, target=kind)
        self._current: str | None = None
        self._repeats = 0

    def seen(self, result: InvokeResult) -> InvokeResult:
        """Note one call's result; returns it unchanged."""
        code = result.service_error
        if code is None:
            if self._current is not None:
                self._log.info(
                    "invoke answered again", after=self._current, failed_calls=self._repeats + 1
                )
                self._current, self._repeats = None, 0
            return result
        error = result.payload.get("errorMessage") if isinstance(result.payload, dict) else None
        if code != self._current:
            self._log.warning(
                "invoke failed before the function ran (service error)",
                service_error=code,
                error=str(error)[:300],
            )
            self._current, self._repeats = code, 0
        else:
            self._repeats += 1
            self._log.debug("service error again", service_error=code, repeats=self._repeats)
        return result


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
