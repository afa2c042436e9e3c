"""The live set of mappings as the API sees it: the file's and the API's, their API states,
and the five operations.

File mappings are listed and read like any other but are read-only through the API
(ResourceConflictException): the file stays the GitOps path, changed by editing it. API
mappings are stored (``store``) before they are applied, so a restart brings them back.

Changes apply live through a :class:`Runner` (the Daemon): create starts the mapping; update
and delete first stop the old one, which drains its in-flight batches and commits, then
start the new one (same Name, so the same checkpoints and consumer group). While that runs
the mapping shows Updating, Enabling, Disabling or Deleting, as AWS's do.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from service.api.shapes import ApiError, config_to_response, invalid, request_to_config
from service.api.store import SqliteMappingStore, Stored
from service.config import ConfigError, EsmdConfig, MappingConfig, parse_mapping
from service.errors import USER_INITIATED
from service.mapping import Mapping, State
from service.targets import TARGETS


class Runner(Protocol):
    """What the API needs of the daemon."""

    def start_mapping(self, config: MappingConfig) -> Mapping: ...

    async def retire_mapping(self, mapping: Mapping) -> None:
        """Stop a mapping (drain, commit) and forget it."""
        ...


@dataclass
class Entry:
    #: the running mapping (the old one until an update is applied)
    mapping: Mapping
    from_file: bool
    #: the properties given through the API (an update merges into them); None: file
    properties: dict[str, Any] | None
    last_modified: float
    #: Updating, Enabling, Disabling or Deleting while a change is being applied
    transition: State | None = None
    applied: asyncio.Event = field(default_factory=asyncio.Event)
    #: the config as last set (an update shows it at once, before it is applied)
    config: MappingConfig | None = None

    def __post_init__(self) -> None:
        if self.config is None:
            self.config = self.mapping.config

    @property
    def current(self) -> MappingConfig:
        assert self.config is not None
        return self.config

    @property
    def uuid(self) -> str:
        return self.current.uuid


class Control:
    def __init__(self, esmd: EsmdConfig, runner: Runner, store: SqliteMappingStore) -> None:
        self.esmd = esmd
        self.runner = runner
        self.store = store
        self.entries: dict[str, Entry] = {}  # by UUID
        self._changes: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("esmd.api")

    async def open(self, file_mappings: list[Mapping]) -> None:
        """Take the file's mappings and start the stored API mappings."""
        started = time.time()
        for m in file_mappings:
            self.entries[m.config.uuid] = Entry(m, True, None, started)
        for stored in await self.store.open():
            try:
                config = self._validate(stored.properties)
            except ApiError as exc:
                self._log.error(
                    "stored mapping not started", mapping=stored.name, error=exc.message
                )
                continue
            if config.uuid in self.entries:
                self._log.error("stored mapping has a file mapping's name", mapping=stored.name)
                continue
            mapping = self.runner.start_mapping(config)
            self.entries[config.uuid] = Entry(
                mapping, False, stored.properties, stored.last_modified
            )

    async def close(self) -> None:
        for task in list(self._changes):
            task.cancel()
        await asyncio.gather(*self._changes, return_exceptions=True)
        await self.store.close()

    # --- the operations --------------------------------------------------------------------

    async def create(self, body: Any) -> dict[str, Any]:
        properties = request_to_config(body, "CreateEventSourceMapping")
        properties.setdefault("Name", f"esm-{secrets.token_hex(8)}")
        config = self._validate(properties)
        if config.uuid in self.entries:
            raise ApiError(
                "ResourceConflictException", f"a mapping named {config.Name!r} already exists"
            )
        for other in self.entries.values():
            if _same_source_and_function(other.current, config):
                raise ApiError(
                    "ResourceConflictException",
                    "The event source and function provided mapping already exists. Please "
                    f"update or delete the existing mapping with UUID {other.uuid}",
                )
        now = time.time()
        await self.store.put(Stored(config.Name, properties, now))
        entry = Entry(self.runner.start_mapping(config), False, properties, now)
        self.entries[config.uuid] = entry
        self._log.info("mapping created", mapping=config.Name, uuid=config.uuid)
        return self.view(entry)

    async def update(self, uuid: str, body: Any) -> dict[str, Any]:
        entry = self._changeable(uuid, "updated")
        assert entry.properties is not None
        changes = request_to_config(body, "UpdateEventSourceMapping")
        properties = entry.properties | changes
        config = self._validate(properties)
        now = time.time()
        await self.store.put(Stored(config.Name, properties, now))
        old = entry.mapping.config
        entry.properties, entry.last_modified, entry.config = properties, now, config
        entry.transition = (
            State.DISABLING
            if old.Enabled and not config.Enabled
            else State.ENABLING
            if config.Enabled and not old.Enabled
            else State.UPDATING
        )
        entry.applied.clear()
        view = self.view(entry)
        self._background(self._replace(entry, config), f"update {config.Name}")
        return view

    async def delete(self, uuid: str) -> dict[str, Any]:
        entry = self._changeable(uuid, "deleted")
        await self.store.delete(entry.mapping.name)
        entry.transition = State.DELETING
        entry.applied.clear()
        self._background(self._remove(entry), f"delete {entry.mapping.name}")
        return self.view(entry)

    def get(self, uuid: str) -> dict[str, Any]:
        return self.view(self._entry(uuid))

    def list(self, event_source_arn: str | None, function_name: str | None) -> list[dict[str, Any]]:
        """Every mapping that matches, ordered by UUID (the pagination order)."""
        out = []
        for entry in sorted(self.entries.values(), key=lambda e: e.uuid):
            cfg = entry.current
            if event_source_arn and cfg.EventSourceArn != event_source_arn:
                continue
            if function_name and function_name not in (
                cfg.FunctionName,
                self.esmd.function_arn(cfg),
            ):
                continue
            out.append(self.view(entry))
        return out

    # --- applying changes ------------------------------------------------------------------

    def _background(self, change: Any, name: str) -> None:
        task = asyncio.create_task(change, name=name)
        self._changes.add(task)
        task.add_done_callback(self._changes.discard)

    async def _replace(self, entry: Entry, config: MappingConfig) -> None:
        await self.runner.retire_mapping(entry.mapping)
        entry.mapping = self.runner.start_mapping(config)
        entry.applied.set()
        self._log.info("mapping updated", mapping=config.Name, uuid=config.uuid)

    async def _remove(self, entry: Entry) -> None:
        await self.runner.retire_mapping(entry.mapping)
        self.entries.pop(entry.uuid, None)
        entry.applied.set()
        self._log.info("mapping deleted", mapping=entry.mapping.name, uuid=entry.uuid)

    # --- helpers ---------------------------------------------------------------------------

    def _validate(self, properties: dict[str, Any]) -> MappingConfig:
        """The checks of ``esmd validate``, and the target kinds this build runs."""
        try:
            config = parse_mapping(properties)
        except ConfigError as exc:
            raise invalid("; ".join(f"{p.field}: {p.message}" for p in exc.problems)) from None
        kind = self.esmd.function_for(config).kind
        if kind not in TARGETS:
            raise invalid(f"FunctionName: {kind} targets are not available yet")
        return config

    def _entry(self, uuid: str) -> Entry:
        entry = self.entries.get(uuid)
        if entry is None:
            raise ApiError(
                "ResourceNotFoundException", f"The resource you requested does not exist. {uuid}"
            )
        return entry

    def _changeable(self, uuid: str, what: str) -> Entry:
        entry = self._entry(uuid)
        if entry.from_file:
            raise ApiError(
                "ResourceConflictException",
                f"mapping {entry.mapping.name!r} comes from the configuration file and cannot "
                f"be {what} through the API; change the file",
            )
        if entry.transition is not None and not entry.applied.is_set():
            raise ApiError(
                "ResourceInUseException",
                f"Cannot change the event source mapping {uuid}: it is {entry.transition.value}",
            )
        return entry

    def view(self, entry: Entry) -> dict[str, Any]:
        """The mapping as an EventSourceMappingConfiguration."""
        m = entry.mapping
        cfg = entry.current
        if entry.transition is not None and entry.applied.is_set() and m.ready:
            entry.transition = None
        state = entry.transition or m.state
        props = cfg.model_dump(mode="json", exclude_none=True)
        esmd = self.esmd
        extra = {
            "UUID": cfg.uuid,
            "EventSourceMappingArn": f"arn:aws:lambda:{esmd.aws.region}:{esmd.aws.account_id}"
            f":event-source-mapping:{cfg.uuid}",
            "FunctionArn": esmd.function_arn(cfg),
            "BatchSize": cfg.batch_size,
            "MaximumBatchingWindowInSeconds": cfg.batching_window_seconds,
            "LastModified": entry.last_modified,
            "State": state.value,
            "StateTransitionReason": m.state_reason or USER_INITIATED,
            "LastProcessingResult": _last_result(m),
        }
        return config_to_response(props, extra)


def _same_source_and_function(a: MappingConfig, b: MappingConfig) -> bool:
    def key(m: MappingConfig) -> tuple[Any, ...]:
        source = m.SelfManagedEventSource
        servers = tuple(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS) if source else ()
        return (m.EventSourceArn, servers, tuple(m.Topics or ()), m.FunctionName)

    return key(a) == key(b)


def _last_result(m: Mapping) -> str:
    """AWS's LastProcessingResult: a problem while the source or target fails, else whether
    records were processed."""
    if m.last_error and m.state_reason not in (None, USER_INITIATED):
        return f"PROBLEM: {m.state_reason}: {m.last_error}"
    invoked = m.metrics.metrics.registry.get_sample_value(
        "esm_invoked_events_total", {"mapping": m.name, "source": m.metrics.source}
    )
    return "OK" if invoked else "No records processed"
