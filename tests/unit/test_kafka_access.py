"""SourceAccessConfigurations of Kafka mappings: validation (the Types, secrets, the rules),
reading secrets, the settings aiokafka gets, MSK's broker string and the MSK IAM token."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from aiohttp import web

from service.config import ConfigError, parse_config
from service.errors import SourceAuthError
from service.secrets import SecretError, read_secret, uri_problem
from service.sources.kafka_auth import MskIamToken, kafka_connection

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kafka-AbCdEf"
MSK_ARN = "arn:aws:kafka:us-east-1:123456789012:cluster/demo/abc-1"


def kafka(*access: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Name": "k",
        "FunctionName": "f",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b:9096"]}},
        "Topics": ["t"],
        "StartingPosition": "LATEST",
        "SourceAccessConfigurations": list(access),
        **extra,
    }


def msk(*access: dict[str, Any]) -> dict[str, Any]:
    return {
        "Name": "m",
        "FunctionName": "f",
        "EventSourceArn": MSK_ARN,
        "Topics": ["t"],
        "StartingPosition": "LATEST",
        "SourceAccessConfigurations": list(access),
    }


def problems(mapping: dict[str, Any]) -> list[str]:
    try:
        parse_config({"mappings": [mapping]})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    "kind",
    ["BASIC_AUTH", "SASL_SCRAM_256_AUTH", "SASL_SCRAM_512_AUTH", "OAUTHBEARER_AUTH",
     "CLIENT_CERTIFICATE_TLS_AUTH", "SERVER_ROOT_CA_CERTIFICATE"],
)  # fmt: skip
def test_every_aws_type_for_self_managed_kafka_is_accepted(kind: str) -> None:
    assert problems(kafka({"Type": kind, "URI": ARN}, {"Type": "VPC_SUBNET", "URI": "s-1"})) == []


def test_a_pasted_sam_mapping_with_scram_passes() -> None:
    assert problems(msk({"Type": "SASL_SCRAM_512_AUTH", "URI": ARN})) == []
    assert problems(kafka({"Type": "IAM_AUTH"})) == []
    oauth = [
        {"Type": "OAUTHBEARER_AUTH", "URI": ARN},
        {"Type": "OAUTHBEARER_SCOPE", "URI": "kafka.read"},
        {"Type": "OAUTHBEARER_LOGICAL_CLUSTER", "URI": "lkc-123"},
    ]
    assert problems(kafka(*oauth)) == []


def test_refused_types_and_rules_name_the_mapping_and_field(tmp_path: Path) -> None:
    assert problems(kafka({"Type": "VIRTUAL_HOST", "URI": "/"})) == [
        "mapping 'k': SourceAccessConfigurations[0].Type: VIRTUAL_HOST: esmd cannot honour it "
        "(a RabbitMQ (Amazon MQ) setting)"
    ]
    (found,) = problems(msk({"Type": "BASIC_AUTH", "URI": ARN}))
    assert found.startswith("mapping 'm': SourceAccessConfigurations[0].Type: BASIC_AUTH is not")
    (found,) = problems(kafka({"Type": "SASL_SCRAM_512_AUTH"}))
    assert found.startswith("mapping 'k': SourceAccessConfigurations[0].URI: SASL_SCRAM_512_AUTH")
    (found,) = problems(kafka({"Type": "BASIC_AUTH", "URI": "env:ESMD_TEST_NOT_SET"}))
    assert found.endswith("URI: environment variable ESMD_TEST_NOT_SET is not set")
    (found,) = problems(kafka({"Type": "BASIC_AUTH", "URI": f"file:{tmp_path}/none.json"}))
    assert "[0].URI: no such file" in found
    (found,) = problems(kafka({"Type": "BASIC_AUTH", "URI": "s3://bucket/secret"}))
    assert "is not a Secrets Manager secret ARN, env:NAME or file:PATH" in found
    two = kafka({"Type": "BASIC_AUTH", "URI": ARN}, {"Type": "SASL_SCRAM_256_AUTH", "URI": ARN})
    (found,) = problems(two)
    assert "one authentication Type at most" in found
    (found,) = problems(kafka({"Type": "OAUTHBEARER_SCOPE", "URI": "x"}))
    assert "need OAUTHBEARER_AUTH" in found
    (found,) = problems(kafka({"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": ARN}, KafkaTls=False))
    assert found.startswith("mapping 'k': KafkaTls: ")
    sqs = {"Name": "q", "FunctionName": "f", "EventSourceArn": "arn:aws:sqs:us-east-1:1:q"}
    (found,) = problems({**sqs, "SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": ARN}]})
    assert "esmd cannot authenticate SQS sources" in found


async def test_secrets_from_env_and_file_never_quote_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESMD_TEST_SECRET", '{"username": "u", "password": "hunter2"}')
    aws = parse_config({}).aws
    assert (await read_secret("env:ESMD_TEST_SECRET", aws))["password"] == "hunter2"
    path = tmp_path / "s.json"
    path.write_text('{"username": "u", "password": "hunter2"')  # broken JSON
    with pytest.raises(SecretError) as info:
        await read_secret(f"file:{path}", aws)
    assert "hunter2" not in str(info.value) and "not a JSON object" in str(info.value)
    assert uri_problem(ARN) is None


async def test_the_settings_aiokafka_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", json.dumps({"username": "esmd", "password": "pw"}))
    config = parse_config({"mappings": [kafka({"Type": "SASL_SCRAM_512_AUTH", "URI": "env:S"})]})
    servers, auth = await kafka_connection(config.mappings[0], config.aws)
    assert (servers, auth.protocol, auth.mechanism) == (["b:9096"], "SASL_SSL", "SCRAM-SHA-512")
    assert "pw" not in repr(auth) and isinstance(auth.ssl_context, ssl.SSLContext)
    plain = kafka({"Type": "BASIC_AUTH", "URI": "env:S"}, KafkaTls=False)
    config = parse_config({"mappings": [plain]})
    _, auth = await kafka_connection(config.mappings[0], config.aws)
    kwargs = auth.client_kwargs()
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("esmd", "pw")
    monkeypatch.setenv("S", json.dumps({"username": "esmd"}))
    with pytest.raises(SourceAuthError, match="BASIC_AUTH: the secret has no password"):
        await kafka_connection(config.mappings[0], config.aws)


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        ([{"Type": "SASL_SCRAM_512_AUTH", "URI": "env:S"}], ("scram:9096", "SASL_SSL")),
        ([{"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": "env:C"}], ("tls:9094", "SSL")),
        ([], ("iam:9098", "SASL_SSL")),
    ],
)
async def test_msk_broker_string_matches_the_auth(
    access: list[dict[str, Any]], expected: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda's rule: the SCRAM string for SCRAM, TLS for mTLS, else IAM when the cluster
    has it (moto has no GetBootstrapBrokers: a stand-in Kafka API answers)."""
    from tests.tls_material import client_secret, stranger_ca

    monkeypatch.setenv("S", json.dumps({"username": "u", "password": "p"}))
    monkeypatch.setenv("C", json.dumps(client_secret(stranger_ca())))

    async def brokers(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "bootstrapBrokerString": "plain:9092",
                "bootstrapBrokerStringTls": "tls:9094",
                "bootstrapBrokerStringSaslScram": "scram:9096",
                "bootstrapBrokerStringSaslIam": "iam:9098",
            }
        )

    app = web.Application()
    app.router.add_get("/v1/clusters/{arn}/bootstrap-brokers", brokers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        config = parse_config(
            {
                "aws": {"endpoints": {"kafka": f"http://127.0.0.1:{port}"}},
                "mappings": [msk(*access)],
            }
        )
        servers, auth = await kafka_connection(config.mappings[0], config.aws)
    finally:
        await runner.cleanup()
    assert (servers[0], auth.protocol) == expected
    if not access:
        assert auth.mechanism == "OAUTHBEARER" and isinstance(auth.token_provider, MskIamToken)


async def test_msk_iam_token_is_signed_by_the_signer() -> None:
    """The token aws-msk-iam-sasl-signer-python makes: a presigned kafka-cluster:Connect URL
    (a plain broker cannot check it; MSK does)."""
    token = await MskIamToken("eu-west-1").token()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    query = parse_qs(urlparse(url).query)
    assert urlparse(url).hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert "X-Amz-Signature" in query
