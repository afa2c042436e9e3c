"""Signature Version 4 on every API request, verified with botocore's own signer: the
signature is computed again for the request as received (its signed headers, query and body)
with the secret of the access key it names, and compared in constant time. No crypto here.

Refusals use AWS's codes: no or unknown key -> UnrecognizedClientException (or
MissingAuthenticationTokenException when nothing is signed), a signature that does not match
or is older than 15 minutes (AWS's window) -> InvalidSignatureException, all 403.
"""

from __future__ import annotations

import datetime
import hmac
import re
from collections.abc import Mapping

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from service.api.shapes import ApiError

#: how far a request's X-Amz-Date may be from now, either way (AWS: 15 minutes)
MAX_SKEW = datetime.timedelta(minutes=15)
SERVICE = "lambda"
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<headers>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]+)"
)


def verify(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    secrets: Mapping[str, str],
    now: datetime.datetime | None = None,
) -> str:
    """Check a request's SigV4 signature against ``secrets`` (access key id -> secret);
    return the access key id, or raise ApiError. ``url``: scheme, Host and the raw path and
    query as received."""
    given = headers.get("Authorization")
    if not given:
        raise ApiError("MissingAuthenticationTokenException", "Missing Authentication Token")
    found = _AUTH.fullmatch(given.strip())
    if found is None:
        raise ApiError("InvalidSignatureException", "Authorization header is not AWS SigV4")
    key = found["key"]
    secret = secrets.get(key)
    if secret is None:
        raise ApiError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    timestamp = headers.get("X-Amz-Date", "")
    _check_time(timestamp, found["date"], now or datetime.datetime.now(datetime.UTC))
    signed = found["headers"].split(";")
    wanted = {name: value for name, value in headers.items() if name.lower() in signed}
    if len(wanted) != len(signed):
        raise ApiError("InvalidSignatureException", "A signed header is missing")
    request = AWSRequest(method=method, url=url, headers=wanted, data=body)
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(key, secret), found["service"], found["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if found["service"] != SERVICE or not hmac.compare_digest(expected, found["signature"]):
        raise ApiError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )
    return key


def _check_time(timestamp: str, scope_date: str, now: datetime.datetime) -> None:
    try:
        signed_at = datetime.datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(
            tzinfo=datetime.UTC
        )
    except ValueError:
        raise ApiError("InvalidSignatureException", "X-Amz-Date is missing or invalid") from None
    if timestamp[:8] != scope_date:
        raise ApiError("InvalidSignatureException", "X-Amz-Date does not match the scope")
    earliest = (now - MAX_SKEW).strftime(SIGV4_TIMESTAMP)
    if signed_at < now - MAX_SKEW:
        raise ApiError(
            "InvalidSignatureException",
            f"Signature expired: {timestamp} is now earlier than {earliest}",
        )
    if signed_at > now + MAX_SKEW:
        raise ApiError("InvalidSignatureException", f"Signature not yet current: {timestamp}")
