"""SigV4 verification (service/api/sigv4.py) against requests signed by botocore itself."""

from __future__ import annotations

import datetime

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from service.api.shapes import ApiError, config_to_response, error_status, request_to_config
from service.api.sigv4 import verify

URL = "http://127.0.0.1:9464/2015-03-31/event-source-mappings/?FunctionName=f&MaxItems=5"
SECRETS = {"AKID": "secret"}


def signed(method: str = "GET", body: bytes = b"", secret: str = "secret") -> dict[str, str]:
    request = AWSRequest(method=method, url=URL, data=body, headers={"Content-Type": "x"})
    SigV4Auth(Credentials("AKID", secret), "lambda", "us-east-1").add_auth(request)
    return dict(request.headers.items()) | {"Host": "127.0.0.1:9464"}


def code(headers: dict[str, str], body: bytes = b"", **kwargs: object) -> str:
    with pytest.raises(ApiError) as caught:
        verify("POST", URL, headers, body, SECRETS, **kwargs)  # type: ignore[arg-type]
    return caught.value.code


def test_a_request_signed_by_botocore_passes() -> None:
    assert verify("POST", URL, signed("POST", b'{"a": 1}'), b'{"a": 1}', SECRETS) == "AKID"


def test_a_changed_body_a_wrong_secret_or_an_unknown_key_is_refused() -> None:
    assert code(signed("POST", b"{}"), b'{"x": 1}') == "InvalidSignatureException"
    assert code(signed("POST", secret="other")) == "InvalidSignatureException"
    headers = signed("POST")
    headers["Authorization"] = headers["Authorization"].replace("AKID/", "OTHER/")
    assert code(headers) == "UnrecognizedClientException"
    assert code({}) == "MissingAuthenticationTokenException"


def test_an_expired_signature_is_refused() -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
    with pytest.raises(ApiError, match="Signature expired") as caught:
        verify("POST", URL, signed("POST"), b"", SECRETS, now=later)
    assert caught.value.code == "InvalidSignatureException"
    assert error_status(caught.value.code) == 403


def test_statuses_come_from_botocores_model() -> None:
    assert error_status("ResourceNotFoundException") == 404
    assert error_status("ResourceConflictException") == 409
    assert error_status("InvalidParameterValueException") == 400
    assert error_status("ResourceInUseException") == 400


def test_request_fields_map_to_config_properties_and_back() -> None:
    props = request_to_config(
        {"FunctionName": "f", "KMSKeyArn": "k", "Tags": {"a": "b"}}, "CreateEventSourceMapping"
    )
    assert props == {"FunctionName": "f", "KmsKeyArn": "k", "Tags": [{"Key": "a", "Value": "b"}]}
    with pytest.raises(ApiError, match="EventSourceArn"):
        request_to_config({"EventSourceArn": "x"}, "UpdateEventSourceMapping")
    out = config_to_response(
        {"KmsKeyArn": "k", "Tags": [], "Name": "n", "MaximumBatchingWindowInSeconds": 1.0},
        {"UUID": "u", "State": "Enabled"},
    )
    assert out == {
        "UUID": "u",
        "MaximumBatchingWindowInSeconds": 1,
        "KMSKeyArn": "k",
        "State": "Enabled",
    }
