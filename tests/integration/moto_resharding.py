"""moto_server with Kinesis resharding as AWS does it, for the SplitShard test.

moto 5's SplitShard does not behave like Kinesis: it moves the parent's records into the
shard table again (with its own arguments swapped, so they land back in the parent under
new sequence numbers), keeps routing new records to the closed parent (it is first in the
shard table), and GetRecords on a closed shard never ends (NextShardIterator is never
null). This module patches those three points to Kinesis's documented behaviour, then runs
moto_server unchanged otherwise:

- SplitShard closes the parent where it is (its records stay, readable) and opens two
  children over the two halves of its hash range;
- PutRecord(s) routes to the open shard whose hash range holds the key;
- GetRecords on a closed shard, once past its last record, returns no NextShardIterator.

Run: ``python -m tests.integration.moto_resharding PORT``.
"""

from __future__ import annotations

import sys
from operator import attrgetter
from typing import Any

from moto.kinesis import models
from moto.kinesis.utils import decompose_shard_iterator


def split_shard(self: Any, shard_to_split: str, new_starting_hash_key: str) -> None:
    shard = self.shards[shard_to_split]
    split_at = int(new_starting_hash_key)
    if not shard.is_open or not shard.starting_hash < split_at <= shard.ending_hash:
        raise models.InvalidArgumentError(message=f"cannot split {shard_to_split} there")
    last = max(self.shards.values(), key=attrgetter("_shard_id"))._shard_id
    for index, start, end in (
        (last + 1, shard.starting_hash, split_at - 1),
        (last + 2, split_at, shard.ending_hash),
    ):
        child = models.Shard(index, start, end, parent=shard.shard_id)
        self.shards[child.shard_id] = child
    shard.is_open = False


def get_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
    key = (
        int(explicit_hash_key)
        if explicit_hash_key
        else int(models.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
    )
    for shard in self.shards.values():
        if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
            return shard
    return None


_get_records = models.KinesisBackend.get_records


def get_records(self: Any, stream_arn: Any, shard_iterator: str, limit: Any) -> Any:
    next_iterator, records, behind = _get_records(self, stream_arn, shard_iterator, limit)
    stream_name, shard_id, _ = decompose_shard_iterator(next_iterator)
    stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
    shard = stream.get_shard(shard_id)
    at = int(decompose_shard_iterator(next_iterator)[2])
    if not shard.is_open and not records and at >= shard.get_max_sequence_number():
        next_iterator = None
    return next_iterator, records, behind


def patch() -> None:
    models.Stream.split_shard = split_shard
    models.Stream.get_shard_for_key = get_shard_for_key
    models.KinesisBackend.get_records = get_records


if __name__ == "__main__":
    patch()
    from moto.server import main

    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
