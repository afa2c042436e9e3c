"""``esmd test-filter`` on typed sample lines: every source's input shape, the verdicts, and
the errors that name a bad line."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from service.cli import main

FILTER = {"Filters": [{"Pattern": '{"%s": {"status": ["COMPLETED"]}}'}]}


def _config(tmp_path: Path, mapping: dict[str, Any], payload_key: str) -> str:
    filters = json.loads(json.dumps(FILTER).replace("%s", payload_key))
    config = {
        "functions": {"fn": {"python": "service.examples.handlers:handle"}},
        "mappings": [{"Name": "m", "FunctionName": "fn", "FilterCriteria": filters, **mapping}],
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(json.dumps(config))
    return str(path)


KAFKA = {
    "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:1"]}},
    "Topics": ["t"],
    "StartingPosition": "TRIM_HORIZON",
}
SQS = {"EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q"}
MQ = {
    "EventSourceArn": "arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
    "Queues": ["q"],
    "SourceAccessConfigurations": [
        {"Type": "BASIC_AUTH", "URI": "arn:aws:secretsmanager:us-east-1:000000000000:secret:mq"}
    ],
}
KINESIS = {
    "EventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
    "StartingPosition": "TRIM_HORIZON",
}
DDB = {
    "EventSourceArn": (
        "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2024-01-01T00:00:00.000"
    ),
    "StartingPosition": "TRIM_HORIZON",
}


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, lines: list[Any], *extra: str
) -> tuple[int, list[dict[str, Any]], str]:
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    code = main(["test-filter", "-c", config, "--mapping", "m", str(events), "--json", *extra])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


@pytest.mark.parametrize(
    ("mapping", "key", "kept", "dropped"),
    [
        (KAFKA, "value", {"value": {"status": "COMPLETED"}}, {"value": "COMPLETED"}),
        (SQS, "body", {"body": '{"status": "COMPLETED"}'}, {"body": {"status": "NEW"}}),
        (KINESIS, "data", {"data": {"status": "COMPLETED"}}, {"data": "plain"}),
        (MQ, "data", {"data": {"status": "COMPLETED"}}, {"data": "plain"}),
    ],
)
def test_payload_sources(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mapping: dict[str, Any],
    key: str,
    kept: dict[str, Any],
    dropped: dict[str, Any],
) -> None:
    config = _config(tmp_path, mapping, key)
    code, verdicts, _ = _run(tmp_path, capsys, config, [kept, "", dropped])
    assert code == 0
    assert [(v["where"], v["kept"], v["matched"]) for v in verdicts] == [
        ("line 1", True, [0]),
        ("line 3", False, []),
    ]


def test_base64_payloads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, KINESIS, "data")
    data = base64.b64encode(b'{"status": "COMPLETED"}').decode()
    code, verdicts, _ = _run(tmp_path, capsys, config, [{"data": data}], "--base64")
    assert code == 0 and verdicts[0]["kept"]
    code, _, err = _run(tmp_path, capsys, config, [{"data": "not base64!"}], "--base64")
    assert code == 2 and "line 1: data is not base64" in err


def test_sqs_message_attributes_and_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "esmd.yaml"
    pattern = (
        '{"messageAttributes": {"tier": {"stringValue": ["gold"]}}, "attributes": {"x": ["1"]}}'
    )
    config.write_text(
        json.dumps(
            {
                "functions": {"fn": {"python": "service.examples.handlers:handle"}},
                "mappings": [
                    {
                        "Name": "m",
                        "FunctionName": "fn",
                        "FilterCriteria": {"Filters": [{"Pattern": pattern}]},
                        **SQS,
                    }
                ],
            }
        )
    )
    gold = {"dataType": "String", "stringValue": "gold"}
    lines = [
        {"body": "x", "messageAttributes": {"tier": gold}, "attributes": {"x": "1"}},
        {"body": "x", "messageAttributes": {"tier": {"DataType": "String", "StringValue": "gold"}}},
    ]
    code, verdicts, _ = _run(tmp_path, capsys, str(config), lines)
    assert code == 0
    assert [v["kept"] for v in verdicts] == [True, False]


def test_dynamodb_stream_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "esmd.yaml"
    pattern = (
        '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["COMPLETED"]}}}}'
    )
    config.write_text(
        json.dumps(
            {
                "functions": {"fn": {"python": "service.examples.handlers:handle"}},
                "mappings": [
                    {
                        "Name": "m",
                        "FunctionName": "fn",
                        "FilterCriteria": {"Filters": [{"Pattern": pattern}]},
                        **DDB,
                    }
                ],
            }
        )
    )
    image = {"status": {"S": "COMPLETED"}, "blob": {"B": "AAE="}}
    lines = [
        {"eventName": "INSERT", "dynamodb": {"Keys": {"id": {"S": "1"}}, "NewImage": image}},
        {"eventName": "MODIFY", "dynamodb": {"Keys": {"id": {"S": "1"}}, "NewImage": image}},
    ]
    code, verdicts, _ = _run(tmp_path, capsys, str(config), lines)
    assert code == 0
    assert [v["kept"] for v in verdicts] == [True, False]


def test_text_output_names_the_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, KAFKA, "value")
    events = tmp_path / "events.jsonl"
    events.write_text('{"value": {"status": "COMPLETED"}}\n{"value": {"status": "NEW"}}\n')
    assert main(["test-filter", "-c", config, "--mapping", "m", str(events)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["line", "1", "t-0@0", "KEPT"]
    assert 'filter 0: {"value": {"status": ["COMPLETED"]}}' in out[0]
    assert "FILTERED OUT  no filter matched" in out[1]
    assert out[2] == "2 record(s): 1 kept, 1 filtered out (1 filter(s))"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not JSON"),
        ("[1]", "line 2: not a JSON object"),
        ('{"key": "k"}', 'line 2: needs "value"'),
    ],
)
def test_a_bad_line_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    config = _config(tmp_path, KAFKA, "value")
    code, _, err = _run(tmp_path, capsys, config, [{"value": 1}, line])
    assert code == 2
    assert message in err


def test_an_unknown_mapping_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, KAFKA, "value")
    assert main(["test-filter", "-c", config, "--mapping", "nope", "/dev/null"]) == 2
    assert "no mapping 'nope'" in capsys.readouterr().err
