"""The Lambda ESM API driven by the real boto3 client against a running daemon, with an SQS
(ElasticMQ) mapping: create, deliver, get, list with the paginator, update, disable, delete,
AWS's exception classes, a restart, and SigV4 refusals."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore
import botocore.exceptions
import pytest
from botocore.config import Config

from service.daemon import Daemon
from tests.integration import collect, sqs_handlers
from tests.integration.kafka_helpers import create_topic, produce_json, running_daemon, wait_for
from tests.integration.test_sqs import make_queue, send, sqs  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
KEY, SECRET = "AKIDESMDTEST", "esmd-test-secret-key"
MISSING = "00000000-0000-0000-0000-000000000000"


def esmd_config(elasticmq: str, tmp_path: Path, function: str) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 5},
        "aws": {"endpoints": {"sqs": elasticmq}},
        "checkpoints": {"path": str(tmp_path / "state.db")},
        "api": {"credentials": [{"access_key_id": KEY, "secret_access_key": SECRET}]},
        "functions": {function: {"python": "tests.integration.sqs_handlers:collect"}},
    }


def client(daemon: Daemon, key: str = KEY, secret: str = SECRET) -> Any:
    host, port = daemon.address
    return boto3.client(
        "lambda",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


async def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """A boto3 call off the event loop the daemon runs on."""
    return await asyncio.to_thread(fn, **kwargs)


async def field_is(lam: Any, uuid: str, field: str, value: Any) -> bool:
    """The mapping exists and its ``field`` is ``value``."""
    try:
        found = await call(lam.get_event_source_mapping, UUID=uuid)
    except lam.exceptions.ResourceNotFoundException:
        return False
    return bool(found.get(field) == value)


async def test_create_deliver_update_disable_delete(
    sqs: Any,  # noqa: F811
    elasticmq_endpoint: str,
    tmp_path: Path,
    unique: str,
) -> None:
    fn = f"api-{unique}"
    # a stopped mapping's cancelled long poll may still take a message on the server: 2 s
    url, arn = await make_queue(sqs, fn, VisibilityTimeout="2")
    async with running_daemon(esmd_config(elasticmq_endpoint, tmp_path, fn)) as daemon:
        lam = client(daemon)
        created = await call(
            lam.create_event_source_mapping,
            EventSourceArn=arn,
            FunctionName=fn,
            BatchSize=5,
            MaximumBatchingWindowInSeconds=0,
        )
        assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
        uuid = created["UUID"]
        assert created["State"] in ("Creating", "Enabling", "Enabled")
        assert created["FunctionArn"].endswith(f":function:{fn}")
        assert created["EventSourceMappingArn"].endswith(f":event-source-mapping:{uuid}")
        assert created["BatchSize"] == 5

        await send(sqs, url, [{"n": i} for i in range(10)])
        await wait_for(lambda: len(sqs_handlers.seen[fn]) >= 10, 15, "delivery")
        got = await call(lam.get_event_source_mapping, UUID=uuid)
        assert got["State"] == "Enabled"
        assert got["StateTransitionReason"] == "USER_INITIATED"
        await wait_for(
            lambda: field_is(lam, uuid, "LastProcessingResult", "OK"), 5, "processing OK"
        )

        updated = await call(lam.update_event_source_mapping, UUID=uuid, BatchSize=2)
        assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert updated["State"] == "Updating"
        assert updated["BatchSize"] == 2
        await wait_for(lambda: field_is(lam, uuid, "State", "Enabled"), 15, "updated")
        await send(sqs, url, [{"n": i} for i in range(10, 14)])
        await wait_for(lambda: len(sqs_handlers.seen[fn]) >= 14, 15, "delivery after update")
        assert max(len(e["Records"]) for e in sqs_handlers.events[fn][-2:]) <= 2

        disabled = await call(lam.update_event_source_mapping, UUID=uuid, Enabled=False)
        assert disabled["State"] == "Disabling"
        await wait_for(lambda: field_is(lam, uuid, "State", "Disabled"), 15, "disabled")
        before = len(sqs_handlers.seen[fn])
        await send(sqs, url, [{"n": 99}])
        await asyncio.sleep(1.5)  # a negative check: nothing may arrive while disabled
        assert len(sqs_handlers.seen[fn]) == before
        await call(lam.update_event_source_mapping, UUID=uuid, Enabled=True)
        await wait_for(lambda: len(sqs_handlers.seen[fn]) > before, 15, "delivery after enable")

        deleted = await call(lam.delete_event_source_mapping, UUID=uuid)
        assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert deleted["State"] == "Deleting"

        async def gone() -> bool:
            try:
                await call(lam.get_event_source_mapping, UUID=uuid)
            except lam.exceptions.ResourceNotFoundException:
                return True
            return False

        await wait_for(gone, 15, "deleted")


def file_mapping(fn: str, arn: str) -> dict[str, Any]:
    return {"Name": f"file-{fn}", "EventSourceArn": arn, "FunctionName": fn, "Enabled": False}


async def test_errors_raise_the_aws_exception_classes(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    fn = f"api-err-{unique}"
    arn = f"arn:aws:sqs:us-east-1:000000000000:{fn}"
    config = esmd_config(elasticmq_endpoint, tmp_path, fn)
    config["mappings"] = [file_mapping(fn, arn)]
    async with running_daemon(config) as daemon:
        lam = client(daemon)
        errors = lam.exceptions
        with pytest.raises(errors.ResourceNotFoundException):
            await call(lam.get_event_source_mapping, UUID=MISSING)
        with pytest.raises(errors.ResourceNotFoundException):
            await call(lam.update_event_source_mapping, UUID=MISSING, BatchSize=2)
        with pytest.raises(errors.ResourceNotFoundException):
            await call(lam.delete_event_source_mapping, UUID=MISSING)
        with pytest.raises(errors.InvalidParameterValueException, match="BatchSize"):
            await call(
                lam.create_event_source_mapping,
                EventSourceArn=arn,
                FunctionName=fn,
                BatchSize=20000,
            )
        bad_filter = {"Filters": [{"Pattern": '{"body": {"a": "not-a-list"}}'}]}
        with pytest.raises(errors.InvalidParameterValueException, match="FilterCriteria"):
            await call(
                lam.create_event_source_mapping,
                EventSourceArn=arn + "-other",
                FunctionName=fn,
                FilterCriteria=bad_filter,
            )
        # the file's mapping is listed with its UUID but read-only through the API
        listed = await call(lam.list_event_source_mappings, EventSourceArn=arn)
        (from_file,) = listed["EventSourceMappings"]
        assert from_file["State"] == "Disabled"
        with pytest.raises(errors.ResourceConflictException):
            await call(lam.update_event_source_mapping, UUID=from_file["UUID"], BatchSize=2)
        with pytest.raises(errors.ResourceConflictException):
            await call(lam.delete_event_source_mapping, UUID=from_file["UUID"])
        # AWS refuses a second mapping of the same source and function
        with pytest.raises(errors.ResourceConflictException):
            await call(lam.create_event_source_mapping, EventSourceArn=arn, FunctionName=fn)
        with pytest.raises(errors.InvalidParameterValueException):
            await call(lam.list_event_source_mappings, MaxItems=20000)


async def test_list_paginates_and_a_restart_keeps_api_mappings(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    fn = f"api-page-{unique}"
    config = esmd_config(elasticmq_endpoint, tmp_path, fn)
    config["mappings"] = [file_mapping(fn, f"arn:aws:sqs:us-east-1:000000000000:{fn}-file")]
    created = set()
    async with running_daemon(config) as daemon:
        lam = client(daemon)
        for i in range(61):
            arn = f"arn:aws:sqs:us-east-1:000000000000:{fn}-{i}"
            made = await call(
                lam.create_event_source_mapping, EventSourceArn=arn, FunctionName=fn, Enabled=False
            )
            created.add(made["UUID"])
        pages = lam.get_paginator("list_event_source_mappings").paginate(
            FunctionName=fn, PaginationConfig={"PageSize": 7}
        )
        seen = [
            m["UUID"]
            for page in await asyncio.to_thread(list, pages)
            for m in page["EventSourceMappings"]
        ]
        assert len(seen) == len(set(seen)) == 62
        assert created < set(seen)
        one = next(iter(created))
        await call(lam.update_event_source_mapping, UUID=one, BatchSize=7)
    async with running_daemon(config) as daemon:
        lam = client(daemon)
        listed = await call(lam.list_event_source_mappings, FunctionName=fn, MaxItems=100)
        assert {m["UUID"] for m in listed["EventSourceMappings"]} > created
        assert (await call(lam.get_event_source_mapping, UUID=one))["BatchSize"] == 7


async def test_unsigned_wrongly_signed_and_unknown_keys_are_refused(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    async with running_daemon(esmd_config(elasticmq_endpoint, tmp_path, unique)) as daemon:
        cases = {
            "InvalidSignatureException": client(daemon, secret="not-the-secret"),
            "UnrecognizedClientException": client(daemon, key="AKIDUNKNOWN"),
            "MissingAuthenticationTokenException": unsigned(daemon),
        }
        for code, lam in cases.items():
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                await call(lam.list_event_source_mappings)
            assert caught.value.response["Error"]["Code"] == code
            assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert (await call(client(daemon).list_event_source_mappings))["EventSourceMappings"] == []


async def test_without_an_api_section_the_paths_are_not_found(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    config = esmd_config(elasticmq_endpoint, tmp_path, unique)
    del config["api"]
    async with running_daemon(config) as daemon:
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            await call(client(daemon).list_event_source_mappings)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def unsigned(daemon: Daemon) -> Any:
    host, port = daemon.address
    return boto3.client(
        "lambda",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}),
    )


#: the AWS CLI the dev extras install into this venv (PyPI awscli), not whatever is on PATH
AWS_CLI = str(Path(sys.executable).with_name("aws"))


async def aws_cli(daemon: Daemon, *args: str) -> tuple[int, Any, str]:
    """``aws lambda ARGS --endpoint-url ...``: exit code, parsed stdout, stderr."""
    host, port = daemon.address
    env = os.environ | {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    env.pop("AWS_PROFILE", None)
    proc = await asyncio.create_subprocess_exec(
        AWS_CLI,
        "lambda",
        *args,
        "--endpoint-url",
        f"http://{host}:{port}",
        "--output",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_the_aws_cli_manages_mappings(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    fn = f"api-cli-{unique}"
    arn = f"arn:aws:sqs:us-east-1:000000000000:{fn}"
    async with running_daemon(esmd_config(elasticmq_endpoint, tmp_path, fn)) as daemon:
        rc, made, err = await aws_cli(
            daemon,
            "create-event-source-mapping",
            "--event-source-arn",
            arn,
            "--function-name",
            fn,
            "--no-enabled",
            "--batch-size",
            "4",
        )
        assert rc == 0, err
        uuid = made["UUID"]
        rc, listed, err = await aws_cli(daemon, "list-event-source-mappings", "--function-name", fn)
        assert rc == 0, err
        assert [m["UUID"] for m in listed["EventSourceMappings"]] == [uuid]
        rc, updated, err = await aws_cli(
            daemon, "update-event-source-mapping", "--uuid", uuid, "--batch-size", "9"
        )
        assert rc == 0, err
        assert updated["BatchSize"] == 9
        rc, got, err = await aws_cli(daemon, "get-event-source-mapping", "--uuid", uuid)
        assert rc == 0 and got["BatchSize"] == 9, err
        rc, _, err = await aws_cli(daemon, "delete-event-source-mapping", "--uuid", uuid)
        assert rc == 0, err
        rc, _, err = await aws_cli(daemon, "get-event-source-mapping", "--uuid", MISSING)
        assert rc != 0 and "ResourceNotFoundException" in err


def kafka_values(fn: str) -> list[dict[str, Any]]:
    return [
        json.loads(base64.b64decode(r["value"]))
        for event in collect.events[fn]
        for records in event["records"].values()
        for r in records
    ]


def keep(status: str) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps({"value": {"status": [status]}})}]}


async def test_a_kafka_mapping_filter_update_disable_enable_delete(
    kafka_bootstrap: str, elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    fn, topic = f"api-kafka-{unique}", f"api-kafka-{unique}"
    await create_topic(kafka_bootstrap, topic, 1)
    config = esmd_config(elasticmq_endpoint, tmp_path, fn)
    config["functions"] = {fn: {"python": "tests.integration.collect:handle"}}

    def batch(start: int) -> list[tuple[int, dict[str, Any]]]:
        return [(0, {"n": i, "status": "a" if i % 2 else "b"}) for i in range(start, start + 10)]

    async with running_daemon(config) as daemon:
        lam = client(daemon)
        made = await call(
            lam.create_event_source_mapping,
            SelfManagedEventSource={"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [kafka_bootstrap]}},
            Topics=[topic],
            SelfManagedKafkaEventSourceConfig={"ConsumerGroupId": f"g-{unique}"},
            StartingPosition="TRIM_HORIZON",
            FunctionName=fn,
            FilterCriteria=keep("a"),
        )
        uuid = made["UUID"]
        await produce_json(kafka_bootstrap, topic, batch(0))
        await wait_for(lambda: len(kafka_values(fn)) == 5, 20, "status a delivered")

        await call(lam.update_event_source_mapping, UUID=uuid, FilterCriteria=keep("b"))
        await wait_for(lambda: field_is(lam, uuid, "State", "Enabled"), 15, "updated")
        await produce_json(kafka_bootstrap, topic, batch(10))
        await wait_for(lambda: len(kafka_values(fn)) == 10, 20, "status b delivered")
        assert {v["status"] for v in kafka_values(fn)[5:]} == {"b"}
        assert all(v["n"] >= 10 for v in kafka_values(fn)[5:])  # positions were kept

        await call(lam.update_event_source_mapping, UUID=uuid, Enabled=False)
        await wait_for(lambda: field_is(lam, uuid, "State", "Disabled"), 15, "disabled")
        await produce_json(kafka_bootstrap, topic, batch(20))
        await asyncio.sleep(1.5)  # a negative check: nothing may arrive while disabled
        assert len(kafka_values(fn)) == 10
        await call(lam.update_event_source_mapping, UUID=uuid, Enabled=True)
        await wait_for(lambda: len(kafka_values(fn)) == 15, 20, "delivery after enable")
        assert sorted(v["n"] for v in kafka_values(fn)[10:]) == [20, 22, 24, 26, 28]

    async with running_daemon(config) as daemon:  # a restart: the mapping and its offsets stay
        lam = client(daemon)
        await produce_json(kafka_bootstrap, topic, batch(30))
        await wait_for(lambda: len(kafka_values(fn)) == 20, 20, "delivery after a restart")
        assert sorted(v["n"] for v in kafka_values(fn)[15:]) == [30, 32, 34, 36, 38]
        await call(lam.delete_event_source_mapping, UUID=uuid)
        await wait_for(lambda: not daemon.mappings, 15, "the mapping stopped")


async def test_two_processes_sharing_the_store_converge(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    fn = f"api-two-{unique}"
    arn = f"arn:aws:sqs:us-east-1:000000000000:{fn}"
    config = esmd_config(elasticmq_endpoint, tmp_path, fn)
    async with running_daemon(config) as one, running_daemon(config) as two:
        lam_one, lam_two = client(one), client(two)
        made = await call(
            lam_one.create_event_source_mapping, EventSourceArn=arn, FunctionName=fn, Enabled=False
        )
        uuid = made["UUID"]
        await wait_for(lambda: field_is(lam_two, uuid, "State", "Disabled"), 10, "created on two")
        await call(lam_two.update_event_source_mapping, UUID=uuid, BatchSize=3)
        await wait_for(lambda: field_is(lam_one, uuid, "BatchSize", 3), 10, "updated on one")
        await wait_for(lambda: field_is(lam_one, uuid, "State", "Disabled"), 10, "applied on one")
        await call(lam_one.delete_event_source_mapping, UUID=uuid)

        async def gone_from_two() -> bool:
            listed = await call(lam_two.list_event_source_mappings, FunctionName=fn)
            return not listed["EventSourceMappings"]

        await wait_for(gone_from_two, 10, "deleted on two")


async def test_unsigned_requests_from_loopback_pass_when_allowed(
    elasticmq_endpoint: str, tmp_path: Path, unique: str
) -> None:
    config = esmd_config(elasticmq_endpoint, tmp_path, unique)
    config["api"] = {"allow_unauthenticated_on_loopback": True}
    async with running_daemon(config) as daemon:
        listed = await call(unsigned(daemon).list_event_source_mappings)
        assert listed["EventSourceMappings"] == []
