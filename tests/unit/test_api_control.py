"""The API's live set (service/api/control.py) with a fake Runner: transitions, the
ResourceInUseException while a change is applied, read-only file mappings, the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.api.control import Control
from service.api.shapes import ApiError
from service.api.store import SqliteMappingStore
from service.config import MappingConfig, parse_config
from service.mapping import Mapping, State
from service.metrics import Metrics

ARN = "arn:aws:sqs:us-east-1:000000000000:q"


class FakeRunner:
    """Starts nothing; a retire waits until the test lets it go."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.release = asyncio.Event()
        self.started: list[str] = []

    def start_mapping(self, config: MappingConfig) -> Mapping:
        self.started.append(config.Name)
        return Mapping(config, esmd, self.metrics)

    async def retire_mapping(self, mapping: Mapping) -> None:
        await self.release.wait()


esmd = parse_config({"functions": {"f": {"python": "x:y"}}})


async def control(tmp_path: Path, runner: FakeRunner, *file: Mapping) -> Control:
    made = Control(esmd, runner, SqliteMappingStore(str(tmp_path / "api.db")))
    await made.open(list(file), sync_seconds=3600)
    return made


async def test_a_change_in_progress_refuses_another(tmp_path: Path) -> None:
    runner = FakeRunner()
    ctl = await control(tmp_path, runner)
    made = await ctl.create({"EventSourceArn": ARN, "FunctionName": "f"})
    assert made["State"] == "Creating"
    uuid = made["UUID"]
    updated = await ctl.update(uuid, {"Enabled": False})
    assert updated["State"] == "Disabling"
    with pytest.raises(ApiError) as caught:
        await ctl.update(uuid, {"BatchSize": 3})
    assert caught.value.code == "ResourceInUseException"
    runner.release.set()
    entry = ctl.entries[uuid]
    await asyncio.wait_for(entry.applied.wait(), 5)
    assert ctl.get(uuid)["State"] == "Disabled"
    deleted = await ctl.delete(uuid)
    assert deleted["State"] == "Deleting"
    await asyncio.wait_for(entry.applied.wait(), 5)
    with pytest.raises(ApiError, match="does not exist"):
        ctl.get(uuid)
    await ctl.close()


async def test_file_mappings_are_read_only_and_api_mappings_are_stored(tmp_path: Path) -> None:
    runner = FakeRunner()
    config = MappingConfig.model_validate(
        {"Name": "file", "EventSourceArn": ARN, "FunctionName": "f"}
    )
    ctl = await control(tmp_path, runner, Mapping(config, esmd, runner.metrics))
    with pytest.raises(ApiError) as caught:
        await ctl.delete(config.uuid)
    assert caught.value.code == "ResourceConflictException"
    with pytest.raises(ApiError) as caught:
        await ctl.create({"EventSourceArn": ARN, "FunctionName": "f"})
    assert caught.value.code == "ResourceConflictException"
    made = await ctl.create({"EventSourceArn": ARN + "2", "FunctionName": "f", "BatchSize": 4})
    await ctl.close()

    again = FakeRunner()
    ctl = await control(tmp_path, again)
    assert ctl.get(made["UUID"])["BatchSize"] == 4
    assert again.started == [ctl.entries[made["UUID"]].mapping.name]
    await ctl.close()


async def test_invalid_requests_name_the_field(tmp_path: Path) -> None:
    ctl = await control(tmp_path, FakeRunner())
    with pytest.raises(ApiError, match="BatchSize") as caught:
        await ctl.create({"EventSourceArn": ARN, "FunctionName": "f", "BatchSize": 0})
    assert caught.value.code == "InvalidParameterValueException"
    with pytest.raises(ApiError, match="does not take"):
        await ctl.create({"EventSourceArn": ARN, "FunctionName": "f", "Bogus": 1})
    await ctl.close()


def test_states_include_the_apis() -> None:
    assert {State.UPDATING.value, State.DELETING.value} == {"Updating", "Deleting"}


def test_api_secrets_may_come_from_env_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESMD_TEST_API_SECRET", "from-env")
    (tmp_path / "secret").write_text("from-file\n")
    keys = [
        {"access_key_id": "A", "secret_access_key": "env:ESMD_TEST_API_SECRET"},
        {"access_key_id": "B", "secret_access_key": f"file:{tmp_path / 'secret'}"},
        {"access_key_id": "C", "secret_access_key": "plain"},
    ]
    api = parse_config({"api": {"credentials": keys}}).api
    assert api is not None
    found = {c.access_key_id: c.secret_access_key.get_secret_value() for c in api.credentials}
    assert found == {"A": "from-env", "B": "from-file", "C": "plain"}
    assert "from-env" not in repr(api)


async def test_sqs_provisioned_config_shows_aws_defaults_and_empty_is_on_demand(
    tmp_path: Path,
) -> None:
    ctl = await control(tmp_path, FakeRunner())
    made = await ctl.create(
        {
            "EventSourceArn": ARN,
            "FunctionName": "f",
            "ProvisionedPollerConfig": {"MaximumPollers": 9},
        }
    )
    assert made["ProvisionedPollerConfig"] == {"MinimumPollers": 2, "MaximumPollers": 9}
    empty = await ctl.create(
        {"EventSourceArn": ARN + "2", "FunctionName": "f", "ProvisionedPollerConfig": {}}
    )
    assert "ProvisionedPollerConfig" not in empty
    await ctl.close()
