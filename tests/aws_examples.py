"""AWS's documented invocation records for OnFailure destinations, as published in the Lambda
developer guide (comments and the ``"A" | "B"`` alternatives of the page removed):

- KAFKA_SQS_SNS, KAFKA_S3: "Capturing discarded batches for Amazon MSK and self-managed
  Apache Kafka event sources" (docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html);
- KAFKA_TOPIC: "Using a Kafka topic as an on-failure destination"
  (docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure-destination.html);
- KINESIS_SQS_SNS: "Retain discarded batch records for a Kinesis Data Streams event source"
  (docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html).
"""

from __future__ import annotations

import copy
from typing import Any

_REQUEST = {
    "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
    "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:myfunction",
    "condition": "RetryAttemptsExhausted",
    "approximateInvokeCount": 1,
}
_RESPONSE = {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}

KAFKA_SQS_SNS: dict[str, Any] = {
    "requestContext": _REQUEST,
    "responseContext": _RESPONSE,
    "version": "1.0",
    "timestamp": "2019-11-14T00:38:06.021Z",
    "KafkaBatchInfo": {
        "batchSize": 500,
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/vpc-2priv-2pub/"
        "751d2973-a626-431c-9d4e-d7975eb44dd7-2",
        "bootstrapServers": "...",
        "payloadSize": 2039086,
        "recordsInfo": {
            "Topic-0": {
                "firstRecordOffset": "49601189658422359378836298521827638475320189012309704722",
                "lastRecordOffset": "49601189658422359378836298522902373528957594348623495186",
                "firstRecordTimestamp": "2019-11-14T00:38:04.835Z",
                "lastRecordTimestamp": "2019-11-14T00:38:05.580Z",
            },
        },
    },
}

KAFKA_S3: dict[str, Any] = {**copy.deepcopy(KAFKA_SQS_SNS), "payload": "<Whole Event>"}

KAFKA_TOPIC: dict[str, Any] = {
    "requestContext": {
        "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
        "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:my-function:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 3,
    },
    "responseContext": _RESPONSE,
    "version": "1.0",
    "timestamp": "2019-11-14T18:16:05.568Z",
    "KafkaBatchInfo": {
        "batchSize": 1,
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
        "bootstrapServers": "b-1.mycluster.abc123.kafka.us-east-1.amazonaws.com:9098",
        "payloadSize": 1162,
        "recordInfo": {
            "offset": "49601189658422359378836298521827638475320189012309704722",
            "timestamp": "2019-11-14T18:16:04.835Z",
        },
    },
    "payload": {
        "bootstrapServers": "b-1.mycluster.abc123.kafka.us-east-1.amazonaws.com:9098",
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/my-cluster/abc123",
        "records": {
            "my-topic-0": [
                {
                    "headers": [],
                    "key": "dGVzdC1rZXk=",
                    "offset": 100,
                    "partition": 0,
                    "timestamp": 1749116692330,
                    "timestampType": "CREATE_TIME",
                    "topic": "my-topic",
                    "value": "dGVzdC12YWx1ZQ==",
                }
            ]
        },
    },
}

KINESIS_SQS_SNS: dict[str, Any] = {
    "requestContext": {
        "requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1,
    },
    "responseContext": _RESPONSE,
    "version": "1.0",
    "timestamp": "2019-11-14T00:38:06.021Z",
    "KinesisBatchInfo": {
        "shardId": "shardId-000000000001",
        "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
        "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
        "batchSize": 500,
        "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream",
    },
}


def shape(value: Any) -> Any:
    """Field names and JSON types, recursively (one entry per list, the key of one-entry
    maps of topic-partitions kept generic): what 'field by field' compares."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def self_managed(example: dict[str, Any]) -> dict[str, Any]:
    """The example as for a self-managed cluster: no eventSourceArn (AWS's examples are MSK's)."""
    out = copy.deepcopy(example)
    out["KafkaBatchInfo"].pop("eventSourceArn", None)
    if isinstance(out.get("payload"), dict):
        out["payload"].pop("eventSourceArn", None)
        out["payload"]["eventSource"] = "SelfManagedKafka"
    return out


def renamed(example: dict[str, Any], key: str) -> dict[str, Any]:
    """The example with its single recordsInfo / records key renamed (a topic-partition)."""
    out = copy.deepcopy(example)
    info = out["KafkaBatchInfo"]
    if "recordsInfo" in info:
        info["recordsInfo"] = {key: next(iter(info["recordsInfo"].values()))}
    if isinstance(out.get("payload"), dict):
        out["payload"]["records"] = {key: next(iter(out["payload"]["records"].values()))}
    return out
