"""Kafka authentication on a real broker (the kafka-auth devtools server): each
SourceAccessConfigurations Type consumes and commits; refused credentials give the mapping
EVENT_SOURCE_AUTHN_ERROR without stopping the daemon or its other mappings; a kafka://
OnFailure destination writes with the mapping's credentials."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.aws import aws_client
from service.config import parse_config
from service.devtools.servers import AUTH_PASSWORD, AUTH_USER, auth_address, auth_tls_dir
from service.secrets import SecretError, read_secret
from tests.integration import collect
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)
from tests.tls_material import broker_ca, client_secret, stranger_ca

pytestmark = pytest.mark.integration
N = 20
SCRAM = {"username": AUTH_USER, "password": AUTH_PASSWORD}
WRONG = {"username": AUTH_USER, "password": "not-the-password"}


def unsecured_jwt(subject: str) -> str:
    """What the broker's unsecured OAUTHBEARER validator accepts: an unsigned JWT."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 600})}."


@pytest.fixture
async def token_endpoint() -> AsyncIterator[str]:
    """An OAuth 2.0 token endpoint: client credentials esmd/esmd-client-secret only."""

    async def token(request: web.Request) -> web.Response:
        expected = base64.b64encode(b"esmd:esmd-client-secret").decode()
        form = await request.post()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return web.json_response({"error": "invalid_client"}, status=401)
        assert form["grant_type"] == "client_credentials" and form["scope"] == "kafka"
        return web.json_response({"access_token": unsecured_jwt("esmd"), "expires_in": 600})

    app = web.Application()
    app.router.add_post("/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/token"
    await runner.cleanup()


class Secrets:
    """Writes each secret where its URI says: env:, file: or Secrets Manager (moto)."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, moto: str, token: str) -> None:
        self._tmp, self._env, self._moto = tmp, monkeypatch, moto
        self.token_url = token

    def env(self, name: str, value: dict[str, Any]) -> str:
        self._env.setenv(name, json.dumps(value))
        return f"env:{name}"

    def file(self, name: str, value: dict[str, Any]) -> str:
        path = self._tmp / f"{name}.json"
        path.write_text(json.dumps(value))
        return f"file:{path}"

    async def arn(self, name: str, value: dict[str, Any]) -> str:
        aws = parse_config({"aws": {"endpoint_url": self._moto}}).aws
        async with aws_client(aws, "secretsmanager") as sm:
            made = await sm.create_secret(Name=name, SecretString=json.dumps(value))
        return str(made["ARN"])


@pytest.fixture
def secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, token_endpoint: str
) -> Secrets:
    return Secrets(tmp_path, monkeypatch, moto_endpoint, token_endpoint)


def root_ca() -> dict[str, str]:
    return {"certificate": (auth_tls_dir() / "ca.pem").read_text()}


Case = Callable[[Secrets, str, str], Any]


async def basic_plaintext(s: Secrets, unique: str, _: str) -> tuple[str, list[Any], Any]:
    return "SASL_PLAINTEXT", [("BASIC_AUTH", s.env(f"B_{unique}", SCRAM))], False


async def scram256_plaintext(s: Secrets, unique: str, _: str) -> tuple[str, list[Any], Any]:
    return "SASL_PLAINTEXT", [("SASL_SCRAM_256_AUTH", s.file(f"s256-{unique}", SCRAM))], False


async def scram512_tls(s: Secrets, unique: str, _: str) -> tuple[str, list[Any], Any]:
    """As AWS: SCRAM over TLS, the secret in Secrets Manager, the brokers' private CA."""
    access = [
        ("SASL_SCRAM_512_AUTH", await s.arn(f"scram-{unique}", SCRAM)),
        ("SERVER_ROOT_CA_CERTIFICATE", await s.arn(f"ca-{unique}", root_ca())),
    ]
    return "SASL_SSL", access, None


async def mtls(s: Secrets, unique: str, _: str) -> tuple[str, list[Any], Any]:
    """A client certificate whose key is encrypted (privateKeyPassword)."""
    access = [
        ("CLIENT_CERTIFICATE_TLS_AUTH", s.file(f"mtls-{unique}", client_secret(broker_ca(), "pw"))),
        ("SERVER_ROOT_CA_CERTIFICATE", s.env(f"CA_{unique}", root_ca())),
    ]
    return "SSL", access, None


async def oauth(s: Secrets, unique: str, endpoint: str) -> tuple[str, list[Any], Any]:
    secret = {
        "clientId": "esmd",
        "clientSecret": "esmd-client-secret",
        "tokenEndpointUrl": endpoint,
    }
    access = [("OAUTHBEARER_AUTH", s.env(f"O_{unique}", secret)), ("OAUTHBEARER_SCOPE", "kafka")]
    return "SASL_PLAINTEXT", access, False


def auth_mapping(
    name: str,
    listener: str,
    topic: str,
    access: list[tuple[str, str]],
    tls: bool | None,
    **extra: Any,
) -> dict[str, Any]:
    mapping = kafka_mapping(
        name,
        auth_address(listener),
        topic,
        f"g-{name}",
        FunctionName=name,
        MaximumBatchingWindowInSeconds=0,
        SourceAccessConfigurations=[{"Type": t, "URI": u} for t, u in access],
        **extra,
    )
    if tls is not None:
        mapping["KafkaTls"] = tls
    return mapping


@pytest.mark.parametrize("case", [basic_plaintext, scram256_plaintext, scram512_tls, mtls, oauth])
async def test_each_auth_type_consumes_and_commits(
    case: Case,
    kafka_auth_internal: str,
    moto_endpoint: str,
    secrets: Secrets,
    token_endpoint: str,
    unique: str,
) -> None:
    name = f"{case.__name__}-{unique}"
    topic = f"auth-{name}"
    await create_topic(kafka_auth_internal, topic, 2)
    await produce_json(kafka_auth_internal, topic, [(i % 2, {"seq": i}) for i in range(N)])
    listener, access, tls = await case(secrets, unique, token_endpoint)
    config = {
        "aws": {"endpoint_url": moto_endpoint},
        "functions": {name: {"python": "tests.integration.collect:handle"}},
        "mappings": [auth_mapping(name, listener, topic, access, tls)],
    }
    async with running_daemon(config) as daemon:

        async def committed() -> bool:
            done, ends = await offsets(kafka_auth_internal, topic, f"g-{name}", 2)
            return done == ends

        await wait_for(committed, 30, f"{name} to commit the end of the topic")
        assert daemon.mappings[0].state_reason == "USER_INITIATED"
    got = sorted(
        json.loads(base64.b64decode(r["value"]))["seq"]
        for event in collect.events[name]
        for records in event["records"].values()
        for r in records
    )
    assert got == list(range(N))


async def wrong_password(s: Secrets, unique: str) -> tuple[str, list[Any], Any]:
    return "SASL_PLAINTEXT", [("SASL_SCRAM_512_AUTH", s.env(f"W_{unique}", WRONG))], False


async def wrong_ca(s: Secrets, unique: str) -> tuple[str, list[Any], Any]:
    stranger = {"certificate": stranger_ca().pem}
    access = [
        ("BASIC_AUTH", s.env(f"P_{unique}", SCRAM)),
        ("SERVER_ROOT_CA_CERTIFICATE", s.env(f"X_{unique}", stranger)),
    ]
    return "SASL_SSL", access, None


async def no_client_certificate(s: Secrets, unique: str) -> tuple[str, list[Any], Any]:
    return "SSL", [("SERVER_ROOT_CA_CERTIFICATE", s.env(f"C_{unique}", root_ca()))], None


async def stranger_client_certificate(s: Secrets, unique: str) -> tuple[str, list[Any], Any]:
    access = [
        ("CLIENT_CERTIFICATE_TLS_AUTH", s.env(f"M_{unique}", client_secret(stranger_ca()))),
        ("SERVER_ROOT_CA_CERTIFICATE", s.env(f"C_{unique}", root_ca())),
    ]
    return "SSL", access, None


async def wrong_client_secret(s: Secrets, unique: str) -> tuple[str, list[Any], Any]:
    secret = {"clientId": "esmd", "clientSecret": "wrong", "tokenEndpointUrl": s.token_url}
    return "SASL_PLAINTEXT", [("OAUTHBEARER_AUTH", s.env(f"T_{unique}", secret))], False


@pytest.mark.parametrize(
    "case",
    [
        wrong_password,
        wrong_ca,
        no_client_certificate,
        stranger_client_certificate,
        wrong_client_secret,
    ],
)
async def test_refused_credentials_give_authn_error_and_the_daemon_goes_on(
    case: Callable[[Secrets, str], Any],
    kafka_auth_internal: str,
    kafka_bootstrap: str,
    secrets: Secrets,
    unique: str,
) -> None:
    name, ok = f"{case.__name__}-{unique}", f"ok-{unique}"
    topic = f"refused-{name}"
    await create_topic(kafka_auth_internal, topic, 1)
    await create_topic(kafka_bootstrap, f"ok-{unique}", 1)
    await produce_json(kafka_bootstrap, f"ok-{unique}", [(0, {"seq": i}) for i in range(5)])
    listener, access, tls = await case(secrets, unique)
    config = {
        "functions": {n: {"python": "tests.integration.collect:handle"} for n in (name, ok)},
        "mappings": [
            auth_mapping(name, listener, topic, access, tls),
            kafka_mapping(ok, kafka_bootstrap, f"ok-{unique}", f"g-{ok}", FunctionName=ok),
        ],
    }
    async with running_daemon(config) as daemon:
        refused, healthy = daemon.mappings
        await wait_for(
            lambda: refused.state_reason == "EVENT_SOURCE_AUTHN_ERROR", 20, "the auth error"
        )
        await wait_for(lambda: len(collect.events[ok]) > 0, 20, "the other mapping to deliver")
        assert healthy.state_reason == "USER_INITIATED"
        assert refused.last_error and "SourceAuthError" not in refused.last_error
        status = refused.status()
        assert status["state_reason"] == "EVENT_SOURCE_AUTHN_ERROR"


async def failing(event: dict[str, Any], context: Any) -> None:
    raise RuntimeError("this function fails every record")


async def test_kafka_destination_uses_the_mapping_credentials(
    kafka_auth_internal: str, secrets: Secrets, unique: str
) -> None:
    name = f"dest-{unique}"
    topic, dlq = f"src-{name}", f"dlq-{name}"
    await create_topic(kafka_auth_internal, topic, 1)
    await create_topic(kafka_auth_internal, dlq, 1)
    await produce_json(kafka_auth_internal, topic, [(0, {"seq": i}) for i in range(3)])
    access = [("SASL_SCRAM_256_AUTH", secrets.env(f"D_{unique}", SCRAM))]
    mapping = auth_mapping(
        name,
        "SASL_PLAINTEXT",
        topic,
        access,
        False,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"kafka://{dlq}"}},
    )
    config = {
        "functions": {name: {"python": "tests.integration.test_kafka_auth:failing"}},
        "mappings": [mapping],
    }
    async with running_daemon(config):

        async def committed() -> bool:
            done, ends = await offsets(kafka_auth_internal, topic, f"g-{name}", 1)
            return done == ends

        await wait_for(committed, 30, "the failed records to move on")
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_auth_internal, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(dlq, 0)
        consumer.assign([tp])
        fetched = await consumer.getmany(tp, timeout_ms=5000)
    finally:
        await consumer.stop()
    assert len(fetched.get(tp, [])) == 3


async def test_secrets_manager_through_moto(moto_endpoint: str) -> None:
    from service.aws import aws_client

    aws = parse_config({"aws": {"endpoint_url": moto_endpoint}}).aws
    async with aws_client(aws, "secretsmanager") as sm:
        made = await sm.create_secret(
            Name=f"kafka-{id(aws)}", SecretString=json.dumps({"username": "u", "password": "p"})
        )
    assert await read_secret(made["ARN"], aws) == {"username": "u", "password": "p"}
    missing = made["ARN"][:-6] + "zzzzzz"
    with pytest.raises(SecretError, match="GetSecretValue failed: ResourceNotFoundException"):
        await read_secret(missing, aws)
