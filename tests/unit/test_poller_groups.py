"""PollerGroupName: AWS's limits of a group, what shared fetching needs, and the registry."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaError

from service.config import ConfigError, EsmdConfig, MappingConfig, json_schema, parse_config
from service.errors import SourceError
from service.mapping import Mapping
from service.metrics import Metrics
from service.scaling import PollerGroups
from service.sources.kafka_auth import PLAINTEXT
from service.sources.kafka_groups import PollerGroup


def kafka(name: str, group: str = "shared", **extra: Any) -> dict[str, Any]:
    return {
        "Name": name,
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["k:9092"]}},
        "Topics": [f"topic-{name}"],
        "StartingPosition": "LATEST",
        "FunctionName": "f",
        "ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 10}
        | ({"PollerGroupName": group} if group else {}),
        **extra,
    }


def problems(*mappings: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"mappings": list(mappings)})
    return [str(p) for p in info.value.problems]


def test_a_group_of_kafka_mappings_is_accepted() -> None:
    config = parse_config({"mappings": [kafka("a"), kafka("b"), kafka("c", group="")]})
    assert [m.poller_group for m in config.mappings] == ["shared", "shared", None]
    pollers = json_schema()["$defs"]["ProvisionedPollers"]["properties"]
    assert pollers["PollerGroupName"]["anyOf"][0]["maxLength"] == 128


def test_a_group_holds_at_most_100_mappings_and_2000_maximum_pollers() -> None:
    found = problems(*(kafka(f"m{i}") for i in range(101)))
    assert found == [
        "mapping 'm100': ProvisionedPollerConfig.PollerGroupName: "
        "group 'shared' has more than 100 mappings"
    ]
    big = [kafka(f"b{i}") for i in range(2)]
    for m in big:
        m["ProvisionedPollerConfig"]["MaximumPollers"] = 1500
    assert problems(*big) == [
        "mapping 'b1': ProvisionedPollerConfig.PollerGroupName: "
        "the MaximumPollers of group 'shared' add up to 3000, above 2000 (AWS)"
    ]


def test_a_group_reads_one_cluster_and_each_topic_once() -> None:
    other = kafka("b")
    other["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"] = ["other:9092"]
    (found,) = problems(kafka("a"), other)
    assert found.startswith("mapping 'b': ProvisionedPollerConfig.PollerGroupName: group 'shared'")
    assert "other brokers" in found
    twice = kafka("c", Topics=["topic-a"])
    (found,) = problems(kafka("a"), twice)
    assert "topic 'topic-a' is already read by 'a'" in found


def test_sqs_mappings_have_no_poller_group_and_names_follow_aws_pattern() -> None:
    sqs = {
        "Name": "orders",
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:orders",
        "FunctionName": "f",
        "ProvisionedPollerConfig": {"MinimumPollers": 2, "PollerGroupName": "g"},
    }
    assert problems(sqs) == [
        "mapping 'orders': ProvisionedPollerConfig.PollerGroupName: "
        "poller groups are for Kafka (AWS)"
    ]
    (found,) = problems(kafka("a", group="no spaces"))
    assert found.startswith("mapping 'a': ProvisionedPollerConfig.PollerGroupName: String should")


def test_the_registry_makes_a_group_once_and_drops_it() -> None:
    groups = PollerGroups()
    made: list[object] = []

    def make() -> object:
        made.append(object())
        return made[-1]

    first = groups.get("g", make, object)
    assert groups.get("g", make, object) is first and len(made) == 1
    groups.drop("g", object())  # not the registered one: kept
    assert len(groups) == 1
    groups.drop("g", first)
    assert len(groups) == 0


def grouped_context(name: str, topic: str, bootstrap: str = "127.0.0.1:1") -> Any:
    raw = kafka(name, Topics=[topic])
    raw["SelfManagedEventSource"]["Endpoints"]["KAFKA_BOOTSTRAP_SERVERS"] = [bootstrap]
    mapping = Mapping(MappingConfig.model_validate(raw), EsmdConfig(), Metrics())
    mapping.target = object()  # type: ignore[assignment]  # never called here
    return mapping.context()


async def test_a_join_that_fails_leaves_the_group_as_it_was() -> None:
    """No broker: the first mapping's join fails and leaves the group empty, so its retry
    (or another mapping) starts from scratch; a second mapping reading the same topic is
    refused with ESM_CONFIG_NOT_VALID before anything connects."""
    first = grouped_context("a", "t")
    group = PollerGroup("shared", first, ["127.0.0.1:1"], PLAINTEXT)
    with pytest.raises(KafkaError):
        await group.join(first)
    assert group.empty and group.topics == []
    group._members["t"] = first  # as if it had joined
    with pytest.raises(SourceError) as refused:
        await group.join(grouped_context("b", "t"))
    assert refused.value.reason == "ESM_CONFIG_NOT_VALID"
    assert "topic 't' is already read by 'a'" in str(refused.value)
    assert group.topics == ["t"]
