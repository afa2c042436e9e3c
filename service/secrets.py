"""Secrets: the JSON object a ``URI`` names (SourceAccessConfigurations and the like).

A URI is one of

- a Secrets Manager secret ARN (``arn:aws:secretsmanager:<region>:<account>:secret:<name>``),
  read with GetSecretValue through :mod:`service.aws` (so ``aws.endpoint_url`` and
  ``aws.endpoints.secretsmanager`` apply: moto_server and real AWS alike);
- ``env:NAME``: the environment variable NAME holds the JSON (for users off AWS);
- ``file:PATH``: the file PATH holds it (a mounted Kubernetes secret, say).

A secret's content never leaves this module in an error: messages name the URI (an ARN, a
variable name, a path: not secret) and what is wrong, never the value.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from service.aws import aws_client
from service.errors import SourceAuthError

if TYPE_CHECKING:
    from service.config import AwsConfig

SECRET_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):\d{12}:secret:.+$")
FORMS = "a Secrets Manager secret ARN, env:NAME or file:PATH"


class SecretError(Exception):
    """A secret that cannot be read or is not a JSON object; says which, never its value.
    ``unavailable``: the store did not answer (an outage, a throttle), not a refusal."""

    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


#: Secrets Manager errors that say "try again", not "no such secret" or "not allowed"
_TRANSIENT = {"InternalServiceError", "ThrottlingException", "RequestTimeout"}


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot name a secret, checked without reading a remote one: the form, and
    that an ``env:`` variable is set and a ``file:`` exists. None when it may be read."""
    if uri.startswith("env:"):
        name = uri.removeprefix("env:")
        if not name:
            return "env: needs a variable name (env:NAME)"
        return None if name in os.environ else f"environment variable {name} is not set"
    if uri.startswith("file:"):
        path = uri.removeprefix("file:")
        return None if path and Path(path).is_file() else f"no such file: {path!r}"
    if SECRET_ARN.match(uri):
        return None
    return f"{uri!r} is not {FORMS}"


async def read_secret(uri: str, aws: AwsConfig) -> dict[str, Any]:
    """The JSON object ``uri`` names; SecretError when it cannot be read or is not one."""
    problem = uri_problem(uri)
    if problem is not None:
        raise SecretError(problem)
    if uri.startswith("env:"):
        text = os.environ[uri.removeprefix("env:")]
    elif uri.startswith("file:"):
        try:
            text = await asyncio.to_thread(Path(uri.removeprefix("file:")).read_text)
        except OSError as exc:
            raise SecretError(f"{uri}: cannot read: {exc.strerror}") from None
    else:
        text = await _secrets_manager(uri, aws)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):  # no detail: a parser's message may quote the content
        raise SecretError(f"{uri}: the secret is not a JSON object")
    return value


async def _secrets_manager(arn: str, aws: AwsConfig) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    match = SECRET_ARN.match(arn)
    region = match.group(1) if match else None
    try:
        async with aws_client(aws, "secretsmanager", region=region) as client:
            resp = await client.get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretError(f"{arn}: GetSecretValue failed: {code}", code in _TRANSIENT) from None
    except BotoCoreError as exc:
        raise SecretError(f"{arn}: GetSecretValue failed: {type(exc).__name__}", True) from None
    text = resp.get("SecretString")
    if not isinstance(text, str):
        raise SecretError(f"{arn}: the secret has no SecretString (binary secrets: not supported)")
    return text


async def read_credentials(kind: str, uri: str, aws: AwsConfig) -> dict[str, Any]:
    """A source's secret for one SourceAccessConfigurations ``Type``: a secret that cannot
    be used is the source refusing us (SourceAuthError: EVENT_SOURCE_AUTHN_ERROR); a store
    that does not answer is an outage (ConnectionError: EVENT_SOURCE_ERROR), retried."""
    try:
        return await read_secret(uri, aws)
    except SecretError as exc:
        if exc.unavailable:
            raise ConnectionError(f"{kind}: {exc}") from None
        raise SourceAuthError(f"{kind}: {exc}") from None


def string_fields(kind: str, secret: dict[str, Any], *names: str) -> tuple[str, ...]:
    """The named string fields of a secret (``"username", "password"``); SourceAuthError
    naming the missing ones, never a value."""
    missing = [n for n in names if not isinstance(secret.get(n), str) or not secret[n]]
    if missing:
        raise SourceAuthError(f"{kind}: the secret has no {' or '.join(missing)}")
    return tuple(secret[n] for n in names)
