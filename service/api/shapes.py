"""The API's shapes, read from botocore's Lambda service model rather than retyped, and
AWS's error responses (rest-json: ``x-amzn-ErrorType`` plus a ``{"Type", "message"}`` body),
so botocore raises the same exception classes as against AWS."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from aiohttp import web

#: esmd's own request field: the mapping's name (derived when absent; boto3 cannot send it)
NAME = "Name"
#: API field names that differ from the CloudFormation property names of the config
API_TO_CONFIG = {"KMSKeyArn": "KmsKeyArn"}
CONFIG_TO_API = {v: k for k, v in API_TO_CONFIG.items()}
#: errors outside Lambda's model (SigV4), with AWS's status codes
AUTH_ERRORS = {
    "UnrecognizedClientException": 403,
    "InvalidSignatureException": 403,
    "MissingAuthenticationTokenException": 403,
}


@functools.cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("lambda")


def input_members(operation: str) -> frozenset[str]:
    """The request fields of an operation (e.g. ``CreateEventSourceMapping``)."""
    return frozenset(_model().operation_model(operation).input_shape.members)


@functools.cache
def output_members() -> tuple[str, ...]:
    """The fields of an EventSourceMappingConfiguration, in the model's order."""
    return tuple(_model().shape_for("EventSourceMappingConfiguration").members)


@functools.cache
def max_items() -> int:
    shape = _model().operation_model("ListEventSourceMappings").input_shape.members["MaxItems"]
    return int(shape.metadata.get("max", 10000))


def error_status(code: str) -> int:
    if code in AUTH_ERRORS:
        return AUTH_ERRORS[code]
    shape = _model().shape_for(code)
    return int(shape.metadata["error"]["httpStatusCode"])


class ApiError(Exception):
    """One of AWS's errors: ``code`` is the exception's shape name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        return web.Response(
            body=orjson.dumps({"Type": "User", "message": self.message}),
            status=error_status(self.code),
            content_type="application/json",
            headers={"x-amzn-ErrorType": self.code},
        )


def invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterValueException", message)


def request_to_config(body: Any, operation: str) -> dict[str, Any]:
    """A request body as config properties (the names of ``mappings:`` in the YAML);
    fields outside the operation's input shape are refused as AWS refuses them."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    allowed = input_members(operation) | {NAME}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise invalid(f"{operation} does not take {', '.join(unknown)}")
    out: dict[str, Any] = {
        API_TO_CONFIG.get(str(k), str(k)): v for k, v in body.items() if k != "UUID"
    }
    tags = out.get("Tags")
    if isinstance(tags, dict):  # the API's map; CloudFormation's Tags are [{Key, Value}]
        out["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return out


def config_to_response(props: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """An EventSourceMappingConfiguration from config properties and the fields esmd
    computes (UUID, ARNs, State, ...), keeping only the model's members."""
    merged: dict[str, Any] = {CONFIG_TO_API.get(k, k): v for k, v in props.items()} | extra
    window = merged.get("MaximumBatchingWindowInSeconds")
    if isinstance(window, float) and window.is_integer():
        merged["MaximumBatchingWindowInSeconds"] = int(window)
    return {k: merged[k] for k in output_members() if merged.get(k) is not None}
