"""Kafka topic destination (``kafka://<topic>``): one message per failed record, on the
source's own cluster, keyed by the record's original key as AWS does (a record without a key
is spread by the producer's default partitioner). The value is the invocation record with
``payload``, the event of that one record, as a JSON object. It connects as the mapping's
source does (SourceAccessConfigurations: the same SASL credentials, certificates and CA).

Every message of a batch is acknowledged by the brokers (acks=all) before the send counts;
a retried send may write a record twice, the at-least-once price of never losing one.
"""

from __future__ import annotations

import asyncio
import base64

import orjson
from aiokafka import AIOKafkaProducer

from service.arns import KAFKA_PREFIX
from service.destinations import DestinationContext, FailedBatch
from service.destinations.records import kafka_record_messages


class KafkaDestination:
    def __init__(self, destination: str, context: DestinationContext) -> None:
        self.name = destination
        self.topic = destination[len(KAFKA_PREFIX) :]
        self._context = context
        self._producer: AIOKafkaProducer | None = None

    async def open(self) -> None:
        """Connects at the first send: a broker that is down at start is retried there."""

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._context.bootstrap_servers,
                acks="all",
                client_id="esmd-on-failure",
                **self._context.kafka_client,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def send(self, batch: FailedBatch) -> None:
        if batch.source.kind != "kafka":
            raise ValueError("a Kafka topic destination takes Kafka records only")
        producer = await self._started()
        sent = []
        for record, message in kafka_record_messages(
            batch.records, batch.failure, batch.source, now=batch.at
        ):
            key = record.get("key")
            sent.append(
                await producer.send(
                    self.topic,
                    orjson.dumps(message),
                    key=base64.b64decode(key) if key is not None else None,
                )
            )
        await asyncio.gather(*sent)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
