"""Where records given up on end up, read back by id (the JSON ``id`` of each record, as
service/devtools/sink.py counts them): a Kafka OnFailure destination topic, whose messages
carry the record's event as ``payload``, and an SQS dead-letter queue, whose messages are the
records themselves."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from service.devtools.sink import record_ids


async def kafka_topic_ids(bootstrap: str, topic: str) -> list[int]:
    """Every record id in a Kafka OnFailure destination topic (one message per record)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    ids: list[int] = []
    try:
        while batches := await consumer.getmany(timeout_ms=3000):
            for messages in batches.values():
                for m in messages:
                    ids += record_ids(orjson.loads(m.value)["payload"])
    finally:
        await consumer.stop()
    return ids


async def sqs_queue_ids(sqs: Any, url: str) -> list[int]:
    """Every id in a queue (a DLQ), received and deleted until it is empty."""
    ids: list[int] = []
    while True:
        reply = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = reply.get("Messages", [])
        if not messages:
            return ids
        ids += [int(orjson.loads(m["Body"])["id"]) for m in messages]
        entries = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
        ]
        await sqs.delete_message_batch(QueueUrl=url, Entries=entries)
