"""DocumentDB: the codec (Lambda's event shape, relaxed Extended JSON), the config rules
and the secret reader."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from bson import SON, Binary, Decimal128, Int64, ObjectId, Regex, Timestamp

from service.config import AwsConfig, SourceKind, parse_config
from service.errors import SourceAuthError
from service.secrets import read_credentials, string_fields, uri_problem
from service.sources.documentdb import ChangeCodec, relaxed
from tests.unit.test_config import problems_of

ARN = "arn:aws:rds:us-east-1:123456789012:cluster:orders"
DOCDB: dict[str, Any] = {
    "Name": "orders-changes",
    "EventSourceArn": ARN,
    "FunctionName": "audit",
    "StartingPosition": "LATEST",
    "DocumentDBEventSourceConfig": {"DatabaseName": "shop", "CollectionName": "orders"},
}
OID = ObjectId("63eeb6e7d418cd98afb1c1d7")


def change(**fields: Any) -> dict[str, Any]:
    return {
        "_id": {"_data": "0163eeb6e7000000090100000009000041e1"},
        "operationType": "insert",
        "clusterTime": Timestamp(1676588775, 9),
        "ns": {"db": "test_database", "coll": "test_collection"},
        "documentKey": {"_id": OID},
        "fullDocument": {"_id": OID, "anyField": "sampleValue"},
        **fields,
    }


def test_the_codec_renders_lambdas_example_event() -> None:
    """AWS's example event ("Process Amazon DocumentDB events with Lambda"), field for field."""
    arn = "arn:aws:rds:us-east-1:123456789012:cluster:canaryclusterb2a659a2-qo5tcmqkcl03"
    codec = ChangeCodec(arn)
    kept, filtered, end = codec.decode([(change(), 7)], None)
    assert (filtered, end) == ([], 8)
    ((record, size, position),) = kept
    assert position == 7
    assert size == len(orjson.dumps(record)) + 1  # with its comma in the events array
    event = codec.make_event([record])
    assert event == {
        "eventSourceArn": arn,
        "events": [
            {
                "event": {
                    "_id": {"_data": "0163eeb6e7000000090100000009000041e1"},
                    "clusterTime": {"$timestamp": {"t": 1676588775, "i": 9}},
                    "documentKey": {"_id": {"$oid": "63eeb6e7d418cd98afb1c1d7"}},
                    "fullDocument": {
                        "_id": {"$oid": "63eeb6e7d418cd98afb1c1d7"},
                        "anyField": "sampleValue",
                    },
                    "ns": {"db": "test_database", "coll": "test_collection"},
                    "operationType": "insert",
                }
            }
        ],
        "eventSource": "aws:docdb",
    }
    # the envelope size the batch builder adds to the records' sizes
    assert codec.envelope_bytes == len(orjson.dumps(codec.make_event([])))


def test_bson_values_become_relaxed_extended_json() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, 15, 250000)
    value = relaxed(
        SON(
            [
                ("i", 7),
                ("long", Int64(2**40)),
                ("f", 2.5),
                ("nan", float("nan")),
                ("inf", float("-inf")),
                ("b", True),
                ("none", None),
                ("date", when),
                ("dec", Decimal128("1.10")),
                ("bin", Binary(b"\x00\xff", 0)),
                ("uuid", Binary(uuid.UUID(int=1).bytes, 4)),
                ("re", Regex("^a", "i")),
                ("list", [OID, {"nested": Timestamp(5, 6)}]),
            ]
        )
    )
    assert value == {
        "i": 7,
        "long": 2**40,
        "f": 2.5,
        "nan": {"$numberDouble": "NaN"},
        "inf": {"$numberDouble": "-Infinity"},
        "b": True,
        "none": None,
        "date": {"$date": "2024-05-01T12:30:15.250Z"},
        "dec": {"$numberDecimal": "1.10"},
        "bin": {"$binary": {"base64": "AP8=", "subType": "00"}},
        "uuid": {"$binary": {"base64": "AAAAAAAAAAAAAAAAAAAAAQ==", "subType": "04"}},
        "re": {"$regularExpression": {"pattern": "^a", "options": "i"}},
        "list": [{"$oid": str(OID)}, {"nested": {"$timestamp": {"t": 5, "i": 6}}}],
    }
    json.dumps(value)  # plain JSON all the way down


