"""The Grafana dashboard against a real Prometheus scraping a running esmd.

Prometheus is Debian's package (service/devtools), scraping every second the targets
listed in its file_sd folder; this test adds its daemon there. The daemon runs Kafka, SQS
and Kinesis mappings (Kinesis when service.sources has it) with traffic that moves every counter:
records kept and filtered out, batches that fail, records dropped or sent to an OnFailure
destination, SQS deletes, Kafka commits, and a mapping whose queue does not exist (errors).
Then every query of ``deploy/grafana/esmd-dashboard.json``, with ``$mapping`` set to this
test's mappings as Grafana would for a multi-value selection, must return data through
Prometheus's HTTP API.

"Returns data" means a finite value above 0 at some point of the run: every esmd counter
exists at 0 from the mapping's start, so a non-empty answer alone would pass for a panel
whose metric never moves. A query that fails is named with the reason, so a missing source
or feature shows as exactly the panels it leaves empty.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

from service.config import parse_config
from service.daemon import Daemon, unsupported
from service.devtools.servers import prometheus_binary
from service.sources import SOURCES
from service.sources.kinds import SourceKind
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    produce_json,
    running_daemon,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "esmd-dashboard.json"
ACCOUNT = "000000000000"
PARTITIONS = 2
#: Kafka records per wave; 1 in FAIL_EVERY is marked fail, 1 in FILTER_EVERY filtered out
WAVE = 2000
WAVES = 2
FAIL_EVERY = 400
FILTER_EVERY = 5
SQS_MESSAGES = 200
#: SQS messages that fail stay in the queue (their visibility timeout outlasts the test)
SQS_FAIL_EVERY = 40
#: Grafana's $__rate_interval for a 1 s scrape interval and a 1 s step: max(1s + 1s, 4 x 1s)
RATE_INTERVAL = "4s"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / legend, expr) of every target of every panel, rows included."""
    board = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    return [
        (f"{p['title']} / {t.get('legendFormat', t['refId'])}", t["expr"])
        for p in panels(board["panels"])
        for t in p.get("targets", [])
    ]


def regex_value(value: str) -> str:
    """A value escaped as Grafana escapes a multi-value variable for Prometheus: regex
    metacharacters get a backslash, itself doubled inside the PromQL string literal."""
    return re.sub(r"([\\^$*+?.()|{}\[\]'])", r"\\\\\1", value)


def render(expr: str, mappings: list[str]) -> str:
    """The query as Grafana sends it: a multi-value ``$mapping`` becomes a regex alternation,
    ``$__rate_interval`` its value for this scrape interval. Anything left is a variable the
    dashboard does not define."""
    alternation = "(" + "|".join(map(regex_value, mappings)) + ")"
    out = expr.replace("$__rate_interval", RATE_INTERVAL)
    out = re.sub(r"\$\{mapping(?::\w+)?\}|\$mapping\b", lambda _: alternation, out)
    assert "$" not in out, f"unknown variable in {expr!r}"
    return out


