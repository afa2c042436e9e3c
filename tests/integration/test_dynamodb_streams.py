"""The DynamoDB Streams source against moto_server: change order per item, filters, format."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser.models import DynamoDBStreamModel

from tests.integration import stream_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import client

pytestmark = pytest.mark.integration
ITEMS = 30


def _changes(name: str) -> list[dict[str, Any]]:
    return [r for e in stream_handlers.events[name] for r in e["Records"]]


async def test_insert_modify_remove_in_order_and_filtered(
    moto_endpoint: str, unique: str, tmp_path: Path
) -> None:
    table = f"ddb-{unique}"
    everything, kept = f"all-{unique}", f"kept-{unique}"
    async with client("dynamodb", moto_endpoint) as ddb:
        desc = await ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        arn = desc["TableDescription"]["LatestStreamArn"]
        for i in range(ITEMS):
            key = {"pk": {"S": f"item-{i}"}}
            await ddb.put_item(
                TableName=table,
                Item={
                    **key,
                    "status": {"S": "keep" if i % 2 else "new"},
                    "blob": {"B": b"\x00\xff"},
                },
            )
            await ddb.update_item(
                TableName=table,
                Key=key,
                UpdateExpression="SET #s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": "keep" if i % 3 == 0 else "done"}},
            )
            await ddb.delete_item(TableName=table, Key=key)
    common = {"EventSourceArn": arn, "StartingPosition": "TRIM_HORIZON", "ParallelizationFactor": 3}
    cfg = {
        "aws": {"endpoint_url": moto_endpoint},
        "checkpoints": {"path": str(tmp_path / "state.db")},
        "functions": {
            n: {"python": "tests.integration.stream_handlers:collect"} for n in (everything, kept)
        },
        "mappings": [
            {"Name": everything, "FunctionName": everything, **common},
            {
                "Name": kept,
                "FunctionName": kept,
                **common,
                "FilterCriteria": {
                    "Filters": [
                        {"Pattern": '{"dynamodb": {"NewImage": {"status": {"S": ["keep"]}}}}'}
                    ]
                },
            },
        ],
    }
    async with running_daemon(cfg) as daemon:
        await wait_for(lambda: len(_changes(everything)) >= 3 * ITEMS, 30, "every change")
        await wait_for(
            lambda: (
                daemon.metrics.registry.get_sample_value(
                    "esm_polled_events_total", {"mapping": kept, "source": "dynamodb"}
                )
                == 3 * ITEMS
            ),
            30,
            "the filtered mapping to read everything",
        )
        filtered = daemon.metrics.registry.get_sample_value(
            "esm_filtered_out_events_total", {"mapping": kept, "source": "dynamodb"}
        )
    changes = _changes(everything)
    for i in range(ITEMS):
        mine = [c for c in changes if c["dynamodb"]["Keys"] == {"pk": {"S": f"item-{i}"}}]
        assert [c["eventName"] for c in mine] == ["INSERT", "MODIFY", "REMOVE"]
        insert, modify, remove = mine
        assert "OldImage" not in insert["dynamodb"] and "NewImage" not in remove["dynamodb"]
        assert modify["dynamodb"]["OldImage"] == insert["dynamodb"]["NewImage"]
        assert insert["dynamodb"]["NewImage"]["blob"] == {"B": "AP8="}
    expected = sorted(
        [(f"item-{i}", "INSERT") for i in range(ITEMS) if i % 2]
        + [(f"item-{i}", "MODIFY") for i in range(ITEMS) if i % 3 == 0]
    )
    got = sorted((c["dynamodb"]["Keys"]["pk"]["S"], c["eventName"]) for c in _changes(kept))
    assert got == expected
    assert filtered == 3 * ITEMS - len(expected)
    record = changes[0]
    assert list(record) == [
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    ]
    assert list(record["dynamodb"]) == [
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "SequenceNumber",
        "SizeBytes",
        "StreamViewType",
    ]
    assert record["eventSourceARN"] == arn and record["eventSource"] == "aws:dynamodb"
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], int)
    assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    for event in stream_handlers.events[everything]:
        DynamoDBStreamModel.model_validate(copy.deepcopy(event))
