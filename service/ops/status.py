"""``esmd status``: one table per mapping, from its config and, with ``--url``, from a
running daemon's /mappings and two /metrics samples.

It runs nothing. What each row is made of:

- state: /mappings ``state`` and ``state_reason`` (without a daemon: "not known").
- pollers: ``esm_pollers{kind="current"|"desired"}``.
- lag / backlog: Kafka: the sum of ``esm_offset_lag`` (without a daemon: the consumer group's
  committed offsets against the partitions' ends, read from the brokers); SQS:
  ApproximateNumberOfMessages (and NotVisible: in flight) of the queue, when reachable;
  streams: ``esm_iterator_age_milliseconds``.
- last result: AWS's LastProcessingResult, derived: ``PROBLEM: <reason>`` while the state
  reason is not USER_INITIATED, ``PROBLEM: function call failed`` when invocations failed
  between the two samples, ``No records processed`` before the first invocation, else OK.
- rate: records polled, invoked and filtered out per second between the two samples.
- errors: ``esm_errors_total`` by kind (non-zero ones).
- last error: /mappings ``last_error``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from service.config import EsmdConfig, MappingConfig
from service.errors import USER_INITIATED
from service.sources.kinds import SourceKind

#: seconds a look at a source (SQS attributes, Kafka offsets) may take
PROBE_TIMEOUT = 3.0

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Sample:
    """One /metrics page: value per (name, labels), and when it was taken."""

    at: float
    series: Series

    def total(self, name: str, mapping: str, **labels: str) -> float:
        want = {"mapping": mapping, **labels}
        return sum(
            v
            for (n, ls), v in self.series.items()
            if n == name and all(dict(ls).get(k) == x for k, x in want.items())
        )

    def by(self, name: str, mapping: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.series.items():
            d = dict(ls)
            if n == name and d.get("mapping") == mapping and label in d:
                out[d[label]] = out.get(d[label], 0) + v
        return out


def parse_metrics(text: str, at: float) -> Sample:
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Sample(at, series)


@dataclass
class Live:
    """What a running daemon says."""

    mappings: dict[str, dict[str, Any]]
    first: Sample
    second: Sample


@dataclass
class Table:
    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)


async def fetch_live(url: str, token: str | None, interval: float) -> Live:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=10)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:

        async def get(path: str) -> str:
            async with http.get(url.rstrip("/") + path) as resp:
                if resp.status == 401:
                    raise PermissionError(f"{url}{path}: 401 (server.auth_token or --token)")
                resp.raise_for_status()
                return await resp.text()

        first = parse_metrics(await get("/metrics"), loop.time())
        mappings = orjson_loads(await get("/mappings")).get("mappings", [])
        await asyncio.sleep(interval)
        second = parse_metrics(await get("/metrics"), loop.time())
    return Live({m["name"]: m for m in mappings}, first, second)


def orjson_loads(text: str) -> dict[str, Any]:
    import orjson

    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


# --- the rows -------------------------------------------------------------------------------


def _source(cfg: MappingConfig) -> str:
    kind = cfg.source_kind
    if kind.is_kafka:
        return f"{kind.value} topic {', '.join(cfg.Topics or [])}"
    if kind is SourceKind.MQ:
        return f"mq queue {', '.join(cfg.Queues or [])} of {cfg.EventSourceArn}"
    return f"{kind.value} {cfg.EventSourceArn}"


def _config_row(cfg: MappingConfig) -> str:
    parts = [f"BatchSize {cfg.batch_size}", f"window {cfg.batching_window_seconds:g} s"]
    filters = len(cfg.FilterCriteria.Filters or []) if cfg.FilterCriteria else 0
    parts.append(f"{filters} filter(s)")
    if cfg.on_failure_destination:
        parts.append(f"OnFailure {cfg.on_failure_destination}")
    if not cfg.Enabled:
        parts.append("Enabled: false")
    return ", ".join(parts)


def _rate(live: Live, name: str, metric: str) -> float:
    seconds = max(live.second.at - live.first.at, 1e-9)
    return (live.second.total(metric, name) - live.first.total(metric, name)) / seconds


def _last_result(live: Live, name: str, status: dict[str, Any]) -> str:
    reason = status.get("state_reason")
    if reason and reason != USER_INITIATED:
        return f"PROBLEM: {reason}"
    failed = "esm_failed_invoke_events_total"
    if live.second.total(failed, name) > live.first.total(failed, name):
        return "PROBLEM: function call failed"
    if live.second.total("esm_invoked_events_total", name) == 0:
        return "No records processed"
    return "OK"


def live_rows(cfg: MappingConfig, live: Live) -> list[tuple[str, str]]:
    name = cfg.Name
    status = live.mappings.get(name)
    if status is None:
        return [("state", "not in the daemon's /mappings")]
    s2 = live.second
    reason = status.get("state_reason") or "-"
    rows = [("state", f"{status.get('state')} ({reason})")]
    current = s2.total("esm_pollers", name, kind="current")
    desired = s2.total("esm_pollers", name, kind="desired")
    rows.append(("pollers", f"{current:g} current / {desired:g} desired"))
    if cfg.source_kind.is_kafka:
        rows.append(("lag", f"{s2.total('esm_offset_lag', name):g} records (esm_offset_lag sum)"))
    elif cfg.source_kind.is_stream:
        age = s2.total("esm_iterator_age_milliseconds", name)
        rows.append(("iterator age", f"{age:g} ms"))
    rows.append(("last result", _last_result(live, name, status)))
    rates = (
        f"polled {_rate(live, name, 'esm_polled_events_total'):.1f}/s, "
        f"invoked {_rate(live, name, 'esm_invoked_events_total'):.1f}/s, "
        f"filtered out {_rate(live, name, 'esm_filtered_out_events_total'):.1f}/s"
    )
    rows.append(("records", rates))
    errors = {k: v for k, v in s2.by("esm_errors_total", name, "kind").items() if v}
    rows.append(("errors", ", ".join(f"{k} {v:g}" for k, v in sorted(errors.items())) or "none"))
    rows.append(("last error", str(status.get("last_error") or "-")))
    return rows


async def sqs_backlog(cfg: MappingConfig, esmd: EsmdConfig) -> str:
    from service.aws import aws_client
    from service.sources.sqs import queue_parts

    region, account, queue = queue_parts(cfg.EventSourceArn or "")
    async with aws_client(
        esmd.aws,
        "sqs",
        region=region,
        connect_timeout=2,
        read_timeout=2,
        retries={"max_attempts": 1},
    ) as sqs:
        url = (await sqs.get_queue_url(QueueName=queue, QueueOwnerAWSAccountId=account))["QueueUrl"]
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names))["Attributes"]
    return f"{attrs[names[0]]} messages visible, {attrs[names[1]]} in flight"


async def kafka_group_lag(cfg: MappingConfig, esmd: EsmdConfig) -> str:
    """The group's lag from the brokers: the partitions' ends minus its committed offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from service.ops.samples import topic_partitions
    from service.sources.kafka_auth import kafka_connection

    servers, auth = await kafka_connection(cfg, esmd.aws)
    topic = (cfg.Topics or [""])[0]
    partitions = await topic_partitions(servers, auth.client_kwargs(), topic)
    if not partitions:
        return f"topic {topic} not found"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=cfg.consumer_group_id,
        enable_auto_commit=False,
        **auth.client_kwargs(),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            lag += ends[tp] - (committed if committed is not None else starts[tp])
    finally:
        await consumer.stop()
    return f"{lag} records (group {cfg.consumer_group_id}, committed offsets)"


