"""The Amazon MQ source on a real RabbitMQ (Debian's rabbitmq-server, unpacked: see
service/devtools/rabbitmq.py): order, Lambda's event shape (Powertools' RabbitMQEvent),
filtering, redelivery on a function error, poison messages to a dead-letter queue, a broker
restarted mid-run, wrong credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest
from aws_lambda_powertools.utilities.data_classes.rabbit_mq_event import RabbitMQEvent

from service.devtools import rabbitmq, servers
from service.devtools.servers import Server
from tests.integration import mq_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import client

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


async def remaining(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    """Messages in the queue, ready or not (a passive declare; nothing consumes it now)."""
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def test_filtered_out_messages_are_acknowledged(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-filter-{unique}", f"filter-{unique}"
    await channel.declare_queue(queue, durable=True)
    sent = [
        json.dumps({"kind": "keep" if i % 3 == 0 else "drop", "n": i}).encode() for i in range(60)
    ]
    await publish(channel, queue, [*sent, b"not json"])
    credentials(name)
    pattern = {"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]}
    cfg = config(rabbitmq_endpoint, name, queue, FilterCriteria=pattern)
    async with running_daemon(cfg) as daemon:
        await wait_for(lambda: len(bodies(name)) >= 20, 30, "the kept messages")
        mapping = daemon.mappings[0]
        await wait_for(
            lambda: mapping.poller is not None and mapping.poller.status()["acknowledged"] == 61,
            30,
            "every message acknowledged",
        )
    assert bodies(name) == [b for b in sent if b"keep" in b]
    assert await remaining(channel, queue) == 0


async def test_a_failed_batch_is_redelivered_marked_redelivered(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-redeliver-{unique}", f"redeliver-{unique}"
    await channel.declare_queue(queue, durable=True)
    sent = [f"m{i}".encode() for i in range(10)]
    await publish(channel, queue, sent)
    credentials(name)
    async with running_daemon(config(rabbitmq_endpoint, name, queue, "fail_first")):
        await wait_for(lambda: len(bodies(name)) >= 2 * len(sent), 30, "the batch twice")
    first, second = mq_handlers.events[name][:2]
    [failed] = first["rmqMessagesByQueue"].values()
    [again] = second["rmqMessagesByQueue"].values()
    assert [m["redelivered"] for m in failed] == [False] * len(sent)
    assert [m["redelivered"] for m in again] == [True] * len(sent)
    assert sorted(base64.b64decode(m["data"]) for m in again) == sorted(sent)
    assert await remaining(channel, queue) == 0


async def test_a_poison_message_ends_in_the_dead_letter_queue(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    """A quorum queue with a delivery limit dead-letters what keeps failing (docs/mq.md)."""
    name, queue, dlq = f"rmq-poison-{unique}", f"poison-{unique}", f"poison-dlq-{unique}"
    await channel.declare_queue(dlq, durable=True)
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": 2,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq,
    }
    await channel.declare_queue(queue, durable=True, arguments=arguments)
    good = [f"good-{i}".encode() for i in range(5)]
    await publish(channel, queue, [good[0], good[1], b"poison", *good[2:]])
    credentials(name)
    cfg = config(rabbitmq_endpoint, name, queue, "fail_on_poison", BatchSize=1)
    async with running_daemon(cfg):
        await wait_for(lambda: bodies(name).count(b"poison") >= 3, 30, "the poison, 3 times")
        await wait_for(lambda: set(good) <= set(bodies(name)), 30, "the good messages")
        dead = await channel.declare_queue(dlq, passive=True)
        message = await wait_for_message(dead)
    assert message.body == b"poison"
    assert await remaining(channel, queue) == 0


async def wait_for_message(
    queue: aio_pika.abc.AbstractQueue,
) -> aio_pika.abc.AbstractIncomingMessage:
    found: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            found.append(message)
        return bool(found)

    await wait_for(arrived, 30, f"a message in {queue.name}")
    return found[0]


def _reason(daemon: Any, name: str, code: str) -> float:
    labels = {"mapping": name, "source": "mq", "reason": code}
    return daemon.metrics.registry.get_sample_value("esm_state_reason", labels) or 0  # type: ignore[no-any-return]


async def test_a_wrong_password_is_event_source_authn_error(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-authn-{unique}", f"authn-{unique}"
    await channel.declare_queue(queue, durable=True)
    await publish(channel, queue, [b"kept for the right password"])
    credentials(name, json.dumps({"username": rabbitmq.USER, "password": "not-it"}))
    async with running_daemon(config(rabbitmq_endpoint, name, queue)) as daemon:
        await wait_for(
            lambda: _reason(daemon, name, "EVENT_SOURCE_AUTHN_ERROR") == 1, 30, "the authn reason"
        )
        status = daemon.mappings[0].status()
        assert status["state_reason"] == "EVENT_SOURCE_AUTHN_ERROR"
        assert "not-it" not in json.dumps(status)
    assert bodies(name) == []
    assert await remaining(channel, queue) == 1


#: the restart test's own node: the shared one is never stopped
PRIVATE_PORT = int(os.environ.get("ESMD_RABBITMQ_RESTART_PORT", "5682"))


@pytest.fixture(scope="module")
def private_broker() -> Iterator[Server]:
    server = servers.rabbitmq_server("rabbitmq-restart", PRIVATE_PORT)
    servers.ensure_server(server)
    try:
        yield server
    finally:
        servers.stop_server(server)


async def test_a_broker_restart_mid_run_loses_nothing(
    private_broker: Server, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-restart-{unique}", f"restart-{unique}"
    connection = await aio_pika.connect(amqp_url(private_broker.address))
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        sent = [f"r{i}".encode() for i in range(400)]
        await publish(channel, queue, sent)
    credentials(name)
    cfg = config(private_broker.address, name, queue, "slow_collect", BatchSize=10)
    async with running_daemon(cfg):
        await wait_for(lambda: len(bodies(name)) >= 50, 30, "a first part")
        await asyncio.to_thread(servers.stop_server, private_broker)
        seen = len(bodies(name))
        await asyncio.to_thread(servers.ensure_server, private_broker)
        await wait_for(lambda: set(bodies(name)) >= set(sent), 60, "every message after it")
    assert seen < len(sent), "the restart came after the end: make the function slower"
    connection = await aio_pika.connect(amqp_url(private_broker.address))
    async with connection:
        assert await remaining(await connection.channel(), queue) == 0


async def test_without_a_configured_endpoint_describe_broker_finds_it(
    moto_endpoint: str, unique: str, credentials: Any
) -> None:
    """On AWS: the engine and endpoints come from the MQ API (moto_server here; its broker's
    endpoint is not a real host, so the consumer keeps retrying it)."""
    async with client("mq", moto_endpoint) as api:
        created = await api.create_broker(
            BrokerName=f"esmd-{unique}",
            EngineType="RABBITMQ",
            EngineVersion="3.10.20",
            HostInstanceType="mq.m5.large",
            DeploymentMode="SINGLE_INSTANCE",
            PubliclyAccessible=False,
            AutoMinorVersionUpgrade=False,
            Users=[{"Username": "esmd", "Password": "not-used-here"}],
        )
        described = await api.describe_broker(BrokerId=created["BrokerId"])
    [endpoints] = [i["Endpoints"] for i in described["BrokerInstances"]]
    name = f"rmq-describe-{unique}"
    arn = f"arn:aws:mq:us-east-1:123456789012:broker:esmd-{unique}:{created['BrokerId']}"
    cfg = config("unused", name, "q")
    del cfg["mq"]
    cfg["aws"] = {"endpoint_url": moto_endpoint}
    cfg["mappings"][0]["EventSourceArn"] = arn
    credentials(name)
    async with running_daemon(cfg) as daemon:
        mapping = daemon.mappings[0]
        await wait_for(
            lambda: mapping.poller is not None and mapping.poller.status()["endpoints"],
            30,
            "the broker's endpoints",
        )
        assert mapping.poller is not None
        assert mapping.poller.status()["endpoints"] == [
            e for e in endpoints if e.startswith("amqp")
        ]


async def test_a_deleted_queue_cancels_the_consumer_which_comes_back_when_it_does(
    channel: aio_pika.abc.AbstractChannel, rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name, queue = f"rmq-deleted-{unique}", f"deleted-{unique}"
    declared = await channel.declare_queue(queue, durable=True)
    await publish(channel, queue, [b"before"])
    credentials(name)
    async with running_daemon(config(rabbitmq_endpoint, name, queue)) as daemon:
        await wait_for(lambda: bodies(name) == [b"before"], 30, "the first message")
        await declared.delete(if_unused=False, if_empty=False)
        polling = {"mapping": name, "source": "mq", "kind": "polling"}
        errors = daemon.metrics.registry.get_sample_value
        await wait_for(lambda: (errors("esm_errors_total", polling) or 0) >= 1, 30, "the loss")
        await channel.declare_queue(queue, durable=True)
        await publish(channel, queue, [b"after"])
        await wait_for(lambda: bodies(name) == [b"before", b"after"], 30, "the second message")


async def test_a_virtual_host_refused_is_event_source_authz_error(
    rabbitmq_endpoint: str, unique: str, credentials: Any
) -> None:
    name = f"rmq-authz-{unique}"
    cfg = config(rabbitmq_endpoint, name, "q")
    cfg["mappings"][0]["SourceAccessConfigurations"][1]["URI"] = f"no-such-vhost-{unique}"
    credentials(name)
    async with running_daemon(cfg) as daemon:
        await wait_for(
            lambda: _reason(daemon, name, "EVENT_SOURCE_AUTHZ_ERROR") == 1, 30, "the authz reason"
        )
