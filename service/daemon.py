"""Daemon: runs the mappings of a config and serves /metrics, /healthz, /readyz, /mappings,
and with ``api:`` Lambda's event source mapping API, whose changes it applies live
(service/api/: the daemon is the API's Runner).

Stopping is two-phase: the first SIGTERM/SIGINT stops polling and lets in-flight batches
finish (up to ``server.shutdown_grace_seconds``) before committing what is done; a second
signal abandons the wait. Signal handlers only set state.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.admin import serve
from service.api.control import Control
from service.api.routes import Api
from service.api.store import SqliteMappingStore
from service.aws import SharedClients
from service.config import EsmdConfig, MappingConfig
from service.mapping import Mapping
from service.metrics import Metrics
from service.scaling import PollerGroups
from service.targets import TARGETS
from service.workers import SOLO, Worker, watch_parent


def unsupported(config: EsmdConfig) -> list[str]:
    """Features valid in AWS's schema that this build cannot run yet, refused at start so no
    record is acknowledged on a promise that would not be kept. (Source kinds and their
    OnFailure destinations are checked by the config, from the source registry.)"""
    problems = []
    for m in config.mappings:
        kind = config.function_for(m).kind
        if kind not in TARGETS:
            problems.append(
                f"mapping {m.Name!r}: FunctionName: {kind} targets are not available yet"
            )
    return problems


class Daemon:
    def __init__(
        self, config: EsmdConfig, metrics: Metrics | None = None, worker: Worker = SOLO
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.worker = worker
        #: PollerGroupName: the mappings of a group share its pollers
        self.poller_groups = PollerGroups()
        #: AWS clients shared by the mappings (one per service and endpoint)
        self.clients = SharedClients()
        self.mappings = [
            Mapping(m, config, self.metrics, worker, self.poller_groups, self.clients)
            for m in config.mappings
            if worker.runs(m, config)
        ]
        self._tasks: dict[Mapping, asyncio.Task[None]] = {}
        #: the API's view of the mappings (single process with ``api:`` only)
        self.control: Control | None = None
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._log = structlog.get_logger("esmd.daemon")

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = True) -> None:
        if handle_signals:
            self._install_signal_handlers()
        helpers = []
        for m in self.mappings:
            self._tasks[m] = asyncio.create_task(m.run(), name=f"mapping {m.name}")
        if self.config.api is not None:  # a worker follows the store; its supervisor serves
            self.control = Control(
                self.config, self, SqliteMappingStore(self.config.api_store_path)
            )
            await self.control.open(list(self.mappings))
        if self.worker is SOLO:
            await self._serve()
        else:  # the supervisor serves HTTP; a worker reports readiness and minds its parent
            helpers.append(asyncio.create_task(watch_parent(self._stop, self.request_stop)))
            helpers.append(asyncio.create_task(self._report_ready()))
        self._log.info(
            "started",
            mappings=[m.name for m in self.mappings],
            listen=self.config.server.listen,
            worker=f"{self.worker.index}/{self.worker.count}",
        )
        try:
            await self._stop.wait()
            self._log.info("stopping: draining in-flight batches")
            if self.control is not None:
                await self.control.close()
            for m in self.mappings:
                m.stop()
            tasks = list(self._tasks.values())
            await self._wait_for_mappings(tasks)
            for t in tasks:
                if not t.done():
                    t.cancel("forced stop")
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for helper in helpers:
                helper.cancel()
            if self._runner is not None:
                await self._runner.cleanup()
            self._log.info("stopped")

    # --- the API's Runner -------------------------------------------------------------------

    def start_mapping(self, config: MappingConfig) -> Mapping:
        """Start a mapping now (the API created or changed it); a worker that takes no part
        in it (Worker.runs) only describes it."""
        m = Mapping(
            config, self.config, self.metrics, self.worker, self.poller_groups, self.clients
        )
        if not self.worker.runs(config, self.config):
            return m
        if self._stop.is_set():
            m.stop()  # runs to its end at once
        self.mappings.append(m)
        self._tasks[m] = asyncio.create_task(m.run(), name=f"mapping {m.name}")
        return m

    async def retire_mapping(self, mapping: Mapping) -> None:
        """Stop a mapping as at shutdown (drain in-flight batches, commit) and forget it.
        Cancelled midway, the mapping stays known, so shutdown still waits for it."""
        mapping.stop()
        task = self._tasks.get(mapping)
        if task is not None:
            await self._wait_for_mappings([task])
            if not task.done():
                task.cancel("forced stop")
            await asyncio.gather(task, return_exceptions=True)
        self._tasks.pop(mapping, None)
        if mapping in self.mappings:
            self.mappings.remove(mapping)

    @property
    def ready(self) -> bool:
        return all(m.ready for m in self.mappings) and not self._stop.is_set()

    async def _report_ready(self) -> None:
        while True:
            self.metrics.count_tasks()
            self.worker.report(self.ready, [self._status(m) for m in self.mappings])
            await asyncio.sleep(0.5)

    def _status(self, m: Mapping) -> dict[str, Any]:
        """A mapping's status; an API mapping's with the revision it runs (LastModified)."""
        revision = self.control.revision(m) if self.control is not None else None
        return m.status() | ({"revision": revision} if revision is not None else {})

    async def _wait_for_mappings(self, tasks: list[asyncio.Task[None]]) -> None:
        """Until every mapping has drained, the grace period is over, or a second signal."""
        if not tasks:
            return
        grace = self.config.server.shutdown_grace_seconds + 10
        everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        force: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
        await asyncio.wait([everything, force], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()

    def request_stop(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (port 0 in the config picks a free one)."""
        assert self._runner is not None
        host, port = self._runner.addresses[0][:2]
        return host, port

    # --- HTTP -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        self._runner = await serve(
            self.config.server.host_port,
            {
                "/metrics": self._metrics,
                "/healthz": self._healthz,
                "/readyz": self._readyz,
                "/mappings": self._mappings,
            },
            self.config.server.token,
            Api(self.config.api, self.control).routes()
            if self.config.api is not None and self.control is not None
            else None,
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        self.metrics.count_tasks()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        states = {m.name: m.state.value for m in self.mappings}
        ready = self.ready
        return _json({"ready": ready, "mappings": states}, 200 if ready else 503)

    async def _mappings(self, _: web.Request) -> web.Response:
        return _json({"mappings": [m.status() for m in self.mappings]})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
