"""The DynamoDB lease table: several esmd replicas share a stream's shards, KCL-style.

One item per mapping and shard (``leaseKey`` = ``<mapping>:<shardId>``) holds the
checkpoint, the parent shards, the owner and a counter. Every change of ownership is a
conditional write on the counter the writer last saw, so two replicas can never both take a
lease; the owner renews by bumping the counter, and a checkpoint is written only while the
writer still owns the lease. The table is created (on demand billing) when missing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import structlog

from service.checkpoints import ClientFactory, Lease, ShardInfo, initial_position
from service.checkpoints.balance import ExpiryTracker, plan

if TYPE_CHECKING:
    from service.config import CheckpointsConfig

DEFAULT_TABLE = "esmd-leases"
_CONDITION_FAILED = "ConditionalCheckFailedException"


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class DynamoLeaseStore:
    def __init__(self, config: CheckpointsConfig, mapping: str, aws_client: ClientFactory) -> None:
        self.owner = config.owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._table = config.table or DEFAULT_TABLE
        self._mapping = mapping
        self._make_client = aws_client
        self._expiry = ExpiryTracker(config.lease_duration_seconds)
        self._stack = AsyncExitStack()
        self._ddb: Any = None
        self._leases: dict[str, Lease] = {}
        self._held: dict[str, int] = {}  # shard id -> counter after our last write
        self._log = structlog.get_logger("esmd.leases").bind(mapping=mapping, owner=self.owner)

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"leaseKey": {"S": f"{self._mapping}:{shard_id}"}}

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self._ddb = await self._stack.enter_async_context(self._make_client("dynamodb"))
        try:
            await self._ddb.create_table(
                TableName=self._table,
                KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except Exception as exc:
            if _code(exc) != "ResourceInUseException":
                raise
        waiter = self._ddb.get_waiter("table_exists")
        await waiter.wait(TableName=self._table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    async def close(self) -> None:
        await self._stack.aclose()

    # --- reading --------------------------------------------------------------------------

    async def _list(self) -> dict[str, Lease]:
        leases: dict[str, Lease] = {}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "FilterExpression": "#m = :m",
            "ExpressionAttributeNames": {"#m": "mapping"},
            "ExpressionAttributeValues": {":m": {"S": self._mapping}},
        }
        while True:
            resp = await self._ddb.scan(**kwargs)
            for item in resp.get("Items", []):
                lease = _lease(item)
                leases[lease.shard_id] = lease
            if "LastEvaluatedKey" not in resp:
                return leases
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    # --- the protocol ---------------------------------------------------------------------

    async def sync(self, shards: Sequence[ShardInfo], start: str) -> None:
        known = await self._list()
        first = not known
        for shard in shards:
            if shard.shard_id in known:
                continue
            item = {
                **self._key(shard.shard_id),
                "mapping": {"S": self._mapping},
                "shardId": {"S": shard.shard_id},
                "checkpoint": {"S": initial_position(shard, first, start)},
                "parents": {"S": ",".join(shard.parents)},
                "leaseCounter": {"N": "0"},
            }
            try:
                await self._ddb.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(leaseKey)",
                )
            except Exception as exc:
                if _code(exc) != _CONDITION_FAILED:  # another replica created it first
                    raise
        self._leases = await self._list()

    async def acquire(self) -> tuple[set[str], dict[str, Lease]]:
        await self._renew()
        leases = self._leases = await self._list()
        for shard_id in list(self._held):  # someone else took it, or it is finished
            lease = leases.get(shard_id)
            if lease is None or lease.owner != self.owner:
                self._held.pop(shard_id)
        expired = self._expiry.observe(leases)
        decided = plan(leases, self.owner, expired)
        for shard_id in decided.take + decided.steal:
            if await self._take(leases[shard_id]):
                self._log.info(
                    "lease taken",
                    shard=shard_id,
                    previous=leases[shard_id].owner,
                    stolen=shard_id in decided.steal,
                )
        return set(self._held), leases

    async def _renew(self) -> None:
        for shard_id, counter in list(self._held.items()):
            try:
                await self._ddb.update_item(
                    TableName=self._table,
                    Key=self._key(shard_id),
                    UpdateExpression="SET leaseCounter = :next",
                    ConditionExpression="leaseOwner = :me AND leaseCounter = :seen",
                    ExpressionAttributeValues={
                        ":me": {"S": self.owner},
                        ":seen": {"N": str(counter)},
                        ":next": {"N": str(counter + 1)},
                    },
                )
                self._held[shard_id] = counter + 1
            except Exception as exc:
                if _code(exc) != _CONDITION_FAILED:
                    raise
                self._log.warning("lease lost", shard=shard_id)
                self._held.pop(shard_id, None)

    async def _take(self, lease: Lease) -> bool:
        values: dict[str, Any] = {
            ":me": {"S": self.owner},
            ":seen": {"N": str(lease.counter)},
            ":next": {"N": str(lease.counter + 1)},
        }
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._key(lease.shard_id),
                UpdateExpression="SET leaseOwner = :me, leaseCounter = :next",
                ConditionExpression="leaseCounter = :seen",
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise
            return False  # someone renewed or took it meanwhile
        self._held[lease.shard_id] = lease.counter + 1
        lease.owner, lease.counter = self.owner, lease.counter + 1
        return True

    async def checkpoint(self, shard_id: str, position: str) -> bool:
        if shard_id not in self._held:
            return False
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=self._key(shard_id),
                UpdateExpression="SET #c = :c",
                ConditionExpression="leaseOwner = :me",
                ExpressionAttributeNames={"#c": "checkpoint"},
                ExpressionAttributeValues={":c": {"S": position}, ":me": {"S": self.owner}},
            )
        except Exception as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise
            self._held.pop(shard_id, None)
            return False
        if shard_id in self._leases:
            self._leases[shard_id].checkpoint = position
        return True

    async def release(self, shard_ids: Sequence[str]) -> None:
        """Free the leases (owner removed, counter bumped) so others need not wait them out."""
        for shard_id in shard_ids:
            counter = self._held.pop(shard_id, None)
            if counter is None:
                continue
            try:
                await asyncio.shield(
                    self._ddb.update_item(
                        TableName=self._table,
                        Key=self._key(shard_id),
                        UpdateExpression="REMOVE leaseOwner SET leaseCounter = :next",
                        ConditionExpression="leaseOwner = :me",
                        ExpressionAttributeValues={
                            ":me": {"S": self.owner},
                            ":next": {"N": str(counter + 1)},
                        },
                    )
                )
            except Exception as exc:
                self._log.warning("lease release failed", shard=shard_id, error=repr(exc))


def _lease(item: dict[str, Any]) -> Lease:
    parents = item.get("parents", {}).get("S", "")
    return Lease(
        shard_id=item["shardId"]["S"],
        checkpoint=item["checkpoint"]["S"],
        parents=tuple(p for p in parents.split(",") if p),
        owner=item["leaseOwner"]["S"] if "leaseOwner" in item else None,
        counter=int(item["leaseCounter"]["N"]),
    )