def test_dashboard_is_provisionable() -> None:
    """What Grafana needs to load and run it: the compose datasource's uid on every panel and
    query, a ``mapping`` variable from label_values, and only known variables in queries."""
    board = json.loads(DASHBOARD.read_text())
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "mapping"]
    assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    assert variable["definition"].startswith("label_values(")
    for p in board["panels"]:
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "prometheus" == p["datasource"]["uid"]
            assert 'mapping=~"$mapping"' in t["expr"], t["expr"]
            render(t["expr"], ["m"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert len(dashboard_queries()) >= 18


def test_compose_prometheus_config_is_valid(prometheus_endpoint: str) -> None:
    """deploy/prometheus/prometheus.yml, checked by promtool of the same package: a config
    Prometheus refuses would leave the compose stack's dashboard empty."""
    promtool = prometheus_binary().with_name("promtool")
    config = REPO / "deploy" / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [str(promtool), "check", "config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Prometheus ---------------------------------------------------------------------------


async def prometheus_targets_dir(session: aiohttp.ClientSession, endpoint: str) -> Path:
    """The file_sd folder of the running Prometheus, read from its own config, so the test
    works with whichever checkout started it."""
    async with session.get(f"{endpoint}/api/v1/status/config") as resp:
        config = yaml.safe_load((await resp.json())["data"]["yaml"])
    for job in config.get("scrape_configs", []):
        for sd in job.get("file_sd_configs", []):
            return Path(sd["files"][0]).parent
    raise AssertionError(f"the Prometheus on {endpoint} has no file_sd_configs: not ours")


@contextlib.contextmanager
def scraped(targets: Path, name: str, address: tuple[str, int]) -> Iterator[str]:
    """Add the daemon to Prometheus's targets for the block; yields its ``instance`` label."""
    instance = f"{address[0]}:{address[1]}"
    path = targets / f"test-{name}.json"
    tmp = path.with_suffix(".tmp")  # written whole, then renamed: never read half-written
    tmp.write_text(json.dumps([{"targets": [instance], "labels": {"esmd_test": name}}]))
    tmp.rename(path)
    try:
        yield instance
    finally:
        path.unlink(missing_ok=True)


async def query_range(
    session: aiohttp.ClientSession, endpoint: str, query: str, start: float
) -> list[float]:
    """Every value of every series of ``query`` from ``start`` to now, 1 s apart."""
    params = {"query": query, "start": f"{start:.3f}", "end": f"{time.time():.3f}", "step": "1"}
    async with session.get(f"{endpoint}/api/v1/query_range", params=params) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{query}: {body}"
    return [float(v) for series in body["data"]["result"] for _, v in series["values"]]


async def scrapes_since(
    session: aiohttp.ClientSession, endpoint: str, instance: str, since: float
) -> int:
    """How many times Prometheus has scraped ``instance`` since the wall-clock time ``since``."""
    window_ms = max(1, int((time.time() - since) * 1000))
    query = f'count_over_time(up{{instance="{instance}"}}[{window_ms}ms])'
    async with session.get(f"{endpoint}/api/v1/query", params={"query": query}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{query}: {body}"
    return sum(int(float(series["value"][1])) for series in body["data"]["result"])


def moved(values: list[float]) -> bool:
    return any(math.isfinite(v) and v > 0 for v in values)


# --- sources ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def aws(service: str, endpoint: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        service, region_name="us-east-1", endpoint_url=endpoint
    ) as client:
        yield client


async def send_sqs(sqs: Any, url: str, bodies: list[dict[str, Any]]) -> None:
    for i in range(0, len(bodies), 10):
        entries = [
            {"Id": str(j), "MessageBody": json.dumps(b)} for j, b in enumerate(bodies[i : i + 10])
        ]
        await sqs.send_message_batch(QueueUrl=url, Entries=entries)


def records(start: int, count: int, fail_every: int = FAIL_EVERY) -> list[dict[str, Any]]:
    """Test records: 1 in FILTER_EVERY is filtered out, 1 in ``fail_every`` fails (its batch,
    or with ReportBatchItemFailures itself)."""
    return [
        {"seq": i, "keep": i % FILTER_EVERY != 0, "fail": i % fail_every == fail_every - 1}
        for i in range(start, start + count)
    ]


def keep_filter(payload_key: str) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps({payload_key: {"keep": [True]}})}]}


def sample(daemon: Daemon, name: str, mapping: str, source: str) -> float:
    """A sample's value for one mapping, summed over any other label (esm_errors_total: kind)."""
    return sum(
        s.value
        for family in daemon.metrics.registry.collect()
        for s in family.samples
        if s.name == name and (s.labels.get("mapping"), s.labels.get("source")) == (mapping, source)
    )


