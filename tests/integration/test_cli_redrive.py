"""``esmd redrive``: a poison batch lands in the OnFailure destination; once the target is
fixed, redrive delivers it and empties the destination (SQS, S3, Kafka topic)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, TopicPartition

from service.config import MappingConfig
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)
from tests.integration.ops_helpers import esmd, write_config

pytestmark = pytest.mark.integration

N = 10
POISON = {3, 7}
Remaining = Callable[[], Awaitable[int]]


def client(service: str, endpoint: str):  # type: ignore[no-untyped-def]
    return get_session().create_client(service, region_name="us-east-1", endpoint_url=endpoint)


async def sqs_queue(endpoint: str, name: str, uuid: str) -> tuple[str, Remaining]:
    async with client("sqs", endpoint) as sqs:
        url = (await sqs.create_queue(QueueName=name))["QueueUrl"]

    async def remaining() -> int:
        async with client("sqs", endpoint) as sqs:
            attrs = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        a = attrs["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )

    return f"arn:aws:sqs:us-east-1:000000000000:{name}", remaining


async def s3_bucket(endpoint: str, name: str, uuid: str) -> tuple[str, Remaining]:
    async with client("s3", endpoint) as s3:
        await s3.create_bucket(Bucket=name)

    async def remaining() -> int:
        async with client("s3", endpoint) as s3:
            listed = await s3.list_objects_v2(Bucket=name, Prefix=f"aws/lambda/{uuid}/")
        return len(listed.get("Contents", []))

    return f"arn:aws:s3:::{name}", remaining


def kafka_topic(bootstrap: str) -> Callable[[str, str, str], Awaitable[tuple[str, Remaining]]]:
    async def make(endpoint: str, name: str, uuid: str) -> tuple[str, Remaining]:
        await create_topic(bootstrap, name, 1)

        async def remaining() -> int:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=f"esmd-redrive-{uuid}",
                enable_auto_commit=False,
            )
            await consumer.start()
            try:
                tp = TopicPartition(name, 0)
                end = (await consumer.end_offsets([tp]))[tp]
                return int(end - ((await consumer.committed(tp)) or 0))
            finally:
                await consumer.stop()

        return f"kafka://{name}", remaining

    return make


def delivered(out: Path) -> list[int]:
    if not out.exists():
        return []
    return [json.loads(line)["seq"] for line in out.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["sqs", "s3", "kafka"])
async def test_redrive_a_poison_batch_after_the_target_is_fixed(
    kind: str,
    kafka_bootstrap: str,
    moto_endpoint: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flag, out = tmp_path / "bug", tmp_path / "delivered.jsonl"
    flag.touch()
    monkeypatch.setenv("ESMD_TEST_FLAG", str(flag))
    monkeypatch.setenv("ESMD_TEST_OUT", str(out))
    topic, group, name = f"rd-{kind}-{unique}", f"g-rd-{unique}", f"esmd-rd-{kind}-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    await produce_json(
        kafka_bootstrap, topic, [(0, {"seq": i, "poison": i in POISON}) for i in range(N)]
    )
    mapping = kafka_mapping(name, kafka_bootstrap, topic, group, FunctionName="fn", BatchSize=4)
    uuid = MappingConfig.model_validate(mapping).uuid
    make = {"sqs": sqs_queue, "s3": s3_bucket, "kafka": kafka_topic(kafka_bootstrap)}[kind]
    destination, remaining = await make(moto_endpoint, f"{name}-failures", uuid)
    mapping.update(
        MaximumBatchingWindowInSeconds=0,
        MaximumRetryAttempts=1,
        BisectBatchOnFunctionError=True,
        DestinationConfig={"OnFailure": {"Destination": destination}},
    )
    config = {
        "aws": {"region": "us-east-1", "endpoint_url": moto_endpoint},
        "retry": {"initial_backoff_seconds": 0.02, "max_backoff_seconds": 0.1},
        "functions": {"fn": {"python": "tests.integration.ops_handlers:fails_on_poison"}},
        "mappings": [mapping],
    }
    path = write_config(tmp_path, config)
    async with running_daemon(config):

        async def settled() -> bool:
            committed, ends = await offsets(kafka_bootstrap, topic, group, 1)
            return committed == ends == {0: N} and await remaining() == len(POISON)

        await wait_for(settled, 30, "the poison records in the destination")
    assert sorted(delivered(out)) == sorted(set(range(N)) - POISON)
    args = ["redrive", "-c", path, "--mapping", name, "--from", destination]

    code, stdout, stderr = await esmd(*args, "--dry-run")
    assert code == 0, stderr
    assert stdout.count("would redrive 1 record(s)") == len(POISON), stdout
    assert await remaining() == len(POISON)

    code, stdout, stderr = await esmd(*args)  # the bug is still there: nothing removed
    assert code == 1, stderr
    # a Kafka topic is read in order: the first record that stays holds back its partition
    again = 1 if kind == "kafka" else len(POISON)
    assert f"0 redriven (0 records) and removed, {again} failed again (kept)" in stdout
    assert await remaining() == len(POISON)

    flag.unlink()  # the fix
    code, stdout, stderr = await esmd(*args)
    assert code == 0, stderr
    assert f"{len(POISON)} redriven ({len(POISON)} records) and removed" in stdout
    assert sorted(delivered(out)) == list(range(N))  # the poison ones, once each
    assert await remaining() == 0

    code, stdout, _ = await esmd(*args)  # a rerun finds nothing left
    assert code == 0 and "redrive: 0 invocation record(s)" in stdout


async def test_redrive_kinesis_batch_info_reads_the_shard_again(
    moto_endpoint: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An invocation record without payload (SQS destination) names a shard and a sequence
    number range: redrive reads it with AT_SEQUENCE_NUMBER and filters it as the mapping
    does; test-filter --from-source reads the same stream without a checkpoint."""
    from tests.integration.stream_helpers import client as stream_client
    from tests.integration.stream_helpers import make_stream

    name = f"rd-kin-{unique}"
    output = tmp_path / "out.txt"
    monkeypatch.setenv("ESMD_TEST_OUTPUT", str(output))
    async with stream_client("kinesis", moto_endpoint) as kinesis:
        arn = await make_stream(kinesis, name, 1)
        put = await kinesis.put_records(
            StreamName=name,
            Records=[
                {"PartitionKey": "k", "Data": json.dumps({"n": i, "skip": i == 4}).encode()}
                for i in range(8)
            ],
        )
    seqs = [r["SequenceNumber"] for r in put["Records"]]
    shard = put["Records"][0]["ShardId"]
    queue, remaining = await sqs_queue(moto_endpoint, f"{name}-failures", "")
    invocation = {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "version": "1.0",
        "KinesisBatchInfo": {
            "shardId": shard,
            "startSequenceNumber": seqs[3],
            "endSequenceNumber": seqs[5],
            "batchSize": 2,
            "streamArn": arn,
        },
    }
    async with client("sqs", moto_endpoint) as sqs:
        url = (await sqs.get_queue_url(QueueName=f"{name}-failures"))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps(invocation))
    config = {
        "aws": {"endpoint_url": moto_endpoint, "region": "us-east-1"},
        "functions": {"fn": {"python": "tests.integration.stream_handlers:append_to_file"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": arn,
                "FunctionName": "fn",
                "StartingPosition": "TRIM_HORIZON",
                "FilterCriteria": {"Filters": [{"Pattern": '{"data": {"skip": [false]}}'}]},
                "DestinationConfig": {"OnFailure": {"Destination": queue}},
            }
        ],
    }
    path = write_config(tmp_path, config)
    code, stdout, stderr = await esmd(
        "test-filter", "-c", path, "--mapping", name, "--from-source", "8", "--json"
    )
    assert code == 0, stderr
    kept = [json.loads(line)["kept"] for line in stdout.splitlines()]
    assert kept == [i != 4 for i in range(8)]

    code, stdout, stderr = await esmd("redrive", "-c", path, "--mapping", name, "--from", queue)
    assert code == 0, stderr
    assert "1 redriven (2 records) and removed" in stdout
    assert output.read_text().split() == ["k", "3", "k", "5"]
    assert await remaining() == 0


