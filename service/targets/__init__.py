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
    a function error.
    """

    payload: Any = None
    function_error: str | None = None
    throttled: bool = False

    @property
    def ok(self) -> bool:
        return self.function_error is None and not self.throttled


class Target(Protocol):
    name: str

    async def invoke(self, event: dict[str, Any]) -> InvokeResult: ...

    async def close(self) -> None: ...


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