def test_update_and_delete_events_pass_through_what_the_cluster_sends() -> None:
    codec = ChangeCodec(ARN)
    update = change(
        operationType="update",
        updateDescription={"updatedFields": {"status": "paid"}, "removedFields": ["x"]},
    )
    delete = change(operationType="delete")
    del delete["fullDocument"]
    kept, _, end = codec.decode([(update, 0), (delete, 1)], None)
    assert end == 2
    events = [k[0]["event"] for k in kept]
    assert events[0]["updateDescription"] == {
        "updatedFields": {"status": "paid"},
        "removedFields": ["x"],
    }
    assert "fullDocument" not in events[1]


def test_the_codec_keeps_each_changes_resume_token_out_of_the_handlers_reach() -> None:
    """The checkpoint's token is taken before the conversion, and as a value that neither
    the conversion nor a handler changing its event can alter."""
    codec = ChangeCodec(ARN)
    binary = change(_id={"_data": Binary(b"\x01\x02")})  # an old server's token
    kept, _, _ = codec.decode([(change(), 0), (binary, 1)], None)
    kept[0][0]["event"]["_id"]["_data"] = "changed by a handler"
    assert list(codec.tokens) == [
        ("0163eeb6e7000000090100000009000041e1", Timestamp(1676588775, 9)),
        ({"_data": Binary(b"\x01\x02")}, Timestamp(1676588775, 9)),
    ]
    assert kept[1][0]["event"]["_id"] == {"_data": {"$binary": {"base64": "AQI=", "subType": "00"}}}


# --- config ---------------------------------------------------------------------------------


def test_aws_defaults_and_kind() -> None:
    (m,) = parse_config({"mappings": [DOCDB]}).mappings
    assert m.source_kind is SourceKind.DOCUMENTDB
    assert (m.batch_size, m.batching_window_seconds) == (100, 0.5)
    assert m.DocumentDBEventSourceConfig is not None
    assert m.DocumentDBEventSourceConfig.FullDocument == "Default"


@pytest.mark.parametrize(
    ("change_", "expected"),
    [
        (
            {"FilterCriteria": {"Filters": [{"Pattern": '{"operationType": ["insert"]}'}]}},
            "FilterCriteria: Lambda does not filter DocumentDB events",
        ),
        ({"MaximumRetryAttempts": 2}, "MaximumRetryAttempts: not for DocumentDB"),
        ({"MaximumRecordAgeInSeconds": 60}, "MaximumRecordAgeInSeconds: not for DocumentDB"),
        ({"BisectBatchOnFunctionError": True}, "BisectBatchOnFunctionError: not for DocumentDB"),
        ({"FunctionResponseTypes": ["ReportBatchItemFailures"]}, "no partial batch responses"),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:1:q"}}},
            "DocumentDB has none",
        ),
        ({"DocumentDBEventSourceConfig": None}, "DocumentDBEventSourceConfig: required"),
        ({"StartingPosition": None}, "StartingPosition: required for DocumentDB"),
        ({"EventSourceArn": "arn:aws:rds:us-east-1:1:db:orders"}, "not a DocumentDB cluster"),
        ({"ParallelizationFactor": 2}, "only Kinesis and DynamoDB Streams mappings have"),
        (
            {"DocumentDBEventSourceConfig": {"DatabaseName": "a.b"}},
            "DocumentDBEventSourceConfig.DatabaseName",
        ),
        (
            {"DocumentDBEventSourceConfig": {"DatabaseName": "a", "FullDocument": "Whole"}},
            "DocumentDBEventSourceConfig.FullDocument",
        ),
        (
            {"SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": "s3://bucket/key"}]},
            "SourceAccessConfigurations[0].URI: 's3://bucket/key' is not a Secrets Manager",
        ),
        (
            {"SourceAccessConfigurations": [{"Type": "SASL_SCRAM_256_AUTH", "URI": "env:X"}]},
            "cannot authenticate DocumentDB sources this way yet",
        ),
    ],
)
def test_refused(change_: dict[str, Any], expected: str) -> None:
    mapping = {k: v for k, v in {**DOCDB, **change_}.items() if v is not None}
    found = problems_of(mapping)
    assert any(expected in p for p in found), found


