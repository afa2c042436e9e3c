from __future__ import annotations

import json

import pytest
import structlog

from service.config import ConfigError, parse_config
from service.logs import configure_logging


def test_logging_config_sets_a_level_per_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    try:
        configure_logging("INFO", json=True, per_mapping={"loud": "DEBUG", "quiet": "WARN"})
        log = structlog.get_logger("test")
        log.bind(mapping="loud").debug("loud debug")
        log.bind(mapping="quiet").info("quiet info")
        log.bind(mapping="quiet").warning("quiet warning")
        log.bind(mapping="other").debug("other debug")
        log.info("daemon info")
        lines = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
        assert lines == ["loud debug", "quiet warning", "daemon info"]
    finally:
        structlog.configure(**saved)


def test_metrics_and_logging_config_are_accepted_where_aws_has_them() -> None:
    kafka = {
        "Name": "k",
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["k:9092"]}},
        "Topics": ["t"],
        "StartingPosition": "LATEST",
        "FunctionName": "f",
        "MetricsConfig": {"Metrics": ["EventCount", "ErrorCount", "KafkaMetrics"]},
        "LoggingConfig": {"SystemLogLevel": "DEBUG"},
    }
    parse_config({"mappings": [kafka]})
    sqs = {
        "Name": "q",
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:q",
        "FunctionName": "f",
        "MetricsConfig": {"Metrics": ["EventCount", "KafkaMetrics"]},
        "LoggingConfig": {"SystemLogLevel": "WARN"},
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": [sqs]})
    assert {p.field for p in info.value.problems} == {"MetricsConfig.Metrics", "LoggingConfig"}
