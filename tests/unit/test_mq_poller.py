"""The shared Amazon MQ poller (service/sources/mq.py) with an in-memory engine that keeps
AMQP's rules: prefetch, ack, nack with requeue (marked redelivered), and a lost connection
returning everything unacknowledged. The real broker: tests/integration/test_mq_rabbit.py."""

from __future__ import annotations

import asyncio
import base64
import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from service.errors import SourceAuthError
from service.sources import mq
from service.sources.mq import Broker, Deliver
from tests.integration.kafka_helpers import running_daemon, wait_for

ARN = "arn:aws:mq:us-east-1:123456789012:broker:fake:b-00000000-0000-0000-0000-000000000001"
events: list[dict[str, Any]] = []


@dataclass
class Delivery:
    tag: int
    body: bytes
    redelivered: bool


class Queue:
    """The broker's one queue."""

    def __init__(self) -> None:
        self.ready: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.acked: list[bytes] = []
        self.changed = asyncio.Event()
        self.connections = 0
        self.live: FakeConsumer | None = None
        self.tags = 0


QUEUE = Queue()


class FakeEngine:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.endpoints = broker.endpoints

    def consumer(self, endpoint: str) -> FakeConsumer:
        return FakeConsumer(self._broker)

    def record(self, delivery: Delivery) -> dict[str, Any]:
        data = base64.b64encode(delivery.body).decode()
        return {"messageID": str(delivery.tag), "redelivered": delivery.redelivered, "data": data}

    def make_event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"eventSource": "fake", "messages": records}


class FakeConsumer:
    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.unacked: dict[int, Delivery] = {}
        self.lost = False

    async def connect(self) -> None:
        if self._broker.password != "right":
            raise SourceAuthError("the fake broker refused the password")
        QUEUE.connections += 1

    async def consume(self, prefetch: int, deliver: Deliver) -> None:
        QUEUE.live = self
        while not self.lost:
            while len(self.unacked) < prefetch and QUEUE.ready:
                body, redelivered = QUEUE.ready.popleft()
                QUEUE.tags += 1
                delivery = self.unacked[QUEUE.tags] = Delivery(QUEUE.tags, body, redelivered)
                deliver(delivery)
            QUEUE.changed.clear()
            await QUEUE.changed.wait()
        raise ConnectionError("connection lost")

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        for d in deliveries:
            if not self.lost and self.unacked.pop(d.tag, None) is not None:
                QUEUE.acked.append(d.body)
        QUEUE.changed.set()

    async def nack(self, deliveries: Sequence[Delivery]) -> None:
        for d in reversed(deliveries):
            if not self.lost and self.unacked.pop(d.tag, None) is not None:
                QUEUE.ready.appendleft((d.body, True))
        QUEUE.changed.set()

    def drop(self) -> None:
        """The connection is lost: the broker takes back what was not acknowledged."""
        if self.lost:
            return
        self.lost = True
        for d in sorted(self.unacked.values(), key=lambda d: d.tag, reverse=True):
            QUEUE.ready.appendleft((d.body, True))
        self.unacked.clear()
        QUEUE.changed.set()

    async def close(self) -> None:
        self.drop()


def collect(event: dict[str, Any], context: Any) -> None:
    """Keep the event; fail it when it holds ``fail`` delivered for the first time."""
    events.append(event)
    messages = event["messages"]
    if any(base64.b64decode(m["data"]) == b"fail" and not m["redelivered"] for m in messages):
        raise ValueError("fail")


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    global QUEUE
    QUEUE = Queue()
    events.clear()
    monkeypatch.setitem(mq.ENGINES, "rabbitmq", f"{__name__}:FakeEngine")
    monkeypatch.setenv("ESMD_TEST_FAKE_MQ", '{"username": "u", "password": "right"}')


def config(**mapping: Any) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 2},
        "mq": {"brokers": {ARN: {"engine": "rabbitmq", "endpoints": ["amqp://fake:1"]}}},
        "functions": {"fn": {"python": f"{__name__}:collect"}},
        "mappings": [
            {
                "Name": "fake",
                "EventSourceArn": ARN,
                "Queues": ["q"],
                "FunctionName": "fn",
                "MaximumBatchingWindowInSeconds": 0,
                "SourceAccessConfigurations": [
                    {"Type": "BASIC_AUTH", "URI": "env:ESMD_TEST_FAKE_MQ"}
                ],
                **mapping,
            }
        ],
    }


def delivered() -> list[tuple[bytes, bool]]:
    return [(base64.b64decode(m["data"]), m["redelivered"]) for e in events for m in e["messages"]]


async def test_success_acks_and_a_failed_batch_comes_back_whole_marked_redelivered() -> None:
    QUEUE.ready.extend((b, False) for b in (b"a", b"fail", b"b", b"c"))
    async with running_daemon(config(BatchSize=2)):
        await wait_for(lambda: len(QUEUE.acked) == 4, 5, "every message acked")
    # prefetch 4 (BatchSize x (concurrency 1 + 1)): b and c were already here
    assert delivered() == [
        (b"a", False),
        (b"fail", False),  # fails: both go back
        (b"b", False),
        (b"c", False),
        (b"a", True),
        (b"fail", True),
    ]
    assert QUEUE.acked == [b"b", b"c", b"a", b"fail"]


async def test_filtered_out_messages_are_acked_without_an_invocation() -> None:
    QUEUE.ready.extend((b, False) for b in (b'{"k": 1}', b'{"k": 2}', b"text"))
    pattern = {"Filters": [{"Pattern": '{"data": {"k": [2]}}'}]}
    async with running_daemon(config(FilterCriteria=pattern)):
        await wait_for(lambda: len(QUEUE.acked) == 3, 5, "every message acked")
    assert delivered() == [(b'{"k": 2}', False)]


async def test_a_lost_connection_reconnects_and_redelivers_what_was_unacked() -> None:
    QUEUE.ready.extend((f"m{i}".encode(), False) for i in range(5))
    async with running_daemon(config(BatchSize=100, MaximumBatchingWindowInSeconds=1)):
        await wait_for(lambda: QUEUE.live is not None and len(QUEUE.live.unacked) == 5, 5, "held")
        assert QUEUE.live is not None
        QUEUE.live.drop()  # before the window closes: the batch is not invoked yet
        await wait_for(lambda: QUEUE.connections >= 2, 5, "a second connection")
        await wait_for(lambda: len(QUEUE.acked) == 5, 5, "every message acked")
    assert sorted(QUEUE.acked) == [f"m{i}".encode() for i in range(5)]
    assert [r for _, r in delivered()][-5:] == [True] * 5


async def test_a_refused_password_is_the_state_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESMD_TEST_FAKE_MQ", '{"username": "u", "password": "wrong"}')
    QUEUE.ready.append((b"x", False))
    async with running_daemon(config()) as daemon:
        mapping = daemon.mappings[0]
        await wait_for(
            lambda: mapping.status()["state_reason"] == "EVENT_SOURCE_AUTHN_ERROR", 5, "the reason"
        )
    assert QUEUE.acked == [] and events == []
