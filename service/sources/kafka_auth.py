"""Kafka authentication at run time: what a mapping's SourceAccessConfigurations ask of
aiokafka, read from their secrets (service/sources/kafka_access.py holds the config rules).

- :func:`kafka_connection`: the brokers and a :class:`KafkaAuth` (security protocol, SASL
  mechanism and credentials, TLS context, OAUTHBEARER token provider) for a mapping; for
  MSK, the broker string that matches the auth (GetBootstrapBrokers), as Lambda chooses it.
- :func:`probe`: one connection with that auth before the consumers start, so a refused
  credential (wrong password, certificate, CA, token) raises
  :class:`~service.errors.SourceAuthError`, the mapping's EVENT_SOURCE_AUTHN_ERROR, instead
  of aiokafka's "Unable to bootstrap", which cannot be told from an outage.

Secrets stay in this module's objects (fields without repr); errors name the Type and what
is wrong, never a value.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from service.aws import aws_client
from service.errors import SourceAuthError
from service.secrets import read_credentials, string_fields
from service.sources.kafka_access import AUTHENTICATION, NOT_SECRETS, OAUTH_OPTIONS, ROOT_CA

if TYPE_CHECKING:
    from service.config import AwsConfig, MappingConfig


@dataclass(frozen=True)
class KafkaAuth:
    """How to connect: everything aiokafka's clients take about security."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    mechanism: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    token_provider: AbstractTokenProvider | None = field(default=None, repr=False)
    #: the Type that authenticates (for messages), "" when none does
    source: str = ""

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and create_conn."""
        kwargs: dict[str, Any] = {
            "security_protocol": self.protocol,
            "ssl_context": self.ssl_context,
        }
        if self.mechanism is not None:
            kwargs.update(
                sasl_mechanism=self.mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
                sasl_oauth_token_provider=self.token_provider,
            )
        return kwargs

    def describe(self) -> str:
        """For logs: ``SASL_SSL SCRAM-SHA-512``."""
        return " ".join(filter(None, (self.protocol, self.mechanism)))


PLAINTEXT = KafkaAuth()


async def kafka_connection(cfg: MappingConfig, aws: AwsConfig) -> tuple[list[str], KafkaAuth]:
    """The mapping's brokers and how to authenticate to them."""
    secrets = await _read_secrets(cfg, aws)
    given = {a.Type for a in cfg.SourceAccessConfigurations}
    auth_type = next((t for t in AUTHENTICATION if t in given), "")
    source = cfg.SelfManagedEventSource
    if source is not None:
        tls = cfg.KafkaTls if cfg.KafkaTls is not None else bool(auth_type or ROOT_CA in given)
        servers = list(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS)
    else:
        servers, tls, auth_type = await _msk_brokers(cfg, aws, auth_type)
    mechanism = AUTHENTICATION.get(auth_type) or None
    protocol = ("SASL_" if mechanism else "") + ("SSL" if tls else "PLAINTEXT")
    context = await tls_context(auth_type, secrets) if tls else None
    username = password = None
    provider: AbstractTokenProvider | None = None
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        username, password = string_fields(auth_type, secrets[auth_type], "username", "password")
    elif auth_type == "OAUTHBEARER_AUTH":
        options = {
            OAUTH_OPTIONS[a.Type]: a.URI or ""
            for a in cfg.SourceAccessConfigurations
            if a.Type in OAUTH_OPTIONS
        }
        provider = OAuthClientCredentials(secrets[auth_type], options, context)
    elif mechanism == "OAUTHBEARER":  # IAM_AUTH, or MSK's IAM
        provider = MskIamToken(_region(cfg, aws))
    auth = KafkaAuth(protocol, mechanism, username, password, context, provider, auth_type)
    return servers, auth


async def _read_secrets(cfg: MappingConfig, aws: AwsConfig) -> dict[str, dict[str, Any]]:
    wanted = [a for a in cfg.SourceAccessConfigurations if a.Type not in NOT_SECRETS and a.URI]

    async def one(kind: str, uri: str) -> tuple[str, dict[str, Any]]:
        return kind, await read_credentials(kind, uri, aws)

    return dict(await asyncio.gather(*(one(a.Type, a.URI or "") for a in wanted)))


