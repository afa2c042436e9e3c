"""Kafka schema registries end to end on the real broker: Avro, Protobuf and JSON Schema
values decoded and delivered with their schema metadata (JSON and SOURCE formats), a filter
on a decoded field, undecodable records to the OnFailure destination (a Kafka topic), and a
registry that is down: errors counted, nothing committed, then everything once it is back.

The registry is Apicurio Registry (its Confluent-compatible API; tests/conftest.py's
``apicurio_registry`` starts it when absent), or $ESMD_SCHEMA_REGISTRY_URL when set (another
Confluent-compatible registry). What the shared registry must not do (be down, require
credentials, speak HTTPS, count fetches) a proxy in front of it does
(tests/integration/registry_proxy.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from service.daemon import Daemon
from tests.integration import collect
from tests.integration.kafka_helpers import (
    create_topic,
    kafka_mapping,
    offsets,
    running_daemon,
    wait_for,
)
from tests.integration.registry_proxy import RegistryProxy, free_port, serving
from tests.integration.schema_helpers import encode, register
from tests.tls_material import client_secret, server_tls, stranger_ca

pytestmark = pytest.mark.integration
PROVISIONED = {"ProvisionedPollerConfig": {"MinimumPollers": 1, "MaximumPollers": 1}}
FAST_RETRIES = {"initial_backoff_seconds": 0.1, "max_backoff_seconds": 0.4}


@pytest.fixture
def schema_registry(request: pytest.FixtureRequest) -> str:
    """$ESMD_SCHEMA_REGISTRY_URL, else Apicurio (started when absent)."""
    url = os.environ.get("ESMD_SCHEMA_REGISTRY_URL")
    return url.rstrip("/") if url else str(request.getfixturevalue("apicurio_registry"))


def registry_config(url: str, fmt: str = "JSON", *attributes: str) -> dict[str, Any]:
    return {
        "ConsumerGroupId": "",  # replaced by the caller's group
        "SchemaRegistryConfig": {
            "SchemaRegistryURI": url,
            "EventRecordFormat": fmt,
            "SchemaValidationConfigs": [{"Attribute": a} for a in attributes or ("VALUE",)],
        },
    }


def mapping(name: str, bootstrap: str, topic: str, fn: str, source: dict[str, Any]) -> Any:
    source["ConsumerGroupId"] = f"g-{name}"
    return kafka_mapping(
        name,
        bootstrap,
        topic,
        f"g-{name}",
        FunctionName=fn,
        SelfManagedKafkaEventSourceConfig=source,
        MaximumBatchingWindowInSeconds=0.1,
        **PROVISIONED,
    )


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key, partition=0) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def all_committed(bootstrap: str, topic: str, group: str, count: int) -> bool:
    committed, ends = await offsets(bootstrap, topic, group, 1)
    return committed == ends == {0: count}


def delivered(fn: str) -> list[dict[str, Any]]:
    return [r for event in collect.events[fn] for rs in event["records"].values() for r in rs]


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        fetched = await consumer.getmany(tp, timeout_ms=2000)
        return [json.loads(m.value) for m in fetched.get(tp, [])]
    finally:
        await consumer.stop()


async def schema_errors(daemon: Daemon, name: str) -> float:
    host, port = daemon.address
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://{host}:{port}/metrics") as resp,
    ):
        page = await resp.text()
    return sum(
        s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "esm_errors_total"
        and s.labels.get("mapping") == name
        and s.labels.get("kind") == "schema_registry"
    )


async def test_three_formats_decoded_filtered_and_undecodable_records_to_the_destination(
    kafka_bootstrap: str, schema_registry: str, unique: str
) -> None:
    topic, fn, name = f"sr-{unique}", f"collect-sr-{unique}", f"sr-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    records: list[tuple[bytes | None, bytes]] = []
    for fmt in ("AVRO", "PROTOBUF", "JSON"):
        schema = await register(schema_registry, f"{topic}-{fmt.lower()}-value", fmt)
        for i, status in enumerate(("PAID", "NEW")):
            order = {"id": f"{fmt}-{i}", "amount": 5 + i, "status": status}
            records.append((f"{fmt}-{i}".encode(), encode(fmt, schema, order)[0]))
    records.append((b"plain", b'{"id": "no header", "status": "PAID"}'))  # undecodable
    records.append((b"unknown", encode("JSON", 987654, {"status": "PAID"})[0]))  # unknown id
    await produce(kafka_bootstrap, topic, records)
    source = registry_config(schema_registry)
    config = {
        "retry": FAST_RETRIES,
        "functions": {fn: {"python": "tests.integration.collect:handle"}},
        "mappings": [
            {
                **mapping(name, kafka_bootstrap, topic, fn, source),
                "FilterCriteria": {"Filters": [{"Pattern": '{"value": {"status": ["PAID"]}}'}]},
                "DestinationConfig": {"OnFailure": {"Destination": f"kafka://{topic}-dlq"}},
            }
        ],
    }
    await create_topic(kafka_bootstrap, f"{topic}-dlq", 1)
    async with running_daemon(config):
        await wait_for(
            lambda: all_committed(kafka_bootstrap, topic, f"g-{name}", len(records)),
            60,
            "every record committed",
        )
    got = delivered(fn)
    assert [r["key"] for r in got] == [
        base64.b64encode(k).decode() for k in (b"AVRO-0", b"PROTOBUF-0", b"JSON-0")
    ]  # the NEW ones filtered out on the decoded value; the two bad ones never delivered
    for record, fmt in zip(got, ("AVRO", "PROTOBUF", "JSON"), strict=True):
        value = orjson.loads(base64.b64decode(record["value"]))
        assert value == {"id": f"{fmt}-0", "amount": 5, "status": "PAID"}
        metadata = record["valueSchemaMetadata"]
        assert metadata["dataFormat"] == fmt and metadata["schemaId"].isdigit()
        assert "keySchemaMetadata" not in record
    failed = await read_topic(kafka_bootstrap, f"{topic}-dlq")
    assert len(failed) == 2
    for message in failed:
        assert message["requestContext"]["condition"] == "SchemaRegistryDecodingFailed"
        assert message["requestContext"]["approximateInvokeCount"] == 0
        assert message["responseContext"] is None  # never invoked
    offsets_sent = sorted(m["KafkaBatchInfo"]["recordInfo"]["offset"] for m in failed)
    assert offsets_sent == ["6", "7"] or offsets_sent == [6, 7]


async def test_source_format_keys_and_values_without_the_schema_header(
    kafka_bootstrap: str, schema_registry: str, unique: str
) -> None:
    topic, fn, name = f"srs-{unique}", f"collect-srs-{unique}", f"srs-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    value_id = await register(schema_registry, f"{topic}-value", "PROTOBUF")
    key_id = await register(schema_registry, f"{topic}-key", "JSON")
    order = {"id": "o-1", "amount": 9, "status": "PAID"}
    value, value_body = encode("PROTOBUF", value_id, order)
    key, key_body = encode("JSON", key_id, {"id": "o-1", "amount": 0, "status": "key"})
    await produce(kafka_bootstrap, topic, [(key, value)])
    source = registry_config(schema_registry, "SOURCE", "KEY", "VALUE")
    config = {
        "functions": {fn: {"python": "tests.integration.collect:handle"}},
        "mappings": [mapping(name, kafka_bootstrap, topic, fn, source)],
    }
    async with running_daemon(config):
        await wait_for(lambda: len(delivered(fn)) == 1, 60, "the record delivered")
    (record,) = delivered(fn)
    assert base64.b64decode(record["value"]) == value_body  # no magic byte, id or indexes
    assert base64.b64decode(record["key"]) == key_body
    assert record["valueSchemaMetadata"] == {"dataFormat": "PROTOBUF", "schemaId": str(value_id)}
    assert record["keySchemaMetadata"] == {"dataFormat": "JSON", "schemaId": str(key_id)}


async def test_a_registry_that_is_down_is_retried_and_nothing_is_committed_meanwhile(
    kafka_bootstrap: str, schema_registry: str, unique: str
) -> None:
    topic, fn, name = f"srd-{unique}", f"collect-srd-{unique}", f"srd-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    schema = await register(schema_registry, f"{topic}-value", "AVRO")
    orders = [{"id": f"o-{i}", "amount": i, "status": "PAID"} for i in range(3)]
    await produce(kafka_bootstrap, topic, [(None, encode("AVRO", schema, o)[0]) for o in orders])
    port = free_port()  # the registry's address, refusing connections until the proxy starts
    source = registry_config(f"http://127.0.0.1:{port}")
    config = {
        "retry": FAST_RETRIES,
        "functions": {fn: {"python": "tests.integration.collect:handle"}},
        "mappings": [mapping(name, kafka_bootstrap, topic, fn, source)],
    }
    async with running_daemon(config) as daemon:

        async def failing() -> bool:
            return await schema_errors(daemon, name) >= 3

        await wait_for(failing, 60, "esm_errors_total{kind=schema_registry} to count retries")
        committed, _ = await offsets(kafka_bootstrap, topic, f"g-{name}", 1)
        assert committed == {0: 0} and not delivered(fn)
        async with serving(RegistryProxy(schema_registry).app, port):
            await wait_for(
                lambda: all_committed(kafka_bootstrap, topic, f"g-{name}", 3),
                60,
                "every record committed once the registry answers",
            )
    values = [orjson.loads(base64.b64decode(r["value"])) for r in delivered(fn)]
    assert values == orders


async def test_basic_auth_from_access_configs_reaches_a_registry_that_requires_it(
    kafka_bootstrap: str, schema_registry: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, fn, name = f"sra-{unique}", f"collect-sra-{unique}", f"sra-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    schema = await register(schema_registry, f"{topic}-value", "JSON")
    order = {"id": "o-1", "amount": 1, "status": "PAID"}
    await produce(kafka_bootstrap, topic, [(None, encode("JSON", schema, order)[0])])
    secret = f"ESMD_TEST_REGISTRY_{unique}"
    monkeypatch.setenv(secret, orjson.dumps({"username": "esmd", "password": "s3cret"}).decode())
    guarded = RegistryProxy(schema_registry, basic=("esmd", "s3cret")).app
    async with serving(guarded) as url:
        source = registry_config(url)
        source["SchemaRegistryConfig"]["AccessConfigs"] = [
            {"Type": "BASIC_AUTH", "URI": f"env:{secret}"}
        ]
        config = {
            "functions": {fn: {"python": "tests.integration.collect:handle"}},
            "mappings": [mapping(name, kafka_bootstrap, topic, fn, source)],
        }
        async with running_daemon(config):
            await wait_for(lambda: len(delivered(fn)) == 1, 60, "the record delivered")
    assert orjson.loads(base64.b64decode(delivered(fn)[0]["value"])) == order


async def test_a_glue_registry_is_refused_at_run_time_with_the_reason(
    kafka_bootstrap: str, unique: str
) -> None:
    topic, name = f"srg-{unique}", f"srg-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    source = registry_config("arn:aws:glue:us-east-1:123456789012:registry/shop")
    config = {
        "functions": {"f": {"python": "tests.integration.collect:handle"}},
        "mappings": [mapping(name, kafka_bootstrap, topic, "f", source)],
    }
    async with running_daemon(config) as daemon:
        (found,) = daemon.mappings
        await wait_for(
            lambda: found.state_reason == "ESM_CONFIG_NOT_VALID", 30, "the mapping's reason"
        )
        assert "AWS Glue schema registry" in (found.last_error or "")


async def test_schemas_are_fetched_once_per_id(schema_registry: str, unique: str) -> None:
    from service.sources.schema_formats import UndecodableRecord
    from service.sources.schema_registry import SchemaRegistry

    schema_id = await register(schema_registry, f"orders-{unique}-value", "AVRO")
    proxy = RegistryProxy(schema_registry)  # counts the fetches that reach the registry
    async with serving(proxy.app) as url:
        registry = SchemaRegistry(url, aiohttp.ClientSession())
        try:
            found = await asyncio.gather(*(registry.schema(schema_id) for _ in range(20)))
            assert len({id(s) for s in found}) == 1 and proxy.gets == 1
            for _ in range(3):
                with pytest.raises(UndecodableRecord, match="not in the registry"):
                    await registry.schema(2_000_000_000)  # an id no test run reaches
            assert proxy.gets == 2  # an unknown id is remembered too
        finally:
            await registry.close()


async def test_mtls_and_a_private_root_ca_from_access_configs(
    kafka_bootstrap: str,
    schema_registry: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry behind HTTPS with a certificate of a private CA, requiring a client
    certificate of that CA: SERVER_ROOT_CA_CERTIFICATE and CLIENT_CERTIFICATE_TLS_AUTH."""
    topic, fn, name = f"srt-{unique}", f"collect-srt-{unique}", f"srt-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    schema = await register(schema_registry, f"{topic}-value", "AVRO")
    order = {"id": "o-1", "amount": 1, "status": "PAID"}
    await produce(kafka_bootstrap, topic, [(None, encode("AVRO", schema, order)[0])])
    ca = stranger_ca()
    monkeypatch.setenv(f"ESMD_TEST_CA_{unique}", orjson.dumps({"certificate": ca.pem}).decode())
    monkeypatch.setenv(f"ESMD_TEST_MTLS_{unique}", orjson.dumps(client_secret(ca)).decode())
    async with serving(RegistryProxy(schema_registry).app, tls=server_tls(ca, tmp_path)) as url:
        source = registry_config(url)
        source["SchemaRegistryConfig"]["AccessConfigs"] = [
            {"Type": "SERVER_ROOT_CA_CERTIFICATE", "URI": f"env:ESMD_TEST_CA_{unique}"},
            {"Type": "CLIENT_CERTIFICATE_TLS_AUTH", "URI": f"env:ESMD_TEST_MTLS_{unique}"},
        ]
        config = {
            "functions": {fn: {"python": "tests.integration.collect:handle"}},
            "mappings": [mapping(name, kafka_bootstrap, topic, fn, source)],
        }
        async with running_daemon(config):
            await wait_for(lambda: len(delivered(fn)) == 1, 60, "the record delivered")
    assert orjson.loads(base64.b64decode(delivered(fn)[0]["value"])) == order
