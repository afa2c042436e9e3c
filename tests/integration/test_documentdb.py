"""The DocumentDB source against mongo-java-server (service/devtools/EsmdMongoServer.java):
changes in order in Lambda's event shape, checkpoints across a SIGKILL, credentials, an
expired resume token."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo import AsyncMongoClient

from service.devtools.servers import MONGO_PASSWORD, MONGO_USER
from tests.integration import docdb_handlers
from tests.integration.kafka_helpers import running_daemon, wait_for
from tests.integration.stream_helpers import client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:rds:us-east-1:000000000000:cluster:esmd-test"


@pytest.fixture
async def mongo(mongo_endpoint: str) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    c: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_endpoint)
    try:
        yield c
    finally:
        await c.close()


def config(
    endpoint: str, name: str, db: str, handler: str, state: Path, **mapping: Any
) -> dict[str, Any]:
    return {
        "checkpoints": {"path": str(state)},
        "documentdb": {"endpoints": {ARN: endpoint}},
        "functions": {name: {"python": f"tests.integration.docdb_handlers:{handler}"}},
        "mappings": [
            {
                "Name": name,
                "EventSourceArn": ARN,
                "FunctionName": name,
                "StartingPosition": "TRIM_HORIZON",
                "DocumentDBEventSourceConfig": {"DatabaseName": db, "CollectionName": "orders"},
                **mapping,
            }
        ],
    }


def _events(name: str) -> list[dict[str, Any]]:
    return [e["event"] for batch in docdb_handlers.events[name] for e in batch["events"]]


async def test_inserts_updates_deletes_in_order_in_lambdas_shape(
    mongo: AsyncMongoClient[dict[str, Any]], mongo_endpoint: str, unique: str, tmp_path: Path
) -> None:
    db, name = f"shop{unique}", f"docdb-{unique}"
    orders = mongo[db]["orders"]
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    first = await orders.insert_one({"n": 1, "status": "new", "at": when, "qty": 2.5})
    second = await orders.insert_one({"n": 2, "status": "new", "tags": ["a", "b"]})
    await orders.update_one({"_id": first.inserted_id}, {"$set": {"status": "paid"}})
    await orders.delete_one({"_id": second.inserted_id})
    cfg = config(
        mongo_endpoint,
        name,
        db,
        "collect",
        tmp_path / "state.db",
        DocumentDBEventSourceConfig={
            "DatabaseName": db,
            "CollectionName": "orders",
            "FullDocument": "UpdateLookup",
        },
    )
    async with running_daemon(cfg):
        await wait_for(lambda: len(_events(name)) >= 4, 30, "four changes")
    batch = docdb_handlers.events[name][0]
    assert batch["eventSource"] == "aws:docdb"
    assert batch["eventSourceArn"] == ARN
    assert set(batch) == {"eventSource", "eventSourceArn", "events"}
    events = _events(name)
    assert [e["operationType"] for e in events] == ["insert", "insert", "update", "delete"]
    one, two = str(first.inserted_id), str(second.inserted_id)
    for e in events:
        assert set(e["_id"]) == {"_data"} and isinstance(e["_id"]["_data"], str)
        assert set(e["clusterTime"]["$timestamp"]) == {"t", "i"}
        assert e["ns"] == {"db": db, "coll": "orders"}
    assert [e["documentKey"] for e in events] == [
        {"_id": {"$oid": one}},
        {"_id": {"$oid": two}},
        {"_id": {"$oid": one}},
        {"_id": {"$oid": two}},
    ]
    assert events[0]["fullDocument"] == {
        "_id": {"$oid": one},
        "n": 1,
        "status": "new",
        "at": {"$date": "2024-05-01T12:30:00Z"},
        "qty": 2.5,
    }
    assert events[1]["fullDocument"]["tags"] == ["a", "b"]
    # UpdateLookup: the whole document as it is now
    assert events[2]["fullDocument"]["status"] == "paid"
    assert events[2]["fullDocument"]["n"] == 1
    assert "fullDocument" not in events[3]
    tokens = [e["_id"]["_data"] for e in events]
    assert len(set(tokens)) == 4


def delivered(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def start(config_path: Path, output: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ESMD_TEST_OUTPUT": str(output), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "service", "run", "-c", str(config_path), "--log-level", "WARNING"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def checkpoint(state: Path) -> str | None:
    if not state.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT checkpoint FROM shard_checkpoints").fetchall()
    return rows[0][0] if rows else None


async def test_sigkill_mid_run_then_resume_after_the_last_delivered_change(
    mongo: AsyncMongoClient[dict[str, Any]], mongo_endpoint: str, unique: str, tmp_path: Path
) -> None:
    total, batch = 3000, 50
    db, name = f"kill{unique}", f"docdb-kill-{unique}"
    orders = mongo[db]["orders"]
    await orders.insert_many([{"n": i} for i in range(total)])
    state, output = tmp_path / "state.db", tmp_path / "delivered.txt"
    cfg = config(mongo_endpoint, name, db, "append_to_file", state, BatchSize=batch)
    cfg["server"] = {"listen": "127.0.0.1:0", "workers": 1}
    config_path = tmp_path / "esmd.yaml"
    config_path.write_text(yaml.safe_dump(cfg))

    first = start(config_path, output)
    try:
        await wait_for(lambda: len(delivered(output)) >= 600, 60, "a first share delivered")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = delivered(output)
    assert len(at_kill) < total, "the run finished before the kill: nothing to resume"
    token = checkpoint(state)
    assert token is not None and token.startswith("{"), token

    second = start(config_path, output)
    try:
        await wait_for(lambda: len(set(delivered(output))) >= total, 60, "every change")
        # the checkpoint stops moving once the last change is settled: nothing is due again
        await wait_for(lambda: checkpoint(state) != token, 30, "a new checkpoint")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    lines = delivered(output)
    counts = Counter(lines)
    assert {int(n) for n in counts} == set(range(total)), "a change was lost"
    # in order within each run; the second run starts after the checkpoint, which is at
    # most the batches in flight (or whose checkpoint write was under way) behind the kill
    resumed_at = int(lines[len(at_kill)])
    assert resumed_at <= int(at_kill[-1]) + 1
    assert int(at_kill[-1]) - resumed_at < 3 * batch, (resumed_at, at_kill[-1])
    assert [int(n) for n in lines[len(at_kill) :]] == list(range(resumed_at, total))
    assert second.returncode == 0


def test_validate_refuses_filter_criteria(tmp_path: Path) -> None:
    cfg = config("mongodb://127.0.0.1:1", "f", "db", "collect", tmp_path / "s.db")
    cfg["mappings"][0]["FilterCriteria"] = {
        "Filters": [{"Pattern": '{"operationType": ["insert"]}'}]
    }
    path = tmp_path / "esmd.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [sys.executable, "-m", "service", "validate", "-c", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert (
        "FilterCriteria: Lambda does not filter DocumentDB events" in result.stdout + result.stderr
    )


def _reason(daemon: Any, name: str, code: str) -> float:
    labels = {"mapping": name, "source": "documentdb", "reason": code}
    return daemon.metrics.registry.get_sample_value("esm_state_reason", labels) or 0  # type: ignore[no-any-return]


async def test_wrong_credentials_show_as_the_state_reason_and_right_ones_deliver(
    mongo: AsyncMongoClient[dict[str, Any]],
    mongo_endpoint: str,
    moto_endpoint: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = f"auth{unique}"
    await mongo[db]["orders"].insert_one({"n": 0})
    wrong, right = f"docdb-wrong-{unique}", f"docdb-right-{unique}"
    monkeypatch.setenv(
        f"DOCDB_WRONG_{unique}", json.dumps({"username": MONGO_USER, "password": "not-it"})
    )
    async with client("secretsmanager", moto_endpoint) as sm:
        secret = await sm.create_secret(
            Name=f"docdb-{unique}",
            SecretString=json.dumps({"username": MONGO_USER, "password": MONGO_PASSWORD}),
        )
    cfgs = [config(mongo_endpoint, n, db, "collect", tmp_path / "state.db") for n in (wrong, right)]
    cfgs[0]["mappings"][0]["SourceAccessConfigurations"] = [
        {"Type": "BASIC_AUTH", "URI": f"env:DOCDB_WRONG_{unique}"}
    ]
    cfgs[1]["mappings"][0]["SourceAccessConfigurations"] = [
        {"Type": "BASIC_AUTH", "URI": secret["ARN"]}
    ]
    cfg = {
        **cfgs[0],
        "aws": {"endpoint_url": moto_endpoint},
        "functions": {**cfgs[0]["functions"], **cfgs[1]["functions"]},
        "mappings": cfgs[0]["mappings"] + cfgs[1]["mappings"],
    }
    async with running_daemon(cfg) as daemon:
        by_name = {m.name: m for m in daemon.mappings}
        await wait_for(
            lambda: _reason(daemon, wrong, "EVENT_SOURCE_AUTHN_ERROR") == 1, 30, "the authn reason"
        )
        status = by_name[wrong].status()
        assert status["state_reason"] == "EVENT_SOURCE_AUTHN_ERROR"
        assert "not-it" not in json.dumps(status)  # never the secret
        await wait_for(lambda: len(_events(right)) >= 1, 30, "the change, with the right password")
        assert by_name[right].status()["state_reason"] == "USER_INITIATED"
    assert _events(wrong) == []


async def test_an_expired_resume_token_is_reported_and_the_mapping_follows_starting_position(
    mongo: AsyncMongoClient[dict[str, Any]], mongo_endpoint: str, unique: str, tmp_path: Path
) -> None:
    """A checkpoint from before the server's change stream history (the stand-in refuses it
    as ChangeStreamHistoryLost, as DocumentDB does once its log moved past a token)."""
    db, name = f"expired{unique}", f"docdb-expired-{unique}"
    await mongo[db]["orders"].insert_many([{"n": i} for i in range(3)])
    state = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(state)) as sql:
        sql.execute(
            "CREATE TABLE shard_checkpoints (mapping TEXT NOT NULL, shard_id TEXT NOT NULL, "
            "checkpoint TEXT NOT NULL, parents TEXT NOT NULL DEFAULT '', "
            "PRIMARY KEY (mapping, shard_id))"
        )
        sql.execute(
            "INSERT INTO shard_checkpoints VALUES (?, ?, ?, '')",
            (name, f"changestream:{db}.orders", '{"_data": "0000000100000001"}'),
        )
        sql.commit()
    async with running_daemon(config(mongo_endpoint, name, db, "collect", state)) as daemon:
        (mapping,) = daemon.mappings
        await wait_for(lambda: len(_events(name)) >= 3, 30, "the changes from TRIM_HORIZON")
        status = mapping.status()
        assert status["state_reason"] == "RESUME_TOKEN_EXPIRED"
        assert "286" in (status["last_error"] or "")
        assert _reason(daemon, name, "RESUME_TOKEN_EXPIRED") == 1
    assert [e["fullDocument"]["n"] for e in _events(name)] == [0, 1, 2]
