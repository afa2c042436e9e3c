"""DynamoDB Streams source: the DynamoDB Streams API through aiobotocore, shards via shards.py.

Records are delivered as Lambda delivers them (the Lambda developer guide's DynamoDB event):
``eventID``, ``eventName`` (INSERT, MODIFY, REMOVE), ``eventVersion``, ``eventSource``,
``awsRegion``, ``dynamodb`` (``ApproximateCreationDateTime`` as epoch seconds, ``Keys``,
``NewImage``/``OldImage`` as the stream view type gives them, ``SequenceNumber``,
``SizeBytes``, ``StreamViewType``), ``eventSourceARN``, and ``userIdentity`` for deletions
by TTL. Attribute values stay DynamoDB JSON; binary values (B, BS) are base64, as on the wire.
Records of one item (its key) stay in order.
"""

from __future__ import annotations

import binascii
import datetime as dt
from typing import Any

import orjson

from service.checkpoints import ShardInfo
from service.context import MappingContext
from service.filters import dynamodb_filter_view
from service.sources.shards import (
    IteratorExpired,
    ShardPoller,
    StreamSource,
    Throttled,
    is_position,
)

_RECORD_OVERHEAD = 360
_THROTTLED = {
    "LimitExceededException",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
}
_EXPIRED = {"ExpiredIteratorException"}


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def wire_value(value: dict[str, Any]) -> dict[str, Any]:
    """An attribute value back in its wire form: botocore decoded B and BS to bytes."""
    ((kind, inner),) = value.items()
    if kind == "B":
        return {"B": _b64(inner)}
    if kind == "BS":
        return {"BS": [_b64(b) for b in inner]}
    if kind == "M":
        return {"M": wire_image(inner)}
    if kind == "L":
        return {"L": [wire_value(v) for v in inner]}
    return value


def wire_image(image: dict[str, Any]) -> dict[str, Any]:
    return {name: wire_value(v) for name, v in image.items()}


class DynamoDBCodec:
    """Turns DynamoDB Streams records into Lambda DynamoDB records."""

    envelope_bytes = 64
    filter_view = staticmethod(dynamodb_filter_view)

    def __init__(self, arn: str) -> None:
        self._arn = arn

    def convert(self, raw: dict[str, Any], shard_id: str) -> tuple[dict[str, Any], int, Any, str]:
        src = raw["dynamodb"]
        seq: str = src["SequenceNumber"]
        keys = wire_image(src.get("Keys", {}))
        body: dict[str, Any] = {}
        created: dt.datetime | None = src.get("ApproximateCreationDateTime")
        if created is not None:
            # Lambda's event has whole epoch seconds here (an integer), not a float
            body["ApproximateCreationDateTime"] = int(created.timestamp())
        body["Keys"] = keys
        for image in ("NewImage", "OldImage"):
            if image in src:
                body[image] = wire_image(src[image])
        body["SequenceNumber"] = seq
        body["SizeBytes"] = src.get("SizeBytes", 0)
        body["StreamViewType"] = src.get("StreamViewType", "")
        record: dict[str, Any] = {
            "eventID": raw["eventID"],
            "eventName": raw["eventName"],
            "eventVersion": raw.get("eventVersion", "1.1"),
            "eventSource": "aws:dynamodb",
            "awsRegion": raw.get("awsRegion", ""),
            "dynamodb": body,
            "eventSourceARN": self._arn,
        }
        if "userIdentity" in raw:
            ident = raw["userIdentity"]
            record["userIdentity"] = {
                "type": ident.get("Type"),
                "principalId": ident.get("PrincipalId"),
            }
        key = orjson.dumps(keys, option=orjson.OPT_SORT_KEYS)
        return record, _RECORD_OVERHEAD + 2 * int(body["SizeBytes"]), key, seq


class DynamoDBStreamsApi:
    """DescribeStream, GetShardIterator and GetRecords on one table's stream."""

    max_limit = 1000

    def __init__(self, client: Any, arn: str) -> None:
        self._client = client
        self._arn = arn

    async def list_shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        kwargs: dict[str, Any] = {"StreamArn": self._arn}
        while True:
            desc = (await self._client.describe_stream(**kwargs))["StreamDescription"]
            for s in desc.get("Shards", []):
                parents = (s["ParentShardId"],) if s.get("ParentShardId") else ()
                closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
                shards.append(ShardInfo(s["ShardId"], parents, closed))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    async def iterator(self, shard_id: str, position: str) -> str:
        kwargs: dict[str, Any] = {"StreamArn": self._arn, "ShardId": shard_id}
        if is_position(position):
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=position)
        else:
            kwargs.update(ShardIteratorType=position)
        resp = await self._client.get_shard_iterator(**kwargs)
        return str(resp["ShardIterator"])

    async def get_records(
        self, iterator: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            resp = await self._client.get_records(ShardIterator=iterator, Limit=limit)
        except Exception as exc:
            code = _code(exc)
            if code in _THROTTLED:
                raise Throttled(code) from exc
            if code in _EXPIRED:
                raise IteratorExpired(code) from exc
            raise
        return resp.get("Records", []), resp.get("NextShardIterator")


class DynamoDBPoller(ShardPoller):
    def __init__(self, mapping: MappingContext) -> None:
        arn = mapping.config.EventSourceArn or ""
        self._client_cm = mapping.aws_client("dynamodbstreams", 64)
        self._api = DynamoDBStreamsApi(None, arn)
        super().__init__(mapping, StreamSource("dynamodb", self._api, DynamoDBCodec(arn), arn))

    async def run(self) -> None:
        async with self._client_cm as client:
            self._api._client = client
            await super().run()
