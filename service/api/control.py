"""The live set of mappings as the API sees it: the file's and the API's, their API states,
and the five operations.

File mappings are listed and read like any other but are read-only through the API
(ResourceConflictException): the file stays the GitOps path, changed by editing it. API
mappings are stored (``store``) before they are applied, so a restart brings them back.

Changes apply live through a :class:`Runner` (the Daemon): create starts the mapping; update
and delete first stop the old one, which drains its in-flight batches and commits, then
start the new one (same Name, so the same checkpoints and consumer group). While that runs
the mapping shows Updating, Enabling, Disabling or Deleting, as AWS's do.

Every ``SYNC_SECONDS`` the set converges on the store, so esmd processes sharing one sqlite
file follow each other's changes: a row that appeared, changed (its LastModified) or went
away is started, replaced or removed here too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from service.api.shapes import ApiError, config_to_response, invalid, request_to_config
from service.api.store import SqliteMappingStore, Stored
from service.config import ConfigError, EsmdConfig, MappingConfig, mapping_uuid, parse_mapping
from service.errors import USER_INITIATED
from service.mapping import Mapping, State
from service.targets import TARGETS

#: how often the store is read for changes made by other processes sharing it
SYNC_SECONDS = 1.0


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

    @property
    def current_state(self) -> str:
        return (self.transition or self.mapping.state).value


#: a mapping's status as the processes that run it report it (worker processes), by UUID
#: and the LastModified of the revision wanted (None: any revision, file mappings)
Observe = Callable[[str, float | None], dict[str, Any] | None]


class Control:
    def __init__(
        self,
        esmd: EsmdConfig,
        runner: Runner,
        store: SqliteMappingStore,
        observe: Observe | None = None,
    ) -> None:
        self.esmd = esmd
        self.runner = runner
        self.store = store
        #: with worker processes: their reports, since this process runs no mapping
        self.observe = observe
        #: the LastModified each running API mapping was started with (see ``revision``)
        self._revisions: dict[Mapping, float] = {}
        self.entries: dict[str, Entry] = {}  # by UUID
        self._changes: set[asyncio.Task[None]] = set()
        #: one change at a time: an operation's store write and its entry go together
        self._lock = asyncio.Lock()
        self._refused: set[tuple[str, float]] = set()  # stored rows already logged as bad
        self._sync: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("esmd.api")

    async def open(self, file_mappings: list[Mapping], sync_seconds: float = SYNC_SECONDS) -> None:
        """Take the file's mappings, start the stored API mappings, and follow the store."""
        started = time.time()
        for m in file_mappings:
            self.entries[m.config.uuid] = Entry(m, True, None, started)
        rows = await self.store.open()
        async with self._lock:
            self._converge(rows)
        self._sync = asyncio.create_task(self._follow(sync_seconds), name="api store sync")

    async def _follow(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            async with self._lock:  # read and apply with no operation of ours in between
                try:
                    rows = await self.store.load()
                except Exception as exc:  # a locked or unreadable file: try next period
                    self._log.warning("api store not read", error=repr(exc))
                    continue
                self._converge(rows)

    def _converge(self, rows: list[Stored]) -> None:
        """Start, replace or remove API mappings so the set matches the store's rows."""
        wanted: set[str] = set()
        for stored in rows:
            known = self.entries.get(mapping_uuid(stored.name))
            if known is not None and not known.from_file and not _outdated(known, stored):
                wanted.add(known.uuid)  # unchanged, or our own change being applied
                continue
            config = self._stored_config(stored)
            if config is None:
                continue
            wanted.add(config.uuid)
            entry = self.entries.get(config.uuid)
            if entry is None:
                mapping = self._start(config, stored.last_modified)
                self.entries[config.uuid] = Entry(
                    mapping, False, stored.properties, stored.last_modified
                )
            elif _outdated(entry, stored):
                self._begin_update(entry, stored.properties, config, stored.last_modified)
        for uuid, entry in list(self.entries.items()):
            if not entry.from_file and uuid not in wanted and not _busy(entry):
                self._begin_delete(entry)

    def _stored_config(self, stored: Stored) -> MappingConfig | None:
        try:
            config = self._validate(stored.properties)
        except ApiError as exc:
            problem = exc.message
        else:
            entry = self.entries.get(config.uuid)
            if entry is None or not entry.from_file:
                return config
            problem = "a mapping of the configuration file has this name"
        if (stored.name, stored.last_modified) not in self._refused:
            self._refused.add((stored.name, stored.last_modified))
            self._log.error("stored mapping not started", mapping=stored.name, error=problem)
        return None

    async def close(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            await asyncio.gather(self._sync, return_exceptions=True)
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
        async with self._lock:
            if config.uuid in self.entries:  # made by another process meanwhile
                raise ApiError("ResourceConflictException", f"{config.Name!r} already exists")
            now = time.time()
            await self.store.put(Stored(config.Name, properties, now))
            entry = Entry(self._start(config, now), False, properties, now)
            self.entries[config.uuid] = entry
        self._log.info("mapping created", mapping=config.Name, uuid=config.uuid)
        return self.view(entry)

    async def update(self, uuid: str, body: Any) -> dict[str, Any]:
        entry = self._changeable(uuid, "updated")
        assert entry.properties is not None
        changes = request_to_config(body, "UpdateEventSourceMapping")
        properties = entry.properties | changes
        config = self._validate(properties)
        async with self._lock:
            self._changeable(uuid, "updated")  # still, after waiting for the lock
            now = time.time()
            await self.store.put(Stored(config.Name, properties, now))
            self._begin_update(entry, properties, config, now)
        return self.view(entry)

    def _begin_update(
        self, entry: Entry, properties: dict[str, Any], config: MappingConfig, modified: float
    ) -> None:
        old = entry.mapping.config
        entry.properties, entry.last_modified, entry.config = properties, modified, config
        entry.transition = (
            State.DISABLING
            if old.Enabled and not config.Enabled
            else State.ENABLING
            if config.Enabled and not old.Enabled
            else State.UPDATING
        )
        entry.applied.clear()
        self._background(self._replace(entry, config, modified), f"update {config.Name}")

    async def delete(self, uuid: str) -> dict[str, Any]:
        async with self._lock:
            entry = self._changeable(uuid, "deleted")
            await self.store.delete(entry.mapping.name)
            self._begin_delete(entry)
        return self.view(entry)

    def _begin_delete(self, entry: Entry) -> None:
        entry.transition = State.DELETING
        entry.applied.clear()
        self._background(self._remove(entry), f"delete {entry.mapping.name}")

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

    def _start(self, config: MappingConfig, modified: float) -> Mapping:
        mapping = self.runner.start_mapping(config)
        self._revisions[mapping] = modified
        return mapping

    def revision(self, mapping: Mapping) -> float | None:
        """The LastModified an API mapping runs (worker processes report it, so the
        supervisor knows when they run the latest); None for the file's mappings."""
        return self._revisions.get(mapping)

    async def _retire(self, mapping: Mapping) -> None:
        await self.runner.retire_mapping(mapping)
        self._revisions.pop(mapping, None)

    async def _replace(self, entry: Entry, config: MappingConfig, modified: float) -> None:
        await self._retire(entry.mapping)
        entry.mapping = self._start(config, modified)
        entry.applied.set()
        self._log.info("mapping updated", mapping=config.Name, uuid=config.uuid)

    async def _remove(self, entry: Entry) -> None:
        await self._retire(entry.mapping)
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
        if _busy(entry):
            raise ApiError(
                "ResourceInUseException",
                f"Cannot change the event source mapping {uuid}: it is {entry.current_state}",
            )
        return entry

    def view(self, entry: Entry) -> dict[str, Any]:
        """The mapping as an EventSourceMappingConfiguration."""
        m = entry.mapping
        cfg = entry.current
        wanted = None if entry.from_file else entry.last_modified
        live = self.observe(cfg.uuid, wanted) if self.observe is not None else None
        running = State(live["state"]) if live else m.state
        reason = (live or {}).get("state_reason") or m.state_reason
        settled = running in (State.ENABLED, State.DISABLED)
        if entry.transition is not None and entry.applied.is_set() and settled:
            entry.transition = None
        state = entry.transition or running
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
            "StateTransitionReason": reason or USER_INITIATED,
            "LastProcessingResult": _last_result(m, live),
        }
        return config_to_response(props, extra)


def _outdated(entry: Entry, stored: Stored) -> bool:
    """Another process changed this API mapping in the store."""
    return not entry.from_file and not _busy(entry) and entry.last_modified != stored.last_modified


def _busy(entry: Entry) -> bool:
    """A change of the entry is still being applied."""
    return entry.transition is not None and not entry.applied.is_set()


def _same_source_and_function(a: MappingConfig, b: MappingConfig) -> bool:
    def key(m: MappingConfig) -> tuple[Any, ...]:
        source = m.SelfManagedEventSource
        servers = tuple(source.Endpoints.KAFKA_BOOTSTRAP_SERVERS) if source else ()
        return (m.EventSourceArn, servers, tuple(m.Topics or m.Queues or ()), m.FunctionName)

    return key(a) == key(b)


def _last_result(m: Mapping, live: dict[str, Any] | None) -> str:
    """AWS's LastProcessingResult: a problem while the source or target fails, else whether
    records were processed (in this process: worker processes report no counts)."""
    reason = live.get("state_reason") if live else m.state_reason
    error = live.get("last_error") if live else m.last_error
    if error and reason not in (None, USER_INITIATED):
        return f"PROBLEM: {reason}: {error}"
    invoked = m.metrics.metrics.registry.get_sample_value(
        "esm_invoked_events_total", {"mapping": m.name, "source": m.metrics.source}
    )
    return "OK" if invoked else "No records processed"
