from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from service.cli import main
from service.config import (
    ConfigError,
    SourceKind,
    expand_env,
    json_schema,
    load_config,
    parse_config,
)

KAFKA = {
    "Name": "clicks",
    "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["127.0.0.1:9092"]}},
    "Topics": ["clicks"],
    "StartingPosition": "TRIM_HORIZON",
    "FunctionName": "audit",
}
SQS = {
    "Name": "orders",
    "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:orders",
    "FunctionName": "orders-handler",
}


def test_aws_defaults_per_source() -> None:
    config = parse_config({"mappings": [KAFKA, SQS]})
    kafka, sqs = config.mappings
    assert kafka.source_kind is SourceKind.KAFKA
    assert (kafka.batch_size, kafka.batching_window_seconds) == (100, 0.5)
    assert (sqs.batch_size, sqs.batching_window_seconds) == (10, 0)
    assert kafka.MaximumRetryAttempts == -1 and kafka.MaximumRecordAgeInSeconds == -1
    # AWS names the consumer group after the mapping's UUID when none is given
    assert kafka.consumer_group_id == kafka.uuid
    assert len(kafka.uuid) == 36


def test_consumer_group_id_from_config() -> None:
    m = parse_config(
        {"mappings": [{**KAFKA, "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": "g1"}}]}
    ).mappings[0]
    assert m.consumer_group_id == "g1"


def test_every_error_is_listed_with_mapping_and_field() -> None:
    bad = [
        {**KAFKA, "BatchSize": 20000},
        {**SQS, "BatchSize": 50},  # above 10 without a batching window
        {**KAFKA, "Name": "third", "StartingPosition": "YESTERDAY", "Topics": None},
    ]
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": bad})
    text = str(info.value)
    assert "mapping 'clicks': BatchSize:" in text
    assert "mapping 'orders': BatchSize: above 10" in text
    assert "mapping 'third': StartingPosition:" in text
    assert len(info.value.problems) == 3


def test_unknown_keys_and_filter_limits() -> None:
    too_many = {"Filters": [{"Pattern": "{}"}] * 6}
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [{**KAFKA, "BatchSzie": 5, "FilterCriteria": too_many}]})
    fields = {p.field for p in info.value.problems}
    assert {"BatchSzie", "FilterCriteria.Filters"} <= fields


def test_invalid_filter_pattern_names_its_index() -> None:
    flt = {"Filters": [{"Pattern": '{"value": {"a": [1]}}'}, {"Pattern": "{not json"}]}
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [{**KAFKA, "FilterCriteria": flt}]})
    assert [p.field for p in info.value.problems] == ["FilterCriteria.Filters[1].Pattern"]


def test_env_expansion() -> None:
    env = {"BROKER": "kafka:9092"}
    assert expand_env({"a": ["${BROKER}", "x${MISSING:-d}"]}, env) == {"a": ["kafka:9092", "xd"]}
    with pytest.raises(KeyError, match=r"a\.b: environment variable NOPE is not set"):
        expand_env({"a": {"b": "${NOPE}"}}, env)


def test_load_config_expands_env(tmp_path: Path) -> None:
    path = tmp_path / "esmd.yaml"
    path.write_text(
        textwrap.dedent("""
        mappings:
          - Name: clicks
            SelfManagedEventSource: {Endpoints: {KAFKA_BOOTSTRAP_SERVERS: ["${B}"]}}
            Topics: [clicks]
            StartingPosition: LATEST
            FunctionName: f
    """)
    )
    config = load_config(path, env={"B": "h:1"})
    assert config.mappings[0].SelfManagedEventSource is not None
    assert config.mappings[0].SelfManagedEventSource.Endpoints.KAFKA_BOOTSTRAP_SERVERS == ["h:1"]


def test_validate_cli_prints_three_mistakes_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent("""
        functions:
          audit: {url: "http://127.0.0.1:8080/"}
        mappings:
          - Name: clicks
            SelfManagedEventSource: {Endpoints: {KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9092"]}}
            Topics: [clicks]
            StartingPosition: TRIM_HORIZON
            FunctionName: audit
            BatchSize: 0
          - Name: orders
            EventSourceArn: arn:aws:sqs:us-east-1:000000000000:orders
            FunctionName: audit
            MaximumRecordAgeInSeconds: 30
          - Name: views
            SelfManagedEventSource: {Endpoints: {KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9092"]}}
            Topics: [views]
            StartingPosition: TRIM_HORIZON
            FunctionName: audit
            FilterCriteria: {Filters: [{Pattern: '{"value": {"n": [{"numeric": [">"]}]}}'}]}
    """)
    )
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mapping 'clicks': BatchSize:" in err
    assert "mapping 'orders': MaximumRecordAgeInSeconds:" in err
    assert "mapping 'views': FilterCriteria.Filters[0].Pattern:" in err
    assert "3 error(s)" in err