@pytest.fixture
def refusing_registry() -> Iterator[str]:
    """A registry URL whose port is bound but never listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_every_dashboard_query_returns_data(
    refusing_registry: str,
    kafka_bootstrap: str,
    elasticmq_endpoint: str,
    moto_endpoint: str,
    prometheus_endpoint: str,
    unique: str,
) -> None:
    topic = f"dash-{unique}"
    names = {
        "kafka": f"dash-kafka-{unique}",  # failed batches are dropped
        "kafka_dest": f"dash-kafka-dest-{unique}",  # failed batches go to the OnFailure queue
        "sqs": f"dash-sqs-{unique}",
        "broken": f"dash-broken-{unique}",  # its queue does not exist: esm_errors_total
        "kinesis": f"dash-kinesis-{unique}",
        "grouped": f"dash-grouped-{unique}",  # in a poller group: pollers per group
        "schema": f"dash-schema-{unique}",  # its schema registry refuses: schema_registry errors
    }
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    framed_topic = f"dash-framed-{unique}"
    await create_topic(kafka_bootstrap, framed_topic, 1)
    async with aws("sqs", elasticmq_endpoint) as sqs:
        queue_url = (await sqs.create_queue(QueueName=names["sqs"]))["QueueUrl"]
        await sqs.create_queue(QueueName=f"{names['kafka_dest']}-failures")
        mappings: list[dict[str, Any]] = [
            kafka_mapping(
                names["kafka"],
                kafka_bootstrap,
                topic,
                names["kafka"],
                FunctionName="kafka",
                BatchSize=50,
                MaximumBatchingWindowInSeconds=0.2,
                MaximumRetryAttempts=0,
                FilterCriteria=keep_filter("value"),
            ),
            kafka_mapping(
                names["kafka_dest"],
                kafka_bootstrap,
                topic,
                names["kafka_dest"],
                FunctionName="kafka",
                BatchSize=50,
                MaximumBatchingWindowInSeconds=0.2,
                MaximumRetryAttempts=0,
                DestinationConfig={
                    "OnFailure": {
                        "Destination": f"arn:aws:sqs:us-east-1:{ACCOUNT}:"
                        f"{names['kafka_dest']}-failures"
                    }
                },
            ),
            {
                "Name": names["sqs"],
                "EventSourceArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{names['sqs']}",
                "FunctionName": "sqs",
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
                "FilterCriteria": keep_filter("body"),
            },
            kafka_mapping(
                names["grouped"],
                kafka_bootstrap,
                topic,
                names["grouped"],
                FunctionName="kafka",
                ProvisionedPollerConfig={"PollerGroupName": f"dash-{unique}"},
            ),
            kafka_mapping(
                names["schema"],
                kafka_bootstrap,
                framed_topic,
                names["schema"],
                FunctionName="kafka",
                ProvisionedPollerConfig={"MinimumPollers": 1, "MaximumPollers": 1},
            ),
            {
                "Name": names["broken"],
                "EventSourceArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{names['broken']}",
                "FunctionName": "sqs",
            },
        ]
        mappings[4]["SelfManagedKafkaEventSourceConfig"]["SchemaRegistryConfig"] = {
            "SchemaRegistryURI": refusing_registry,
            "EventRecordFormat": "JSON",
            "SchemaValidationConfigs": [{"Attribute": "VALUE"}],
        }
        stream_arn = await kinesis_stream(moto_endpoint, names["kinesis"])
        if stream_arn is not None:
            mappings.append(
                {
                    "Name": names["kinesis"],
                    "EventSourceArn": stream_arn,
                    "FunctionName": "stream",
                    "StartingPosition": "TRIM_HORIZON",
                    "BatchSize": 50,
                    "MaximumRetryAttempts": 0,
                    "FilterCriteria": keep_filter("data"),
                }
            )
        config: dict[str, Any] = {
            "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5},
            "aws": {"endpoint_url": moto_endpoint, "endpoints": {"sqs": elasticmq_endpoint}},
            "functions": {
                fn: {"python": f"tests.integration.dashboard_handlers:{fn}"}
                for fn in ("kafka", "sqs", "stream")
            },
            "mappings": mappings,
        }
        # destinations that this build refuses would only be dropped: leave them out, and the
        # on-failure query below reports the panel as empty
        if any("DestinationConfig" in p for p in unsupported(parse_config(config, "test"))):
            del mappings[1]["DestinationConfig"]

        async with (
            aiohttp.ClientSession() as http,
            running_daemon(config) as daemon,
        ):
            started = time.time()
            targets = await prometheus_targets_dir(http, prometheus_endpoint)
            with scraped(targets, unique, daemon.address) as instance:

                async def up() -> bool:
                    query = f'up{{instance="{instance}"}} == 1'
                    return bool(await query_range(http, prometheus_endpoint, query, started))

                await wait_for(up, 15, f"Prometheus to scrape the daemon on {instance}")

                async def scraped_twice(since: float) -> None:
                    async def twice() -> bool:
                        return await scrapes_since(http, prometheus_endpoint, instance, since) >= 2

                    await wait_for(twice, 15, f"two scrapes of {instance}")

                # traffic only now, so scrapes see the counters move and the backlog form: two
                # scrapes after each wave, before the next
                for wave in range(WAVES):
                    values = records(wave * WAVE, WAVE)
                    await produce_json(
                        kafka_bootstrap, topic, [(i % PARTITIONS, v) for i, v in enumerate(values)]
                    )
                    if wave == 0:
                        # Confluent's framing (magic byte 0, schema id 7): decoding it needs
                        # the registry, which refuses
                        await produce_raw(kafka_bootstrap, framed_topic, b"\x00\x00\x00\x00\x07{}")
                        await send_sqs(sqs, queue_url, records(0, SQS_MESSAGES, SQS_FAIL_EVERY))
                        if stream_arn is not None:
                            await put_kinesis(moto_endpoint, names["kinesis"], records(0, 500))
                    await scraped_twice(time.time())

                total = WAVES * WAVE

                def drained() -> bool:
                    committed = [
                        sample(daemon, "esm_committed_events_total", names[k], "kafka")
                        for k in ("kafka", "kafka_dest")
                    ]
                    deleted = sample(daemon, "esm_deleted_events_total", names["sqs"], "sqs")
                    errors = sample(daemon, "esm_errors_total", names["broken"], "sqs")
                    return (
                        min(committed) >= total
                        and deleted >= SQS_MESSAGES - SQS_MESSAGES // SQS_FAIL_EVERY
                        and errors >= 2
                    )

                await wait_for(drained, 40, "the Kafka topic committed and the SQS queue deleted")
                # the drained counters reach Prometheus with the next scrapes
                await scraped_twice(time.time())
                mine = [names[k] for k in names if k != "kinesis" or stream_arn is not None]
                pending = [q for q in dashboard_queries() if not unexercised(q[1])]

                async def every_query_has_data() -> bool:
                    """Queries that returned data keep it (the range starts at ``started``):
                    ask again only those still empty."""
                    for title, expr in list(pending):
                        values = await query_range(
                            http, prometheus_endpoint, render(expr, mine), started
                        )
                        if moved(values):
                            pending.remove((title, expr))
                    return not pending

                try:
                    await wait_for(every_query_has_data, 10, "every query to return data")
                except AssertionError as exc:  # the cause: a timeout, or a query that failed
                    hint = (
                        ""
                        if stream_arn
                        else "\n(no Kinesis source in service.sources.SOURCES: no stream ran)"
                    )
                    missing = [f"{title}: {expr}" for title, expr in pending]
                    raise AssertionError(
                        "dashboard queries without data:\n" + "\n".join(missing) + hint
                    ) from exc


async def produce_raw(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


def unexercised(expr: str) -> str | None:
    """Why a query cannot have data in this build, or None. Schema registry errors need
    Kafka schema registries (KafkaSchemaRegistryConfig); once the config has them, this
    test must make a record fail to decode and the panel is checked like the others."""
    from service.config import KafkaEventSourceConfig

    registries = "SchemaRegistryConfig" in str(KafkaEventSourceConfig.model_fields)
    if 'kind="schema_registry"' in expr and not registries:
        return "no Kafka schema registries in this build"
    return None


def test_only_missing_features_leave_a_panel_unchecked() -> None:
    left = {expr: unexercised(expr) for _, expr in dashboard_queries() if unexercised(expr)}
    assert all("schema_registry" in expr for expr in left), left


# --- Kinesis (once the source exists) ------------------------------------------------------


async def kinesis_stream(moto: str, name: str) -> str | None:
    """A one-shard stream on moto, when this build has a Kinesis source; else None."""
    if SourceKind.KINESIS not in SOURCES:
        return None
    async with aws("kinesis", moto) as kinesis:
        await kinesis.create_stream(StreamName=name, ShardCount=1)
        await kinesis.get_waiter("stream_exists").wait(StreamName=name)
        desc = await kinesis.describe_stream_summary(StreamName=name)
        arn: str = desc["StreamDescriptionSummary"]["StreamARN"]
        return arn


async def put_kinesis(moto: str, name: str, values: list[dict[str, Any]]) -> None:
    async with aws("kinesis", moto) as kinesis:
        for i in range(0, len(values), 100):
            await kinesis.put_records(
                StreamName=name,
                Records=[
                    {"Data": json.dumps(v).encode(), "PartitionKey": str(v["seq"])}
                    for v in values[i : i + 100]
                ],
            )
