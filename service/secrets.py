"""Source credentials: the secret a ``SourceAccessConfigurations[].URI`` names.

AWS keeps them in Secrets Manager as JSON (``{"username", "password"}`` for BASIC_AUTH and
SASL/SCRAM; ``{"certificate", "privateKey", "privateKeyPassword"}`` for mTLS). esmd reads the
same JSON from one of:

- a Secrets Manager ARN (``arn:aws:secretsmanager:<region>:<account>:secret:<name>``), through
  aiobotocore: the caller passes a client factory (``service.aws.aws_client`` with the
  ``aws`` section, so its endpoints apply), called with the ARN's region;
- ``env:NAME``: the environment variable NAME holds the JSON;
- ``file:PATH``: the file at PATH holds it (a mounted Kubernetes secret).

Secret values never appear in logs, errors or status: :class:`Secret` shows only where it came
from, and every error names the URI and what went wrong, never the content. A secret that
cannot be read or lacks a field raises :class:`~service.errors.SourceAuthError`, so the
mapping's state reason says EVENT_SOURCE_AUTHN_ERROR.

Nothing of esmd is imported but leaf modules, so ``service.config`` can use
:func:`uri_problem` to validate URIs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.arns import parse_arn
from service.errors import SourceAuthError

#: makes a Secrets Manager client for a region (None: the configured one)
SecretsClient = Callable[[str | None], AbstractAsyncContextManager[Any]]

ENV_PREFIX = "env:"
FILE_PREFIX = "file:"


@dataclass(frozen=True)
class Secret:
    """A read secret: its JSON fields, and where it came from (the only part ever shown)."""

    uri: str
    fields: dict[str, Any] = field(repr=False)

    def text(self, name: str) -> str:
        """A string field; SourceAuthError (naming the field, not the value) if absent."""
        value = self.fields.get(name)
        if not isinstance(value, str) or not value:
            raise SourceAuthError(f"secret {self.uri}: no {name!r} string in its JSON")
        return value

    def basic_auth(self) -> tuple[str, str]:
        """(username, password), as BASIC_AUTH and SASL/SCRAM secrets hold them."""
        return self.text("username"), self.text("password")


def uri_problem(uri: str) -> str | None:
    """Why a URI cannot name a secret, or None: for config validation (no I/O)."""
    if uri.startswith(ENV_PREFIX):
        return None if uri[len(ENV_PREFIX) :] else "env: needs a variable name"
    if uri.startswith(FILE_PREFIX):
        return None if uri[len(FILE_PREFIX) :] else "file: needs a path"
    arn = parse_arn(uri)
    if arn is None or arn.service != "secretsmanager" or not arn.resource.startswith("secret:"):
        return (
            "must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:"
            "secret:<name>), env:NAME or file:PATH"
        )
    return None


async def read_secret(uri: str, client: SecretsClient) -> Secret:
    """Read and parse the secret ``uri`` names; SourceAuthError when it cannot."""
    if uri.startswith(ENV_PREFIX):
        name = uri[len(ENV_PREFIX) :]
        raw: str | bytes | None = os.environ.get(name)
        if raw is None:
            raise SourceAuthError(f"secret {uri}: the environment variable {name} is not set")
    elif uri.startswith(FILE_PREFIX):
        try:
            raw = await asyncio.to_thread(Path(uri[len(FILE_PREFIX) :]).read_bytes)
        except OSError as exc:
            raise SourceAuthError(f"secret {uri}: cannot read the file ({exc.strerror})") from None
    else:
        raw = await _secrets_manager(uri, client)
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SourceAuthError(f"secret {uri}: not JSON") from None
    if not isinstance(fields, dict):
        raise SourceAuthError(f"secret {uri}: not a JSON object")
    return Secret(uri, fields)


async def _secrets_manager(arn: str, client: SecretsClient) -> str | bytes:
    parsed = parse_arn(arn)
    region = parsed.region if parsed is not None and parsed.region else None
    try:
        async with client(region) as secretsmanager:
            resp = await secretsmanager.get_secret_value(SecretId=arn)
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
        raise SourceAuthError(f"secret {arn}: GetSecretValue failed ({code})") from None
    if "SecretString" in resp:
        return str(resp["SecretString"])
    return bytes(resp.get("SecretBinary", b""))