async def test_redrive_dynamodb_batch_info_and_test_filter_from_the_stream(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """DDBStreamBatchInfo: redrive reads the shard again from startSequenceNumber and keeps
    what the mapping's filter keeps; test-filter --from-source reads the same stream."""
    from tests.integration.stream_helpers import client as stream_client

    name = f"rd-ddb-{unique}"
    async with stream_client("dynamodb", moto_endpoint) as ddb:
        desc = await ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        arn = desc["TableDescription"]["LatestStreamArn"]
        for i in range(6):
            item = {"pk": {"S": f"item-{i}"}, "status": {"S": "keep" if i % 2 else "new"}}
            await ddb.put_item(TableName=name, Item={**item, "blob": {"B": b"\x00\xff"}})
    async with stream_client("dynamodbstreams", moto_endpoint) as streams:
        shard = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]["Shards"][0]
        it = await streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )
        records = (await streams.get_records(ShardIterator=it["ShardIterator"]))["Records"]
    seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
    queue, remaining = await sqs_queue(moto_endpoint, f"{name}-failures", "")
    invocation = {
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": shard["ShardId"],
            "startSequenceNumber": seqs[1],
            "endSequenceNumber": seqs[4],
            "batchSize": 2,
            "streamArn": arn,
        },
    }
    async with client("sqs", moto_endpoint) as sqs:
        url = (await sqs.get_queue_url(QueueName=f"{name}-failures"))["QueueUrl"]
        await sqs.send_message(QueueUrl=url, MessageBody=json.dumps(invocation))
    pattern = '{"dynamodb": {"NewImage": {"status": {"S": ["keep"]}}}}'
    config = {
        "aws": {"endpoint_url": moto_endpoint, "region": "us-east-1"},
        "functions": {"fn": {"python": "tests.integration.ops_handlers:ddb_to_file"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": arn,
                "FunctionName": "fn",
                "StartingPosition": "TRIM_HORIZON",
                "FilterCriteria": {"Filters": [{"Pattern": pattern}]},
                "DestinationConfig": {"OnFailure": {"Destination": queue}},
            }
        ],
    }
    path = write_config(tmp_path, config)
    code, stdout, stderr = await esmd(
        "test-filter", "-c", path, "--mapping", name, "--from-source", "6", "--json"
    )
    assert code == 0, stderr
    assert [json.loads(line)["kept"] for line in stdout.splitlines()] == [
        i % 2 == 1 for i in range(6)
    ]

    out = tmp_path / "ddb.jsonl"
    code, stdout, stderr = await esmd(
        "redrive", "-c", path, "--mapping", name, "--from", queue, env={"ESMD_TEST_OUT": str(out)}
    )
    assert code == 0, stderr
    assert "1 redriven (2 records) and removed" in stdout
    delivered = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["pk"] for d in delivered] == ["item-1", "item-3"]
    assert delivered[0]["blob"] == {"B": "AP8="}  # the wire form Lambda delivers
    assert await remaining() == 0
