"""The Amazon MQ source on a real ActiveMQ Classic broker (service/devtools/
EsmdActiveMQBroker.java, over STOMP): order, filtering, redelivery on a function error, a
poison message in the dead-letter queue after the broker's 5 redeliveries, a broker restarted
mid-run, a refused password, a queue the user may not read, and Lambda's event shape."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.active_mq_event import ActiveMQEvent

from tests.integration import activemq_handlers as handlers
from tests.integration.activemq_helpers import ARN, mq_config, private_broker, receive, send
from tests.integration.kafka_helpers import running_daemon, wait_for

pytestmark = pytest.mark.integration
#: the local broker's redelivery policy (EsmdActiveMQBroker.java)
MAXIMUM_REDELIVERIES = 5


def _json(*items: dict[str, Any]) -> list[bytes]:
    return [json.dumps(item).encode() for item in items]


def _state_reason(daemon: Any, name: str, code: str) -> float:
    labels = {"mapping": name, "source": "mq", "reason": code}
    return daemon.metrics.registry.get_sample_value("esm_state_reason", labels) or 0  # type: ignore[no-any-return]


async def test_messages_in_queue_order_in_lambdas_event_shape(
    activemq_endpoint: str, unique: str
) -> None:
    queue, name = f"orders-{unique}", f"amq-order-{unique}"
    await send(activemq_endpoint, queue, _json(*({"n": n} for n in range(30))))
    await send(
        activemq_endpoint,
        queue,
        [b"\x00\x01binary"],
        text=False,
        headers={"correlation-id": "c-1", "reply-to": "/queue/replies", "type": "t", "k": "v"},
    )
    cfg = mq_config(activemq_endpoint, name, queue, "collect", BatchSize=8)
    async with running_daemon(cfg):
        await wait_for(lambda: len(handlers.messages(name)) >= 31, 30, "31 messages")
    texts, last = handlers.messages(name)[:30], handlers.messages(name)[30]
    assert [json.loads(_data(m)) for m in texts] == [{"n": n} for n in range(30)]
    assert all(len(e["messages"]) <= 8 for e in handlers.events[name])
    for raw in handlers.events[name]:
        assert list(raw) == ["eventSource", "eventSourceArn", "messages"]
        event = ActiveMQEvent(raw)
        assert (event.event_source, event.event_source_arn) == ("aws:mq", ARN)
        for m in event.messages:  # every field Powertools reads, with Lambda's types
            assert m.message_id.startswith("ID:")
            assert m.destination_physicalname == queue
            assert m.redelivered is False
            assert m.delivery_mode == 2  # persistent
            assert isinstance(m.timestamp, int) and isinstance(m.expiration, int)
            assert m.broker_in_time <= m.broker_out_time
            assert isinstance(m.priority, int) and isinstance(m.get_type, str)
            assert isinstance(m.correlation_id, str) and isinstance(m.reply_to, str)
    assert {m["messageType"] for m in texts} == {"jms/text-message"}
    assert (texts[0]["properties"], texts[0]["replyTo"], texts[0]["correlationID"]) == (
        None,
        "null",
        "",
    )
    assert last["messageType"] == "jms/bytes-message"
    assert (last["correlationID"], last["replyTo"], last["type"]) == ("c-1", "queue://replies", "t")
    assert last["properties"] == {"k": "v"}
    assert ActiveMQEvent({"messages": [last]}).message.data == "AAFiaW5hcnk="
    assert await receive(activemq_endpoint, queue, 1, timeout=1) == []  # all acknowledged


async def test_filter_on_data_and_filtered_out_messages_are_acknowledged(
    activemq_endpoint: str, unique: str
) -> None:
    queue, name = f"filter-{unique}", f"amq-filter-{unique}"
    await send(
        activemq_endpoint, queue, _json(*({"kind": k, "n": n} for n, k in enumerate("ab" * 10)))
    )
    await send(activemq_endpoint, queue, [b"not json"])
    cfg = mq_config(
        activemq_endpoint,
        name,
        queue,
        "collect",
        FilterCriteria={"Filters": [{"Pattern": '{"data": {"kind": ["a"]}}'}]},
    )
    async with running_daemon(cfg) as daemon:
        await wait_for(lambda: len(handlers.messages(name)) >= 10, 30, "the ten kept messages")
        metrics = daemon.metrics.registry
        labels = {"mapping": name, "source": "mq"}
        await wait_for(
            lambda: metrics.get_sample_value("esm_filtered_out_events_total", labels) == 11,
            10,
            "eleven filtered out",
        )
    assert handlers.payloads(name) == [{"kind": "a", "n": n} for n in range(0, 20, 2)]
    assert await receive(activemq_endpoint, queue, 1, timeout=1) == []


async def test_a_function_error_sends_the_batch_back_and_it_returns_redelivered(
    activemq_endpoint: str, unique: str
) -> None:
    queue, name = f"retry-{unique}", f"amq-retry-{unique}"
    await send(activemq_endpoint, queue, _json(*({"n": n} for n in range(3))))
    cfg = mq_config(activemq_endpoint, name, queue, "fail_first_time", BatchSize=10)
    async with running_daemon(cfg):
        await wait_for(
            lambda: sum(m["redelivered"] for m in handlers.messages(name)) >= 3,
            30,
            "the three messages redelivered",
        )
    seen = handlers.messages(name)
    first = [m for m in seen if not m["redelivered"]]
    again = [m for m in seen if m["redelivered"]]
    assert sorted(json.loads(_data(m))["n"] for m in first) == [0, 1, 2]
    assert sorted(json.loads(_data(m))["n"] for m in again) == [0, 1, 2]
    assert {m["messageID"] for m in first} == {m["messageID"] for m in again}
    assert await receive(activemq_endpoint, queue, 1, timeout=1) == []  # acknowledged then


async def test_a_poison_message_ends_in_the_dead_letter_queue_after_5_redeliveries(
    activemq_endpoint: str, unique: str
) -> None:
    queue, name = f"poison-{unique}", f"amq-poison-{unique}"
    await send(activemq_endpoint, queue, _json({"n": 1}, {"poison": True}, {"n": 2}))
    cfg = mq_config(activemq_endpoint, name, queue, "fail_poison", BatchSize=1)
    async with running_daemon(cfg):
        dead = await receive(activemq_endpoint, f"DLQ.{queue}", 1, timeout=60)
    assert [json.loads(frame.body) for frame in dead] == [{"poison": True}]
    poison = [m for m in handlers.messages(name) if json.loads(_data(m)).get("poison")]
    assert len(poison) == 1 + MAXIMUM_REDELIVERIES
    assert [m["redelivered"] for m in poison] == [False] + [True] * MAXIMUM_REDELIVERIES
    assert {"n": 1} in handlers.payloads(name) and {"n": 2} in handlers.payloads(name)


async def test_a_broker_restarted_mid_run_loses_nothing(unique: str, tmp_path: Path) -> None:
    queue, name, count = f"restart-{unique}", f"amq-restart-{unique}", 600
    with private_broker(tmp_path / "activemq") as broker:
        await send(broker.endpoint, queue, _json(*({"n": n} for n in range(count))))
        cfg = mq_config(broker.endpoint, name, queue, "slow_collect", BatchSize=10)
        async with running_daemon(cfg):
            await wait_for(lambda: len(handlers.messages(name)) >= count // 5, 30, "a fifth")
            broker.stop()
            assert len({p["n"] for p in handlers.payloads(name)}) < count, "over before the stop"
            broker.start()
            await wait_for(
                lambda: {p["n"] for p in handlers.payloads(name)} == set(range(count)),
                60,
                "every message after the restart",
            )
        assert await receive(broker.endpoint, queue, 1, timeout=1) == []


async def test_a_wrong_password_is_the_mappings_authn_state_reason(
    activemq_endpoint: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, name = f"auth-{unique}", f"amq-auth-{unique}"
    monkeypatch.setenv(f"AMQ_WRONG_{unique}", json.dumps({"username": "esmd", "password": "no"}))
    await send(activemq_endpoint, queue, _json({"n": 1}))
    cfg = mq_config(
        activemq_endpoint,
        name,
        queue,
        "collect",
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": f"env:AMQ_WRONG_{unique}"}],
    )
    async with running_daemon(cfg) as daemon:
        await wait_for(
            lambda: _state_reason(daemon, name, "EVENT_SOURCE_AUTHN_ERROR") == 1,
            30,
            "EVENT_SOURCE_AUTHN_ERROR",
        )
        status = daemon.mappings[0].status()
        assert status["state_reason"] == "EVENT_SOURCE_AUTHN_ERROR"
        assert '"no"' not in json.dumps(status)
    assert handlers.messages(name) == []
    assert len(await receive(activemq_endpoint, queue, 1, timeout=5)) == 1  # still there


async def test_a_queue_the_user_may_not_read_is_the_mappings_authz_state_reason(
    activemq_endpoint: str, unique: str
) -> None:
    queue, name = f"forbidden.{unique}", f"amq-authz-{unique}"  # the broker refuses forbidden.*
    await send(activemq_endpoint, queue, _json({"n": 1}))
    cfg = mq_config(activemq_endpoint, name, queue, "collect")
    async with running_daemon(cfg) as daemon:
        await wait_for(
            lambda: _state_reason(daemon, name, "EVENT_SOURCE_AUTHZ_ERROR") == 1,
            30,
            "EVENT_SOURCE_AUTHZ_ERROR",
        )
        assert "not authorized to read" in daemon.mappings[0].status()["last_error"]
    assert handlers.messages(name) == []


def _data(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["data"])
