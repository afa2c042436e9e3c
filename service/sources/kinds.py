"""SourceKind: what a mapping polls, decided by its ARN or by SelfManagedEventSource.

A leaf module (it imports nothing of esmd), so the config and the source registry can both
name kinds without needing each other.
"""

from __future__ import annotations

import enum


class SourceKind(enum.StrEnum):
    KAFKA = "kafka"  # self-managed Apache Kafka
    MSK = "msk"  # Amazon MSK
    SQS = "sqs"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"
    MQ = "mq"
    DOCUMENTDB = "documentdb"  # Amazon DocumentDB change streams

    @property
    def is_kafka(self) -> bool:
        return self in (SourceKind.KAFKA, SourceKind.MSK)

    @property
    def is_stream(self) -> bool:
        return self in (SourceKind.KINESIS, SourceKind.DYNAMODB)


#: the service part of an EventSourceArn -> the kind it names
ARN_SERVICES = {
    "kafka": SourceKind.MSK,
    "sqs": SourceKind.SQS,
    "kinesis": SourceKind.KINESIS,
    "dynamodb": SourceKind.DYNAMODB,
    "mq": SourceKind.MQ,
    "rds": SourceKind.DOCUMENTDB,  # arn:aws:rds:<region>:<account>:cluster:<name>
}