def test_validate_ok_and_schema_via_console_script(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "mappings:\n  - {Name: a, EventSourceArn: 'arn:aws:sqs:us-east-1:1:q', FunctionName: f}\n"
    )
    ok = subprocess.run(
        [sys.executable, "-m", "service", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    schema = subprocess.run(
        [sys.executable, "-m", "service", "schema"], capture_output=True, text=True, check=True
    )
    assert '"MappingConfig"' in schema.stdout and '"BatchSize"' in schema.stdout


def test_sqs_provisioned_pollers_start_at_two_as_in_aws() -> None:
    one = {**SQS, "ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 5}}
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [one]})
    assert str(info.value.problems[0]) == (
        "mapping 'orders': ProvisionedPollerConfig.MinimumPollers: "
        "SQS mappings need at least 2 (AWS)"
    )
    two = {**SQS, "ProvisionedPollerConfig": {"MinimumPollers": 2, "MaximumPollers": 5}}
    assert parse_config({"mappings": [two]}).mappings[0].ProvisionedPollerConfig is not None


def test_sqs_provisioned_ranges_and_exclusive_with_scaling_config() -> None:
    """The API reference: SQS MaximumPollers 2 to 10,000, Kafka 1 to 2,000; ScalingConfig
    and ProvisionedPollerConfig are the two exclusive ways to size an SQS mapping."""
    ten_k = {**SQS, "ProvisionedPollerConfig": {"MaximumPollers": 10000}}
    assert parse_config({"mappings": [ten_k]}).mappings[0].ProvisionedPollerConfig is not None
    both = {
        **SQS,
        "ScalingConfig": {"MaximumConcurrency": 50},
        "ProvisionedPollerConfig": {"MinimumPollers": 2},
    }
    too_few = {**SQS, "Name": "few", "ProvisionedPollerConfig": {"MaximumPollers": 1}}
    too_many = {**SQS, "Name": "many", "ProvisionedPollerConfig": {"MaximumPollers": 10001}}
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [both, too_few, too_many]})
    problems = [str(p) for p in info.value.problems]
    assert problems[0] == (
        "mapping 'orders': ScalingConfig: an SQS mapping takes ScalingConfig (on demand) or "
        "ProvisionedPollerConfig (provisioned mode), not both, as AWS requires"
    )
    assert problems[1].startswith("mapping 'few': ProvisionedPollerConfig.MaximumPollers: ")
    assert problems[2].startswith("mapping 'many': ProvisionedPollerConfig.MaximumPollers")
    # {} is on demand, so it may sit beside ScalingConfig
    off = {**SQS, "ScalingConfig": {"MaximumConcurrency": 50}, "ProvisionedPollerConfig": {}}
    assert parse_config({"mappings": [off]}).mappings[0].ScalingConfig is not None


def test_kafka_maximum_pollers_stay_within_2000() -> None:
    kafka = {
        "Name": "clicks",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["h:9092"]}},
        "Topics": ["clicks"],
        "StartingPosition": "LATEST",
        "FunctionName": "f",
        "ProvisionedPollerConfig": {"MaximumPollers": 2001},
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [kafka]})
    assert str(info.value.problems[0]) == (
        "mapping 'clicks': ProvisionedPollerConfig.MaximumPollers: "
        "Kafka mappings allow at most 2,000 (AWS)"
    )


KINESIS = {
    "Name": "events",
    "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
    "StartingPosition": "LATEST",
    "FunctionName": "f",
}


def problems_of(*mappings: dict[str, Any], **rest: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({**rest, "mappings": list(mappings)})
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("destination", "what"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:failures.fifo", "an SQS FIFO queue"),
        ("arn:aws:sns:us-east-1:123456789012:failures.fifo", "an SNS FIFO topic"),
    ],
)
def test_fifo_on_failure_destinations_are_refused(destination: str, what: str) -> None:
    on_failure = {"DestinationConfig": {"OnFailure": {"Destination": destination}}}
    for mapping in ({**KAFKA, **on_failure}, {**KINESIS, **on_failure}):
        (found,) = problems_of(mapping)
        field = f"mapping {mapping['Name']!r}: DestinationConfig.OnFailure.Destination: "
        assert found.startswith(f"{field}{destination!r} is {what}: ")
        assert "FIFO" in found and "standard queue or topic" in found
    # the standard queue or topic of the same name is fine
    standard = {"DestinationConfig": {"OnFailure": {"Destination": destination[:-5]}}}
    parse_config({"mappings": [{**KAFKA, **standard}, {**KINESIS, **standard}]})


def test_kinesis_enhanced_fan_out_consumers_are_refused_with_the_stream_to_use() -> None:
    consumer = "arn:aws:kinesis:us-east-1:123456789012:stream/events/consumer/fan:1700000000"
    (found,) = problems_of({**KINESIS, "EventSourceArn": consumer})
    assert found.startswith("mapping 'events': EventSourceArn: ")
    assert "enhanced fan-out consumers" in found and "not support" in found
    assert found.endswith("use the stream ARN arn:aws:kinesis:us-east-1:123456789012:stream/events")


