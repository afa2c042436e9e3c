"""The Amazon MQ source on a real RabbitMQ (Debian's rabbitmq-server, unpacked: see
service/devtools/rabbitmq.py): order, Lambda's event shape (Powertools' RabbitMQEvent),
filtering, redelivery on a function error, poison messages to a dead-letter queue, a broker
restarted mid-run, wrong credentials."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import RabbitMQEvent

from service.devtools import rabbitmq
from tests.integration import mq_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for

pytestmark = pytest.mark.integration
ARN = "arn:aws:mq:us-east-1:123456789012:broker:esmd-test:b-0f3c2a1e-8d6b-4f2a-9c1e-1234567890ab"
CREDENTIALS = json.dumps({"username": rabbitmq.USER, "password": rabbitmq.PASSWORD})


def amqp_url(endpoint: str, vhost: str = rabbitmq.VHOST) -> str:
    host = endpoint.removeprefix("amqp://")
    return f"amqp://{rabbitmq.USER}:{rabbitmq.PASSWORD}@{host}/{vhost.replace('/', '%2F')}"


@pytest.fixture
async def channel(rabbitmq_endpoint: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url(rabbitmq_endpoint))
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def config(
    endpoint: str, name: str, queue: str, handler: str = "collect", **mapping: Any
) -> dict[str, Any]:
    return {
        "mq": {"brokers": {ARN: {"engine": "rabbitmq", "endpoints": [endpoint]}}},
        "functions": {name: {"python": f"tests.integration.mq_handlers:{handler}"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": ARN,
                "Queues": [queue],
                "FunctionName": name,
                "SourceAccessConfigurations": [
                    {"Type": "BASIC_AUTH", "URI": f"env:ESMD_TEST_MQ_{name.replace('-', '_')}"},
                    {"Type": "VIRTUAL_HOST", "URI": rabbitmq.VHOST},
                ],
                **mapping,
            }
        ],
    }


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets the BASIC_AUTH secret of a mapping (config() names its variable)."""

    def put(name: str, secret: str = CREDENTIALS) -> None:
        monkeypatch.setenv(f"ESMD_TEST_MQ_{name.replace('-', '_')}", secret)

    return put


async def publish(
    channel: aio_pika.abc.AbstractChannel, queue: str, bodies: list[bytes], **props: Any
) -> None:
    for body in bodies:
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props)
        await channel.default_exchange.publish(message, routing_key=queue)


def bodies(name: str) -> list[bytes]:
    return [
        base64.b64decode(m["data"])
        for event in mq_handlers.events[name]
        for messages in event["rmqMessagesByQueue"].values()
        for m in messages
    ]


async def test_in_order_in_lambdas_event_shape(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-order-{unique}", f"orders-{unique}"
    await channel.declare_queue(queue, durable=True)
    sent = [json.dumps({"n": i}).encode() for i in range(250)]
    await publish(
        channel,
        queue,
        sent,
        content_type="application/json",
        headers={"header1": "value1", "numberInHeader": 10},
        priority=3,
        message_id="m-1",
    )
    credentials(name)
    async with running_daemon(config(rabbitmq_endpoint, name, queue, BatchSize=100)):
        await wait_for(lambda: len(bodies(name)) >= len(sent), 30, "every message")
    assert bodies(name) == sent
    event = mq_handlers.events[name][0]
    assert list(event) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
    assert (event["eventSource"], event["eventSourceArn"]) == ("aws:rmq", ARN)
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::{rabbitmq.VHOST}"]
    parsed = RabbitMQEvent(event)
    assert parsed.event_source == "aws:rmq" and parsed.event_source_arn == ARN
    [messages] = parsed.rmq_messages_by_queue.values()
    first = messages[0]
    assert first.json_data == {"n": 0} and first.redelivered is False
    props = first.basic_properties
    assert props.content_type == "application/json" and props.content_encoding is None
    assert props.headers == {
        "header1": {"bytes": [118, 97, 108, 117, 101, 49]},
        "numberInHeader": 10,
    }
    assert (props.delivery_mode, props.priority, props.message_id) == (2, 3, "m-1")
    assert props.body_size == len(sent[0])
    absent = ("correlationId", "replyTo", "expiration", "timestamp", "type", "userId", "appId")
    assert [first["basicProperties"][key] for key in absent] == [None] * len(absent)
    assert props.cluster_id == ""  # aio-pika sends an empty cluster-id