def _region(cfg: MappingConfig, aws: AwsConfig) -> str:
    arn = (cfg.EventSourceArn or "").split(":")
    return arn[3] if len(arn) > 3 and arn[3] else aws.region


# --- TLS ------------------------------------------------------------------------------------


async def tls_context(auth_type: str, secrets: dict[str, dict[str, Any]]) -> ssl.SSLContext:
    """The system's CAs, or SERVER_ROOT_CA_CERTIFICATE's; the client certificate of
    CLIENT_CERTIFICATE_TLS_AUTH (its chain, key and the key's password)."""
    cadata = None
    if ROOT_CA in secrets:
        (cadata,) = string_fields(ROOT_CA, secrets[ROOT_CA], "certificate")
    try:
        context = ssl.create_default_context(cadata=cadata)
    except ssl.SSLError as exc:
        raise SourceAuthError(f"{ROOT_CA}: the certificate cannot be read ({exc.reason})") from None
    if auth_type == "CLIENT_CERTIFICATE_TLS_AUTH":
        secret = secrets[auth_type]
        chain, key = string_fields(auth_type, secret, "certificate", "privateKey")
        password = secret.get("privateKeyPassword") or None
        await asyncio.to_thread(_load_client_certificate, context, chain, key, password)
    return context


def _load_client_certificate(
    context: ssl.SSLContext, chain: str, key: str, password: str | None
) -> None:
    """ssl loads a certificate only from files: they live in a private folder (0700, files
    0600) for the moment of loading, then are deleted."""
    with tempfile.TemporaryDirectory(prefix="esmd-tls-") as folder:
        cert_file, key_file = Path(folder, "chain.pem"), Path(folder, "key.pem")
        for path, text in ((cert_file, chain), (key_file, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text if text.endswith("\n") else text + "\n")
        try:
            context.load_cert_chain(cert_file, key_file, password)
        except ssl.SSLError as exc:
            raise SourceAuthError(
                "CLIENT_CERTIFICATE_TLS_AUTH: the certificate or private key cannot be "
                f"loaded ({exc.reason or 'wrong privateKeyPassword?'})"
            ) from None


# --- OAUTHBEARER ----------------------------------------------------------------------------


class _CachedToken(AbstractTokenProvider):  # type: ignore[misc]
    """A token fetched when missing or in the last fifth of its life."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._renew_at:
                token, lifetime = await self._fetch()
                self._token, self._renew_at = token, time.monotonic() + 0.8 * lifetime
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        raise NotImplementedError


class OAuthClientCredentials(_CachedToken):
    """OAUTHBEARER_AUTH: an OAuth 2.0 client-credentials grant (RFC 6749 4.4) at the secret's
    token endpoint, with OAUTHBEARER_SCOPE and _AUDIENCE; _LOGICAL_CLUSTER and
    _IDENTITY_POOL go as SASL extensions (Confluent Cloud). The secret: ``clientId``,
    ``clientSecret`` and ``tokenEndpointUrl`` (or ``tokenEndpoint``); or, esmd's own, a
    ready ``token``."""

    def __init__(
        self, secret: dict[str, Any], options: dict[str, str], context: ssl.SSLContext | None
    ) -> None:
        super().__init__()
        self._static = secret.get("token") if isinstance(secret.get("token"), str) else None
        if self._static is None:
            if not secret.get("tokenEndpointUrl") and secret.get("tokenEndpoint"):
                secret = {**secret, "tokenEndpointUrl": secret["tokenEndpoint"]}
            keys = string_fields(
                "OAUTHBEARER_AUTH", secret, "clientId", "clientSecret", "tokenEndpointUrl"
            )
            self._client_id, self._client_secret, self._endpoint = keys
        self._scope = options.get("scope")
        self._audience = options.get("audience")
        self._extensions = {
            k: v for k, v in options.items() if k in ("logicalCluster", "identityPoolId")
        }

    def extensions(self) -> dict[str, str]:
        return self._extensions

    async def _fetch(self) -> tuple[str, float]:
        if self._static is not None:
            return self._static, 3600.0
        import aiohttp

        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        if self._audience:
            form["audience"] = self._audience
        # RFC 6749 2.3.1: HTTP Basic with the form-encoded client id and secret
        login = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
        headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
        timeout = aiohttp.ClientTimeout(total=15)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(self._endpoint, data=form, headers=headers) as resp,
        ):
            if resp.status in (400, 401, 403):
                raise SourceAuthError(
                    f"OAUTHBEARER_AUTH: the token endpoint refused the client credentials "
                    f"(HTTP {resp.status})"
                )
            resp.raise_for_status()
            body = await resp.json(content_type=None)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise SourceAuthError("OAUTHBEARER_AUTH: the token endpoint sent no access_token")
        return token, float(body.get("expires_in") or 300)


class MskIamToken(_CachedToken):
    """MSK IAM (IAM_AUTH, or an MSK cluster with IAM): the token of
    aws-msk-iam-sasl-signer-python, signed with the default AWS credentials (a pod's role)."""

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = region

    async def _fetch(self) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        try:
            token, expiry_ms = await asyncio.to_thread(
                MSKAuthTokenProvider.generate_auth_token, self.region
            )
        except Exception as exc:  # botocore: no credentials, bad profile, ...
            raise SourceAuthError(f"IAM: cannot sign a token: {type(exc).__name__}") from None
        return str(token), max(60.0, expiry_ms / 1000 - time.time())


# --- MSK ------------------------------------------------------------------------------------

#: Lambda's choice of MSK broker string: SASL/SCRAM's for a SCRAM secret, TLS for a client
#: certificate; without either, IAM when the cluster has it, else plaintext, else TLS
_MSK_STRINGS = {
    "SASL_SCRAM_512_AUTH": [("BootstrapBrokerStringSaslScram", True)],
    "CLIENT_CERTIFICATE_TLS_AUTH": [("BootstrapBrokerStringTls", True)],
    "": [
        ("BootstrapBrokerStringSaslIam", True),
        ("BootstrapBrokerString", False),
        ("BootstrapBrokerStringTls", True),
    ],
}


async def _msk_brokers(
    cfg: MappingConfig, aws: AwsConfig, auth_type: str
) -> tuple[list[str], bool, str]:
    """(servers, tls, the auth Type: "IAM_AUTH" when the IAM string was chosen)."""
    arn = cfg.EventSourceArn
    async with aws_client(aws, "kafka", region=_region(cfg, aws)) as kafka:
        resp = await kafka.get_bootstrap_brokers(ClusterArn=arn)
    for key, tls in _MSK_STRINGS[auth_type]:
        if resp.get(key):
            chosen = "IAM_AUTH" if key.endswith("SaslIam") else auth_type
            return str(resp[key]).split(","), tls, chosen
    wanted = " or ".join(key for key, _ in _MSK_STRINGS[auth_type])
    raise ValueError(f"mapping {cfg.Name!r}: EventSourceArn: the cluster has no {wanted}")


# --- the probe ------------------------------------------------------------------------------

#: what a broker or the TLS layer says when it refuses the client
_REFUSED = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    ssl.SSLError,
)


async def probe(servers: list[str], auth: KafkaAuth, wait: float = 15.0) -> None:
    """Connect to the first broker that answers, with ``auth``. SourceAuthError when the
    credentials or certificates are refused; ConnectionError when no broker answers."""
    last: BaseException | None = None
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(wait):
                conn = await create_conn(
                    host.strip("[]"), int(port), client_id="esmd-probe", **auth.client_kwargs()
                )
        except SourceAuthError:
            raise
        except (OSError, KafkaError, TimeoutError) as exc:
            refused = _refusal(exc)
            if refused is not None:
                raise SourceAuthError(f"{server}: {auth.describe()}: {refused}") from None
            last = exc
            continue
        conn.close()
        return
    raise ConnectionError(f"no broker answered ({', '.join(servers)}): {last!r}")


def _refusal(exc: BaseException) -> str | None:
    """Why the broker refused the client, or None for an outage. The TLS layer's alerts
    (certificate unknown, required, bad) come as the SSLError behind the connection error."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the broker's certificate is not trusted ({seen.verify_message})"
        if isinstance(seen, ssl.SSLError):
            return f"TLS refused ({seen.reason or type(seen).__name__})"
        if isinstance(seen, _REFUSED):
            return f"authentication failed ({type(seen).__name__})"
        seen = seen.__cause__ or seen.__context__
    return None
