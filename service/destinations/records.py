"""AWS's invocation record: what an OnFailure destination receives for records given up on.

The shapes follow the Lambda developer guide, field for field:

- Kafka to SQS/SNS/S3 ("Capturing discarded batches for Amazon MSK and self-managed Apache
  Kafka event sources"): one record per batch, ``KafkaBatchInfo.recordsInfo`` keyed by
  ``<topic>-<partition>`` with first/last offsets (strings) and timestamps; S3 adds
  ``payload``, the whole event as an escaped JSON string.
- Kafka to a Kafka topic ("Using a Kafka topic as an on-failure destination"): one message per
  failed record, ``batchSize`` 1, ``KafkaBatchInfo.recordInfo`` with its offset and timestamp,
  and ``payload``, the event of that one record as a JSON object.
- Kinesis and DynamoDB Streams ("Capturing discarded batches for a Kinesis/DynamoDB event
  source"): ``KinesisBatchInfo`` / ``DDBStreamBatchInfo`` with the shard, the first and last
  sequence numbers and arrival times, the batch size and the stream ARN; S3 adds ``payload``.

S3 objects are named ``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<UUID>``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

VERSION = "1.0"
#: conditions of records never sent to the function: their responseContext is null (AWS, for
#: the payload cap; esmd's schema-registry condition for records that could not be decoded)
SCHEMA_DECODING_FAILED = "SchemaRegistryDecodingFailed"
NEVER_INVOKED = frozenset({"MaximumPayloadSizeExceeded", SCHEMA_DECODING_FAILED})


@dataclass(frozen=True)
class Failure:
    """Why records were given up on; becomes the record's requestContext/responseContext."""

    #: AWS requestContext.condition e.g. "RetryAttemptsExhausted", "RecordAgeExceeded"
    condition: str
    approximate_invoke_count: int
    function_error: str | None = None
    status_code: int = 200
    error_message: str | None = None  # for esmd's logs; AWS's record has no such field


@dataclass(frozen=True)
class SourceInfo:
    """What a mapping knows about its source that the invocation record carries."""

    kind: str  # "kafka", "kinesis" or "dynamodb"
    mapping_uuid: str
    function_arn: str
    event_source_arn: str | None = None  # None for self-managed Kafka
    bootstrap_servers: str = ""  # Kafka: comma-separated, as in the event
    event_source: str = ""  # Kafka: the event's eventSource ("SelfManagedKafka", "aws:kafka")


def iso_ms(seconds: float) -> str:
    """``2019-11-14T00:38:06.021Z``: AWS's timestamps in invocation records."""
    t = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def iso_s(seconds: float) -> str:
    """``2019-11-14T00:13:19Z``: DynamoDB Streams' arrival times, to the second."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _envelope(failure: Failure, info: SourceInfo, now: float) -> dict[str, Any]:
    response: dict[str, Any] | None
    if failure.condition in NEVER_INVOKED:
        response = None  # AWS: null when the batch was never invoked for its size
    else:
        response = {"statusCode": failure.status_code, "executedVersion": "$LATEST"}
        if failure.function_error is not None:
            response["functionError"] = failure.function_error
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": info.function_arn,
            "condition": failure.condition,
            "approximateInvokeCount": failure.approximate_invoke_count,
        },
        "responseContext": response,
        "version": VERSION,
        "timestamp": iso_ms(now),
    }


# --- Kafka ----------------------------------------------------------------------------------


def kafka_event(records: list[dict[str, Any]], info: SourceInfo) -> dict[str, Any]:
    """The event Lambda would deliver for these Kafka records (grouped by topic-partition)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault(f"{r['topic']}-{r['partition']}", []).append(r)
    event: dict[str, Any] = {"eventSource": info.event_source}
    if info.event_source_arn is not None:
        event["eventSourceArn"] = info.event_source_arn
    event["bootstrapServers"] = info.bootstrap_servers
    event["records"] = grouped
    return event


def _kafka_info(info: SourceInfo, batch_size: int, payload_size: int) -> dict[str, Any]:
    out: dict[str, Any] = {"batchSize": batch_size}
    if info.event_source_arn is not None:
        out["eventSourceArn"] = info.event_source_arn
    out["bootstrapServers"] = info.bootstrap_servers
    out["payloadSize"] = payload_size
    return out