def test_basic_auth_takes_an_arn_a_variable_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:docdb-AbC4E6"
    monkeypatch.setenv("DOCDB_SECRET", "{}")
    (tmp_path / "docdb.json").write_text("{}")
    for uri in (secret, "env:DOCDB_SECRET", f"file:{tmp_path / 'docdb.json'}"):
        access = [{"Type": "BASIC_AUTH", "URI": uri}, {"Type": "VPC_SUBNET", "URI": "subnet:s"}]
        parse_config({"mappings": [{**DOCDB, "SourceAccessConfigurations": access}]})
    sqs = {
        "Name": "q",
        "EventSourceArn": "arn:aws:sqs:us-east-1:123456789012:q",
        "FunctionName": "f",
        "SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": secret}],
    }
    assert any("cannot authenticate SQS" in p for p in problems_of(sqs))


def test_endpoints_must_be_mongodb_uris() -> None:
    found = problems_of(DOCDB, documentdb={"endpoints": {ARN: "http://127.0.0.1:27017"}})
    assert any("is not a mongodb:// URI" in p for p in found), found


# --- secrets --------------------------------------------------------------------------------


NO_AWS = AwsConfig(endpoint_url="http://127.0.0.1:9")  # no AWS call may be made


async def test_secrets_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCDB_SECRET", '{"username": "u", "password": "p4ss"}')
    secret = await read_credentials("BASIC_AUTH", "env:DOCDB_SECRET", NO_AWS)
    assert string_fields("BASIC_AUTH", secret, "username", "password") == ("u", "p4ss")
    path = tmp_path / "secret.json"
    path.write_text('{"username": "v", "password": "w"}')
    secret = await read_credentials("BASIC_AUTH", f"file:{path}", NO_AWS)
    assert string_fields("BASIC_AUTH", secret, "username", "password") == ("v", "w")


@pytest.mark.parametrize(
    ("env", "uri", "message"),
    [
        (None, "env:DOCDB_MISSING", "DOCDB_MISSING is not set"),
        ("not json p4ss", "env:DOCDB_BAD", "not a JSON object"),
        ('["p4ss"]', "env:DOCDB_BAD", "not a JSON object"),
        ('{"username": "u", "pass": "p4ss"}', "env:DOCDB_BAD", "has no password"),
        (None, "file:/nonexistent/secret.json", "no such file"),
    ],
)
async def test_unusable_secrets_are_authn_errors_that_do_not_show_the_value(
    env: str | None, uri: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv("DOCDB_BAD", env)
    with pytest.raises(SourceAuthError) as caught:
        secret = await read_credentials("BASIC_AUTH", uri, NO_AWS)
        string_fields("BASIC_AUTH", secret, "username", "password")
    assert message in str(caught.value)
    assert "p4ss" not in str(caught.value)
    assert caught.value.reason == "EVENT_SOURCE_AUTHN_ERROR"


def test_uri_problems() -> None:
    assert uri_problem("arn:aws:secretsmanager:us-east-1:123456789012:secret:x") is None
    assert uri_problem("env:") is not None
    assert uri_problem("file:") is not None
    assert uri_problem("arn:aws:sqs:us-east-1:1:q") is not None
