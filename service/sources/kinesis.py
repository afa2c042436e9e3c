"""Kinesis Data Streams source: the Kinesis API through aiobotocore, shards via shards.py.

Records are delivered as Lambda delivers them (the Lambda developer guide's Kinesis event):
``kinesis`` holds ``kinesisSchemaVersion``, ``partitionKey``, ``sequenceNumber``, ``data``
(base64) and ``approximateArrivalTimestamp`` (epoch seconds, millisecond precision), plus
``encryptionType`` for encrypted records; around it ``eventSource``, ``eventVersion``,
``eventID`` (``<shardId>:<sequenceNumber>``), ``eventName``, ``invokeIdentityArn``,
``awsRegion`` and ``eventSourceARN``. Records of one partition key stay in order.
"""

from __future__ import annotations

import binascii
import datetime as dt
from typing import Any

from service.checkpoints import ShardInfo
from service.context import MappingContext
from service.filters import kinesis_filter_view
from service.sources.shards import (
    IteratorExpired,
    ShardPoller,
    StreamSource,
    Throttled,
    is_position,
)

#: bytes of a record's JSON besides partition key and data (names, ids, ARNs)
_RECORD_OVERHEAD = 420
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "KMSThrottlingException",
    "LimitExceededException",
}
_b64 = binascii.b2a_base64


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def stream_parts(arn: str) -> tuple[str, str, str]:
    """(region, account, stream name) of a Kinesis stream ARN (or a consumer's)."""
    _, _, _, region, account, resource = arn.split(":", 5)
    return region, account, resource.split("/")[1]


class KinesisCodec:
    """Turns GetRecords records into Lambda Kinesis records."""

    envelope_bytes = 64
    filter_view = staticmethod(kinesis_filter_view)

    def __init__(self, arn: str, identity: str) -> None:
        region, _, _ = stream_parts(arn)
        self._arn = arn
        self._region = region
        self._identity = identity  # invokeIdentityArn: the function's role (role_arn)

    def convert(self, raw: dict[str, Any], shard_id: str) -> tuple[dict[str, Any], int, Any, str]:
        seq: str = raw["SequenceNumber"]
        key: str = raw["PartitionKey"]
        data = _b64(raw["Data"], newline=False).decode()
        arrived: dt.datetime = raw["ApproximateArrivalTimestamp"]
        kinesis: dict[str, Any] = {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": seq,
            "data": data,
            "approximateArrivalTimestamp": round(arrived.timestamp(), 3),
        }
        encryption = raw.get("EncryptionType")
        if encryption and encryption != "NONE":
            kinesis["encryptionType"] = encryption
        record = {
            "kinesis": kinesis,
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": self._identity,
            "awsRegion": self._region,
            "eventSourceARN": self._arn,
        }
        return record, _RECORD_OVERHEAD + len(key) + len(data) + 2 * len(seq), key, seq


class KinesisApi:
    """ListShards, GetShardIterator and GetRecords on one stream."""

    max_limit = 10_000

    def __init__(self, client: Any, arn: str, timestamp: float | None) -> None:
        self._client = client
        self._arn = arn
        self._timestamp = timestamp

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamARN": self._arn}
        while True:
            resp = await self._client.list_shards(**kwargs)
            for s in resp.get("Shards", []):
                parents = tuple(
                    p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p
                )
                closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
                shards.append(ShardInfo(s["ShardId"], parents, closed))
            token = resp.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    async def iterator(self, shard_id: str, position: str) -> str:
        kwargs: dict[str, Any] = {"StreamARN": self._arn, "ShardId": shard_id}
        if is_position(position):
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=position
            )
        elif position == "AT_TIMESTAMP":
            kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=self._timestamp or 0)
        else:
            kwargs.update(ShardIteratorType=position)
        resp = await self._client.get_shard_iterator(**kwargs)
        return str(resp["ShardIterator"])

    async def get_records(
        self, iterator: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            resp = await self._client.get_records(
                ShardIterator=iterator, Limit=limit, StreamARN=self._arn
            )
        except Exception as exc:
            code = _code(exc)
            if code in _THROTTLED:
                raise Throttled(code) from exc
            if code == "ExpiredIteratorException":
                raise IteratorExpired(code) from exc
            raise
        return resp.get("Records", []), resp.get("NextShardIterator")


class KinesisPoller(ShardPoller):
    def __init__(self, mapping: MappingContext) -> None:
        cfg = mapping.config
        arn = cfg.EventSourceArn or ""
        self._client_cm = mapping.aws_client("kinesis", 64)
        self._api = KinesisApi(None, arn, cfg.StartingPositionTimestamp)
        codec = KinesisCodec(arn, mapping.esmd.invoke_identity_arn(cfg))
        super().__init__(mapping, StreamSource("kinesis", self._api, codec, arn))

    async def run(self) -> None:
        async with self._client_cm as client:
            self._api._client = client
            await super().run()