async def _probe(what: Coroutine[Any, Any, str]) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return await what
    except Exception as exc:  # an unreachable source is a row, not a failure
        return f"not reachable ({type(exc).__name__})"


async def tables(
    config: EsmdConfig, url: str | None, token: str | None, interval: float
) -> list[Table]:
    live = await fetch_live(url, token, interval) if url else None
    out = []
    for cfg in config.mappings:
        table = Table(f"{cfg.Name}  ({_source(cfg)} -> {cfg.FunctionName})")
        if live is not None:
            table.rows.extend(live_rows(cfg, live))
        else:
            table.rows.append(("state", "not known (no --url of a running daemon)"))
        if cfg.source_kind is SourceKind.SQS:
            table.rows.append(("backlog", await _probe(sqs_backlog(cfg, config))))
        elif cfg.source_kind.is_kafka and live is None:
            table.rows.append(("lag", await _probe(kafka_group_lag(cfg, config))))
        table.rows.append(("config", _config_row(cfg)))
        out.append(table)
    return out


def render(found: list[Table]) -> str:
    lines = []
    for t in found:
        lines.append(t.title)
        width = max((len(k) for k, _ in t.rows), default=0)
        lines.extend(f"  {k:<{width}}  {v}" for k, v in t.rows)
        lines.append("")
    return "\n".join(lines)
