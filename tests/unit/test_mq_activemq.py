"""ActiveMQ's STOMP MESSAGE frames as Lambda's ActiveMQ records (service.sources.mq_activemq)."""

from __future__ import annotations

import base64

from aws_lambda_powertools.utilities.data_classes.active_mq_event import ActiveMQEvent

from service.sources.mq import Broker
from service.sources.mq_activemq import ActiveMqEngine, lambda_message

#: a text message as ActiveMQ 6.2 sends it over STOMP (headers copied from the local broker)
TEXT_HEADERS = {
    "message-id": "ID:vm-34637-1796033548532-3:2:-1:1:1",
    "destination": "/queue/orders",
    "subscription": "12f21505",
    "ack": "ID:vm-34637-1796033548532-4:1",
    "expires": "0",
    "priority": "7",
    "timestamp": "1796033552475",
    "persistent": "true",
    "correlation-id": "c1",
    "reply-to": "/queue/replies",
    "type": "order",
    "amq-msg-type": "text",
    "myProp": "x",
}


def test_a_text_message_has_every_field_lambda_renders_in_its_order() -> None:
    record = lambda_message(TEXT_HEADERS, b'{"a": 1}', 1796033552480)
    assert list(record) == [
        "messageID", "messageType", "timestamp", "deliveryMode", "correlationID", "replyTo",
        "destination", "redelivered", "type", "expiration", "priority", "data", "brokerInTime",
        "brokerOutTime", "properties",
    ]  # fmt: skip
    assert record["messageType"] == "jms/text-message"
    assert record["deliveryMode"] == 2
    assert record["replyTo"] == "queue://replies"
    assert record["destination"] == {"physicalName": "orders"}
    assert (record["priority"], record["expiration"], record["type"]) == (7, 0, "order")
    assert base64.b64decode(record["data"]) == b'{"a": 1}'
    assert (record["brokerInTime"], record["brokerOutTime"]) == (1796033552475, 1796033552480)
    assert record["properties"] == {"myProp": "x"}  # STOMP's and JMS's own headers left out


def test_a_bytes_message_is_marked_by_its_content_length_and_bare_fields_are_lambdas() -> None:
    headers = {
        "message-id": "ID:1",
        "destination": "/queue/q",
        "content-length": "2",
        "expires": "0",
        "priority": "4",
        "timestamp": "1",
        "redelivered": "true",
        "redeliveryDelay": "1000",
        "scheduledJobId": "ID:x",
    }
    record = lambda_message(headers, b"\x00\x01", 2)
    assert record["messageType"] == "jms/bytes-message"
    assert record["deliveryMode"] == 1
    assert record["redelivered"] is True
    # as in an event captured from Lambda: no correlation id or type "", no reply-to "null"
    assert (record["correlationID"], record["type"], record["replyTo"]) == ("", "", "null")
    assert record["properties"] is None  # the redelivery plugin's bookkeeping is not one


def test_the_event_reads_through_powertools_activemq_event() -> None:
    event = ActiveMQEvent(
        {
            "eventSource": "aws:mq",
            "eventSourceArn": "arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
            "messages": [lambda_message(TEXT_HEADERS, b'{"a": 1}', 1796033552480)],
        }
    )
    message = event.message
    assert message.json_data == {"a": 1}
    assert message.destination_physicalname == "orders"
    assert message.message_type == "jms/text-message"
    assert message.broker_out_time == 1796033552480


def test_a_stomp_producers_amq_msg_type_wins_over_the_content_length_it_left() -> None:
    # ActiveMQ keeps both headers of a STOMP SEND "amq-msg-type: text" with a content-length
    headers = {"message-id": "ID:1", "content-length": "2", "amq-msg-type": "text"}
    assert lambda_message(headers, b"hi", 0)["messageType"] == "jms/text-message"
    assert lambda_message({**headers, "amq-msg-type": "bytes"}, b"hi", 0)["messageType"] == (
        "jms/bytes-message"
    )


def test_the_engine_keeps_the_stomp_endpoints_of_those_amazon_mq_lists() -> None:
    listed = (  # DescribeBroker's Endpoints of an ActiveMQ instance, every protocol's
        "ssl://b-1.mq.us-east-1.amazonaws.com:61617",
        "amqp+ssl://b-1.mq.us-east-1.amazonaws.com:5671",
        "stomp+ssl://b-1.mq.us-east-1.amazonaws.com:61614",
        "mqtt+ssl://b-1.mq.us-east-1.amazonaws.com:8883",
        "wss://b-1.mq.us-east-1.amazonaws.com:61619",
        "stomp://127.0.0.1:61613",
    )
    broker = Broker("arn:aws:mq:us-east-1:0:broker:b:b-1", "activemq", listed, "q", "/", "u", "p")
    assert ActiveMqEngine(broker).endpoints == (
        "stomp+ssl://b-1.mq.us-east-1.amazonaws.com:61614",
        "stomp://127.0.0.1:61613",
    )
