"""Amazon MQ mappings: AWS's rules and defaults; the RabbitMQ engine's rendering of a message
as Lambda does (the broker itself: tests/integration/test_mq_rabbit.py)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands
from pamqp.header import ContentHeader

from service.config import ConfigError, SourceKind, parse_config
from service.sources import SOURCES
from service.sources.mq import Broker
from service.sources.mq_rabbit import RabbitEngine, connection_url, header_value, java_date

ARN = "arn:aws:mq:us-east-1:123456789012:broker:orders:b-1234a5b6-78cd-901e-2fgh-3i45j6k178l9"
RABBIT = {
    "Name": "orders",
    "EventSourceArn": ARN,
    "Queues": ["orders"],
    "FunctionName": "fn",
    "SourceAccessConfigurations": [
        {"Type": "BASIC_AUTH", "URI": "arn:aws:secretsmanager:us-east-1:123456789012:secret:mq"},
        {"Type": "VIRTUAL_HOST", "URI": "esmd"},
    ],
}


def _problems(mapping: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [mapping]})
    return [f"{p.field}: {p.message}" for p in info.value.problems]


def test_aws_defaults_and_limits() -> None:
    m = parse_config({"mappings": [RABBIT]}).mappings[0]
    assert m.source_kind is SourceKind.MQ
    assert (m.batch_size, m.batching_window_seconds) == (100, 0.5)
    entry = SOURCES[SourceKind.MQ]
    assert entry.redelivery and not entry.destinations and entry.oversize == "skip"
    assert parse_config({"mappings": [{**RABBIT, "BatchSize": 10000}]})
    assert any(p.startswith("BatchSize") for p in _problems({**RABBIT, "BatchSize": 10001}))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"Queues": None}, "Queues"),
        ({"Queues": ["a", "b"]}, "Queues"),
        ({"SourceAccessConfigurations": []}, "SourceAccessConfigurations"),
        ({"SourceAccessConfigurations": [{"Type": "SASL_SCRAM_512_AUTH", "URI": "env:X"}]}, "Type"),
        ({"EventSourceArn": ARN.replace("broker:orders", "configuration")}, "EventSourceArn"),
        ({"StartingPosition": "LATEST"}, "StartingPosition"),
        ({"MaximumRetryAttempts": 3}, "MaximumRetryAttempts"),
        ({"FunctionResponseTypes": ["ReportBatchItemFailures"]}, "FunctionResponseTypes"),
        ({"BisectBatchOnFunctionError": True}, "BisectBatchOnFunctionError"),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}}},
            "DestinationConfig.OnFailure.Destination",
        ),
        ({"Topics": ["t"]}, "Topics"),
    ],
)
def test_refused_as_aws_refuses(change: dict[str, Any], field: str) -> None:
    problems = _problems({**RABBIT, **change})
    assert any(field in p for p in problems), problems


def test_brokers_are_found_by_arn_or_name() -> None:
    config = parse_config(
        {
            "mq": {"brokers": {"orders": {"engine": "rabbitmq", "endpoints": ["amqp://h:5672"]}}},
            "mappings": [RABBIT],
        }
    )
    assert config.mq.broker_for(ARN) is config.mq.brokers["orders"]
    assert config.mq.broker_for(ARN.replace("orders", "other")) is None
    with pytest.raises(ConfigError, match="holds no credentials"):
        parse_config(
            {"mq": {"brokers": {"b": {"engine": "rabbitmq", "endpoints": ["amqp://u:p@h:1"]}}}}
        )


def test_java_date_is_gsons_default_in_utc() -> None:
    epoch = datetime.datetime(1970, 1, 1, 0, 33, 41, tzinfo=datetime.UTC)
    assert java_date(epoch) == "Jan 1, 1970, 12:33:41 AM"
    assert java_date(datetime.datetime(2026, 11, 30, 13, 5, 9)) == "Nov 30, 2026, 1:05:09 PM"


def test_headers_as_the_java_client_and_gson_render_them() -> None:
    headers = {
        "header1": "value1",
        "n": 10,
        "é": "é",
        "flag": True,
        "d": Decimal("1.5"),
        "raw": bytearray(b"\xff\x01"),
        "nested": {"list": ["a", 1]},
    }
    assert header_value(headers) == {
        "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
        "n": 10,
        "é": {"bytes": [-61, -87]},
        "flag": True,
        "d": 1.5,
        "raw": [-1, 1],
        "nested": {"list": [{"bytes": [97]}, 1]},
    }


def _message(body: bytes, redelivered: bool, **properties: Any) -> DeliveredMessage:
    props = commands.Basic.Properties(**properties)
    return DeliveredMessage(
        delivery=commands.Basic.Deliver("ctag", 7, redelivered, "", "orders"),
        header=ContentHeader(body_size=len(body), properties=props),
        body=body,
        channel=None,  # type: ignore[arg-type]
    )


def test_a_message_as_lambdas_rabbitmq_record_and_event() -> None:
    broker = Broker(ARN, "rabbitmq", ("amqp://h:1", "stomp://h:2"), "orders", "/", "u", "p")
    engine = RabbitEngine(broker)
    assert engine.endpoints == ("amqp://h:1",)
    record = engine.record(_message(b'{"a":1}', True, content_type="text/plain", priority=3))
    assert record["redelivered"] is True and record["data"] == "eyJhIjoxfQ=="
    props = record["basicProperties"]
    assert list(props) == [
        "contentType",
        "contentEncoding",
        "headers",
        "deliveryMode",
        "priority",
        "correlationId",
        "replyTo",
        "expiration",
        "messageId",
        "timestamp",
        "type",
        "userId",
        "appId",
        "clusterId",
        "bodySize",
    ]
    assert (props["contentType"], props["priority"], props["bodySize"]) == ("text/plain", 3, 7)
    assert props["headers"] is None and props["contentEncoding"] is None
    event = engine.make_event([record])
    assert event == {
        "eventSource": "aws:rmq",
        "eventSourceArn": ARN,
        "rmqMessagesByQueue": {"orders::/": [record]},
    }


def test_the_connection_url_quotes_credentials_and_vhost() -> None:
    broker = Broker(ARN, "rabbitmq", (), "q", "/", "us er", "p@ss:/")
    assert connection_url("amqps://h:5671", broker) == "amqps://us%20er:p%40ss%3A%2F@h:5671/%2F"