def kafka_batch_record(
    records: list[dict[str, Any]], failure: Failure, info: SourceInfo, *, payload: bool, now: float
) -> dict[str, Any]:
    """One record for a failed Kafka batch (SQS, SNS; with ``payload`` for S3)."""
    event = orjson.dumps(kafka_event(records, info))
    batch = _kafka_info(info, len(records), len(event))
    ranges: dict[str, dict[str, str]] = {}
    for r in records:
        key = f"{r['topic']}-{r['partition']}"
        found = ranges.get(key)
        stamp = iso_ms(r["timestamp"] / 1000)
        if found is None:
            ranges[key] = {
                "firstRecordOffset": str(r["offset"]),
                "lastRecordOffset": str(r["offset"]),
                "firstRecordTimestamp": stamp,
                "lastRecordTimestamp": stamp,
            }
        else:
            found["lastRecordOffset"] = str(r["offset"])
            found["lastRecordTimestamp"] = stamp
    batch["recordsInfo"] = ranges
    out = _envelope(failure, info, now)
    out["KafkaBatchInfo"] = batch
    if payload:
        out["payload"] = event.decode()
    return out


def kafka_record_messages(
    records: list[dict[str, Any]], failure: Failure, info: SourceInfo, *, now: float
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Lambda record, invocation record) per failed record, for a Kafka topic destination."""
    out = []
    for r in records:
        event = kafka_event([r], info)
        batch = _kafka_info(info, 1, len(orjson.dumps(event)))
        batch["recordInfo"] = {
            "offset": str(r["offset"]),
            "timestamp": iso_ms(r["timestamp"] / 1000),
        }
        message = _envelope(failure, info, now)
        message["KafkaBatchInfo"] = batch
        message["payload"] = event
        out.append((r, message))
    return out


# --- Kinesis and DynamoDB Streams -----------------------------------------------------------


def _kinesis_arrival(r: dict[str, Any]) -> str:
    return iso_ms(float(r["kinesis"]["approximateArrivalTimestamp"]))


def _ddb_arrival(r: dict[str, Any]) -> str:
    return iso_s(float(r["dynamodb"]["ApproximateCreationDateTime"]))


_STREAMS: dict[
    str, tuple[str, Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]]
] = {
    "kinesis": ("KinesisBatchInfo", lambda r: r["kinesis"]["sequenceNumber"], _kinesis_arrival),
    "dynamodb": ("DDBStreamBatchInfo", lambda r: r["dynamodb"]["SequenceNumber"], _ddb_arrival),
}


def stream_batch_record(
    records: list[dict[str, Any]],
    failure: Failure,
    info: SourceInfo,
    shard_id: str,
    *,
    payload: bool,
    now: float,
) -> dict[str, Any]:
    """One record for a failed Kinesis or DynamoDB Streams batch (with ``payload`` for S3)."""
    field, sequence, arrival = _STREAMS[info.kind]
    first, last = records[0], records[-1]
    out = _envelope(failure, info, now)
    out[field] = {
        "shardId": shard_id,
        "startSequenceNumber": sequence(first),
        "endSequenceNumber": sequence(last),
        "approximateArrivalOfFirstRecord": arrival(first),
        "approximateArrivalOfLastRecord": arrival(last),
        "batchSize": len(records),
        "streamArn": info.event_source_arn,
    }
    if payload:
        out["payload"] = orjson.dumps({"Records": records}).decode()
    return out


# --- S3 naming ------------------------------------------------------------------------------


def s3_key(mapping_uuid: str, shard_id: str, now: float, random_id: str) -> str:
    """``aws/lambda/<ESM-UUID>/<shardID>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<Random UUID>``."""
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    return f"aws/lambda/{mapping_uuid}/{shard_id}/{t:%Y/%m/%d}/{t:%Y-%m-%dT%H.%M.%S}-{random_id}"


def shard_of(records: list[dict[str, Any]], shard_id: str | None) -> str:
    """The S3 key's shard: the stream's shard, or a Kafka record's ``<topic>-<partition>``."""
    if shard_id is not None:
        return shard_id
    first = records[0]
    return f"{first['topic']}-{first['partition']}"
