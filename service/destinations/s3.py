"""S3 destination: the invocation record with ``payload`` (the whole event, as an escaped JSON
string) under AWS's key layout ``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/...``.

The key comes from the batch's own time and id, so a retried PutObject overwrites the same
object instead of leaving a second copy.
"""

from __future__ import annotations

import orjson

from service.arns import require_arn
from service.aws import destination_client
from service.destinations import DestinationContext, FailedBatch
from service.destinations.records import s3_key, shard_of
from service.destinations.sqs import batch_record


class S3Destination:
    def __init__(self, arn: str, context: DestinationContext) -> None:
        self.name = arn
        self._bucket = require_arn(arn).resource
        # S3 bucket ARNs carry no region: the aws section's
        self._client = destination_client(context.aws, "s3")

    async def open(self) -> None:
        await self._client.get()

    async def send(self, batch: FailedBatch) -> None:
        s3 = await self._client.get()
        shard = shard_of(batch.records, batch.shard_id)
        key = s3_key(batch.source.mapping_uuid, shard, batch.at, batch.id)
        body = orjson.dumps(batch_record(batch, payload=True))
        await s3.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType="application/json")

    async def close(self) -> None:
        await self._client.close()
