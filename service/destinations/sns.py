"""SNS destination: the invocation record (metadata only, as AWS publishes) as one message."""

from __future__ import annotations

import orjson

from service.arns import require_arn
from service.aws import destination_client
from service.destinations import DestinationContext, FailedBatch
from service.destinations.sqs import batch_record


class SnsDestination:
    def __init__(self, arn: str, context: DestinationContext) -> None:
        self.name = arn
        self._arn = arn
        self._client = destination_client(context.aws, "sns", require_arn(arn).region)

    async def open(self) -> None:
        await self._client.get()

    async def send(self, batch: FailedBatch) -> None:
        sns = await self._client.get()
        message = orjson.dumps(batch_record(batch, payload=False)).decode()
        await sns.publish(TopicArn=self._arn, Message=message)

    async def close(self) -> None:
        await self._client.close()
