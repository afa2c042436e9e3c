"""SQS destination: the invocation record (metadata only, as AWS sends to SQS) as one message."""

from __future__ import annotations

from typing import Any

import orjson

from service.arns import require_arn
from service.aws import destination_client
from service.destinations import DestinationContext, FailedBatch
from service.destinations.records import kafka_batch_record, shard_of, stream_batch_record


def batch_record(batch: FailedBatch, *, payload: bool) -> dict[str, Any]:
    """The batch-level invocation record of the source kind (SQS, SNS, S3 destinations)."""
    now = batch.at
    if batch.source.kind == "kafka":
        return kafka_batch_record(
            batch.records, batch.failure, batch.source, payload=payload, now=now
        )
    shard = shard_of(batch.records, batch.shard_id)
    return stream_batch_record(
        batch.records, batch.failure, batch.source, shard, payload=payload, now=now
    )


class SqsDestination:
    def __init__(self, arn: str, context: DestinationContext) -> None:
        parts = require_arn(arn)
        self.name = arn
        self._account, self._queue = parts.account, parts.resource
        self._client = destination_client(context.aws, "sqs", parts.region)
        self._url: str | None = None

    async def open(self) -> None:
        await self._client.get()

    async def send(self, batch: FailedBatch) -> None:
        sqs = await self._client.get()
        if self._url is None:
            resp = await sqs.get_queue_url(
                QueueName=self._queue, QueueOwnerAWSAccountId=self._account
            )
            self._url = resp["QueueUrl"]
        body = orjson.dumps(batch_record(batch, payload=False)).decode()
        await sqs.send_message(QueueUrl=self._url, MessageBody=body)

    async def close(self) -> None:
        await self._client.close()
