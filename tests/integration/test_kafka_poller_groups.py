"""Poller groups (PollerGroupName) on the real broker: the mappings of a group share its
pollers, yet each delivers its own records, through its own filter, to its own target, and
commits its own consumer group's offsets; the group's pool stays within its bounds."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from service.daemon import Daemon
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    produce_json,
    running_daemon,
    wait_for,
)

pytestmark = pytest.mark.integration
PARTITIONS = 2
seen: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)


async def record(event: dict[str, Any], context: Any) -> None:
    """Each mapping's handler: what it received, under its function name."""
    for records in event["records"].values():
        seen[context.function_name].extend(records)


async def slow_record(event: dict[str, Any], context: Any) -> None:
    await asyncio.sleep(0.1)
    await record(event, context)


def group_pollers(daemon: Daemon, group: str, kind: str = "current") -> float:
    value = daemon.metrics.registry.get_sample_value(
        "esm_poller_group_pollers", {"group": group, "kind": kind}
    )
    return value or 0.0


async def group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return len(described.groups[0][5])


def grouped(
    name: str, bootstrap: str, unique: str, group: str, handler: str, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mapping of the poller group and its function."""
    mapping = kafka_mapping(
        name,
        bootstrap,
        f"{name}-{unique}",
        f"{name}-g-{unique}",
        FunctionName=name,
        **{"BatchSize": 50, "MaximumBatchingWindowInSeconds": 0.1, **extra},
    )
    mapping["ProvisionedPollerConfig"] = {
        "MinimumPollers": 1,
        "MaximumPollers": 2,
        "PollerGroupName": group,
        **mapping.get("ProvisionedPollerConfig", {}),
    }
    return mapping, {"python": f"{__name__}:{handler}"}


async def test_grouped_mappings_deliver_their_own_records_and_commit_their_own_offsets(
    kafka_bootstrap: str, unique: str
) -> None:
    group = f"pg-{unique}"
    names = [f"pga-{unique}", f"pgb-{unique}", f"pgc-{unique}"]
    mappings, functions = [], {}
    for i, name in enumerate(names):
        await create_topic(kafka_bootstrap, f"{name}-{unique}", PARTITIONS)
        extra: dict[str, Any] = {}
        if i == 1:  # one mapping filters: only its even records reach its target
            extra["FilterCriteria"] = {"Filters": [{"Pattern": '{"value": {"even": [true]}}'}]}
        mapping, function = grouped(name, kafka_bootstrap, unique, group, "record", **extra)
        mappings.append(mapping)
        functions[name] = function
    per_topic = 200
    async with running_daemon({"functions": functions, "mappings": mappings}) as daemon:
        await wait_for(lambda: group_pollers(daemon, group) == 1, 15, "the group's poller")
        for name in names:
            values = [
                (i % PARTITIONS, {"i": i, "even": i % 2 == 0, "to": name}) for i in range(per_topic)
            ]
            await produce_json(kafka_bootstrap, f"{name}-{unique}", values)
        expected = {names[0]: per_topic, names[1]: per_topic // 2, names[2]: per_topic}
        for name, count in expected.items():
            await wait_for(lambda n=name, c=count: len(seen[n]) >= c, 30, f"{count} for {name}")
        for name in names:  # each committed its own group up to the end of its topic
            topic, consumer_group = f"{name}-{unique}", f"{name}-g-{unique}"
            await wait_for(
                lambda t=topic, g=consumer_group: _committed_all(kafka_bootstrap, t, g),
                15,
                f"{consumer_group}'s offsets at the end",
            )
        assert group_pollers(daemon, group) == 1  # three mappings, one poller
        assert await group_members(kafka_bootstrap, f"esmd-pollers-{group}") == 1
        status = {m.name: m.status()["poller"] for m in daemon.mappings}
    for name, count in expected.items():
        got = seen[name]
        assert len(got) == count, f"{name} got {len(got)} records, not {count}"
        assert {r["topic"] for r in got} == {f"{name}-{unique}"}
        assert len({(r["partition"], r["offset"]) for r in got}) == count  # no duplicates
    assert all(s["poller_group"] == group and s["group_pollers"] == 1 for s in status.values())


async def _committed_all(bootstrap: str, topic: str, group: str) -> bool:
    committed, ends = await offsets(bootstrap, topic, group, PARTITIONS)
    return committed == ends


async def test_the_groups_pool_grows_within_its_bounds_and_returns_to_its_minimum(
    kafka_bootstrap: str, unique: str
) -> None:
    """Min 1 and Max 2 (the largest of its mappings') over four partitions: a backlog grows
    the shared pool to 2, never more, and it is back at 1 after the cooldown."""
    group = f"pgs-{unique}"
    names = [f"pgx-{unique}", f"pgy-{unique}"]
    mappings, functions = [], {}
    for name in names:
        await create_topic(kafka_bootstrap, f"{name}-{unique}", PARTITIONS)
        mapping, function = grouped(
            name, kafka_bootstrap, unique, group, "slow_record", BatchSize=10
        )
        mappings.append(mapping)
        functions[name] = function
    mappings[1]["ProvisionedPollerConfig"]["MaximumPollers"] = 1
    config = {
        "scaling": {
            "period_seconds": 0.5,
            "scale_up_after_seconds": 1.0,
            "scale_down_cooldown_seconds": 2.0,
        },
        "functions": functions,
        "mappings": mappings,
    }
    async with running_daemon(config) as daemon:
        await wait_for(lambda: group_pollers(daemon, group) == 1, 15, "the group's poller")
        peak = 0.0

        def sample() -> float:
            nonlocal peak
            peak = max(peak, group_pollers(daemon, group))
            return peak

        # the burst: waves faster than one poller's lanes drain (10 records / 0.1 s each)
        per_topic = 2000
        for wave in range(8):
            for name in names:
                values = [(i % PARTITIONS, {"wave": wave, "i": i}) for i in range(per_topic // 8)]
                await produce_json(kafka_bootstrap, f"{name}-{unique}", values)
            sample()
            await asyncio.sleep(0.5)  # the pace of the burst, not a wait for the daemon
        await wait_for(lambda: sample() >= 2, 20, "the group's pool to grow to 2")
        for name in names:
            await wait_for(lambda n=name: (sample(), len(seen[n]) >= per_topic)[1], 90, name)
        await wait_for(
            lambda: (sample(), group_pollers(daemon, group) == 1)[1], 30, "back to 1 poller"
        )
        assert group_pollers(daemon, group, "desired") == 1
    assert peak == 2, f"the pool reached {peak} pollers; the group's MaximumPollers is 2"