def test_validate_cli_refuses_a_consumer_arn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "efo.yaml"
    path.write_text(
        textwrap.dedent("""
        mappings:
          - Name: events
            EventSourceArn: arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000
            StartingPosition: LATEST
            FunctionName: f
    """)
    )
    assert main(["validate", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mapping 'events': EventSourceArn: a Kinesis enhanced fan-out consumer ARN" in err


def test_an_event_source_arn_with_parts_missing_is_named() -> None:
    (found,) = problems_of({**SQS, "EventSourceArn": "arn:aws:sqs:us-east-1"})
    assert found.startswith("mapping 'orders': EventSourceArn: not a whole ARN")


def test_account_id_is_twelve_digits_and_defaults_to_zeros() -> None:
    assert parse_config({}).aws.account_id == "000000000000"
    assert parse_config({"aws": {"account_id": "123456789012"}}).aws.account_id == "123456789012"
    found = problems_of(SQS, aws={"account_id": "12345"})
    assert len(found) == 1 and found[0].startswith("aws.account_id: ")


def test_role_arn_must_be_an_iam_role() -> None:
    role = "arn:aws:iam::123456789012:role/ingest"
    config = parse_config({"functions": {"f": {"url": "http://x/", "role_arn": role}}})
    assert config.functions["f"].role_arn == role
    (found,) = problems_of(SQS, functions={"f": {"url": "http://x/", "role_arn": "ingest"}})
    assert found.startswith("functions.f.role_arn: ") and "IAM role ARN" in found


def test_function_arn_in_payloads() -> None:
    config = parse_config(
        {
            "aws": {"region": "eu-west-1", "account_id": "111122223333"},
            "functions": {
                "local": {"python": "m:f"},
                "named": {"lambda": "thumbs"},
                "arn": {"lambda": "arn:aws:lambda:us-east-2:444455556666:function:t:live"},
                "partial": {"lambda": "444455556666:function:t"},
            },
            "mappings": [
                {**SQS, "Name": n, "FunctionName": n}
                for n in ("local", "named", "arn", "partial", "unlisted")
            ],
        }
    )
    arns = [config.function_arn(m) for m in config.mappings]
    assert arns == [
        "arn:aws:lambda:eu-west-1:111122223333:function:local",
        "arn:aws:lambda:eu-west-1:111122223333:function:thumbs",  # the lambda target's name
        "arn:aws:lambda:us-east-2:444455556666:function:t:live",  # an ARN is kept as given
        "arn:aws:lambda:eu-west-1:444455556666:function:t",
        "arn:aws:lambda:eu-west-1:111122223333:function:unlisted",
    ]
    default = parse_config({"mappings": [SQS]})
    assert default.function_arn(default.mappings[0]) == (
        "arn:aws:lambda:us-east-1:000000000000:function:orders-handler"
    )


def test_invoke_identity_arn_is_the_role_or_esmd_in_the_source_account() -> None:
    role = "arn:aws:iam::123456789012:role/ingest"
    ddb = "arn:aws-cn:dynamodb:cn-north-1:444455556666:table/t/stream/x"
    config = parse_config(
        {
            "aws": {"account_id": "111122223333"},
            "functions": {"with-role": {"url": "http://x/", "role_arn": role}},
            "mappings": [
                {**KINESIS, "Name": "a", "FunctionName": "with-role"},
                {**KINESIS, "Name": "b"},
                {**KINESIS, "Name": "c", "EventSourceArn": ddb},
                {**KAFKA, "Name": "d"},  # self-managed Kafka: no source account
            ],
        }
    )
    assert [config.invoke_identity_arn(m) for m in config.mappings] == [
        role,
        "arn:aws:iam::123456789012:role/esmd",
        "arn:aws-cn:iam::444455556666:role/esmd",
        "arn:aws:iam::111122223333:role/esmd",
    ]


def test_destination_retry_settings() -> None:
    retry = parse_config({}).retry
    assert (retry.destination_attempts, retry.block_on_destination_failure) == (10, False)
    retry = parse_config(
        {"retry": {"destination_attempts": 3, "block_on_destination_failure": True}}
    ).retry
    assert (retry.destination_attempts, retry.block_on_destination_failure) == (3, True)
    (found,) = problems_of(SQS, retry={"destination_attempts": 0})
    assert found.startswith("retry.destination_attempts: ")
    described = json_schema()["$defs"]["RetryConfig"]["properties"]
    assert "dropped" in described["destination_attempts"]["description"]
    assert "as long as the mapping runs" in described["block_on_destination_failure"]["description"]


def test_source_authentication_esmd_cannot_honour_is_refused() -> None:
    """A Type esmd cannot use must not pass and then connect without it (the Kafka rules
    are in tests/unit/test_kafka_access.py)."""
    mapping = {
        "Name": "auth",
        "FunctionName": "f",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["b:9092"]}},
        "Topics": ["t"],
        "StartingPosition": "LATEST",
        "SourceAccessConfigurations": [
            {"Type": "VPC_SUBNET", "URI": "subnet:subnet-1"},
            {"Type": "IAM_OAUTHBEARER_AUTH"},
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [mapping]})
    assert [p.field for p in info.value.problems] == ["SourceAccessConfigurations[1].Type"]
    assert "IAM_OAUTHBEARER_AUTH" in str(info.value)
