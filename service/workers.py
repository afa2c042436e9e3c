"""Worker processes: one daemon that uses every core.

One Python process runs one event loop on one core, so ``esmd run`` starts
``server.workers`` processes (default: one per core), each a full :class:`Daemon` over the
same config, under a :class:`Supervisor` that serves the HTTP endpoints for all of them.

The sources share work the way separate replicas would, with no protocol of our own:

- Kafka: each worker's pollers join the mapping's consumer group, so the broker spreads the
  partitions over every process;
- SQS: every worker receives from the queue (competing consumers);
- the pool bounds of a mapping (MinimumPollers, MaximumPollers, ...) are split between the
  workers, so the whole daemon stays within them; a worker whose share of the maximum is
  nothing leaves the mapping to the others; a Kafka worker whose share of the minimum is
  nothing runs no poller until it reads lag in the consumer group;
- streams with ``checkpoints.store: sqlite`` run in worker 0 only (one writer per file);
  with DynamoDB leases every worker takes part.

With ``api:`` the supervisor serves Lambda's ESM API (service/api/supervised.py) and writes
its store; each worker follows the store and applies changes itself.

Metrics go through prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``): each
worker writes its samples to memory-mapped files, and the supervisor's ``/metrics`` merges
them (counters and histograms summed, gauges by the mode each declares).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import struct
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.admin import serve
from service.config import EsmdConfig, MappingConfig
from service.scaling import PoolBounds

#: the environment variable that tells a process it is worker "index/count"
WORKER_ENV = "ESMD_WORKER"
_RESTART_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Worker:
    """Which of the daemon's processes this is: ``index`` of ``count``."""

    index: int = 0
    count: int = 1
    state_dir: Path | None = None  # where the supervisor reads this worker's readiness

    @classmethod
    def from_env(cls) -> Worker:
        spec = os.environ.get(WORKER_ENV)
        if not spec:
            return SOLO
        index, count = (int(x) for x in spec.split("/"))
        state = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        return cls(index, count, Path(state) if state else None)

    def part(self, total: int) -> int:
        """This worker's share of ``total`` pollers (the first workers take the remainder)."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def share(self, bounds: PoolBounds, *, keep_one: bool = True) -> PoolBounds:
        """A pool's bounds for this worker: the parts add up to ``bounds`` over the workers.

        ``keep_one``: a worker that runs the mapping keeps at least one poller, for sources
        that see their backlog only through a poller (SQS). Kafka reads its lag without a
        consumer (service/sources/kafka_lag.py), so its pools pass False and the whole
        daemon idles at exactly MinimumPollers."""
        maximum = max(1, self.part(bounds.maximum))
        minimum = self.part(bounds.minimum)
        return PoolBounds(min(maximum, max(1, minimum) if keep_one else minimum), maximum)

    def runs(self, mapping: MappingConfig, config: EsmdConfig) -> bool:
        """Whether this worker takes part in the mapping at all."""
        kind = mapping.source_kind
        if kind.is_stream and config.checkpoints.store == "sqlite":
            return self.index == 0
        provisioned = mapping.ProvisionedPollerConfig
        if provisioned is not None and self.part(provisioned.MaximumPollers) == 0:
            return False
        scaling = mapping.ScalingConfig  # SQS: a share of MaximumConcurrency, at least one
        if scaling is not None and scaling.MaximumConcurrency is not None:
            return self.part(scaling.MaximumConcurrency) > 0
        return True

    def report(self, ready: bool, mappings: list[dict[str, Any]]) -> None:
        """Tell the supervisor this worker's readiness and its mappings' status."""
        if self.state_dir is None:
            return
        status = self.state_dir / f"status-{self.index}.json"
        status.with_suffix(".tmp").write_bytes(orjson.dumps(mappings, default=str))
        status.with_suffix(".tmp").replace(status)  # atomic: never read half written
        (self.state_dir / f"ready-{self.index}").write_text("1" if ready else "0")


SOLO = Worker()


def worker_count(config: EsmdConfig) -> int:
    return config.server.workers or usable_cores()


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container's CPU limit), which os.cpu_count() does not see."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cgroup.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, -(-int(quota) // int(period))))


class SupervisedApi(Protocol):
    """Lambda's ESM API in the supervisor (service/api/supervised.py): it serves the API and
    writes the store; the workers follow the store."""

    async def open(
        self, observe: Callable[[str, float | None], dict[str, Any] | None]
    ) -> list[web.RouteDef]: ...

    async def close(self) -> None: ...


class Supervisor:
    """Starts the workers, restarts one that dies, serves /metrics, /healthz and /readyz for
    all of them, and passes SIGTERM on (a second SIGTERM too, which makes them abandon)."""

    def __init__(
        self,
        config: EsmdConfig,
        config_path: str,
        argv: list[str],
        api: SupervisedApi | None = None,
    ) -> None:
        self.config = config
        self.api = api
        self.count = worker_count(config)
        self._path = config_path
        self._argv = argv
        self._dir = Path(tempfile.mkdtemp(prefix="esmd-metrics-"))
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._log = structlog.get_logger("esmd.supervisor")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signal)
        await self._serve()
        self._log.info("starting workers", workers=self.count, listen=self.config.server.listen)
        try:
            watchers = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
            await asyncio.gather(*watchers)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
            if self.api is not None:
                await self.api.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._log.info("stopped")
        return 0

    def _signal(self) -> None:
        self._stopping.set()
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def _keep(self, index: int) -> None:
        """Run worker ``index`` until the supervisor stops; restart it if it dies."""
        while not self._stopping.is_set():
            env = {
                **os.environ,
                WORKER_ENV: f"{index}/{self.count}",
                "PROMETHEUS_MULTIPROC_DIR": str(self._dir),
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service", *self._argv, env=env
            )
            self._procs[index] = proc
            code = await proc.wait()
            _mark_dead(self._dir, proc.pid)
            (self._dir / f"ready-{index}").unlink(missing_ok=True)
            if self._stopping.is_set():
                return
            self._log.error("worker died; restarting", worker=index, code=code)
            await asyncio.sleep(_RESTART_AFTER)

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
            await self.api.open(self._observed) if self.api is not None else None,
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self._dir))  # type: ignore[no-untyped-call]
        for attempt in range(3):
            try:
                body = await asyncio.to_thread(generate_latest, registry)
                break
            except struct.error:  # a worker is creating its file right now: read again
                await asyncio.sleep(0.01 * (attempt + 1))
        else:
            return web.Response(status=503, text="metrics files are being created\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        alive = sum(p.returncode is None for p in self._procs.values())
        ok = alive == self.count
        if ok:
            return web.Response(text="ok\n")
        return web.Response(text=f"{alive} of {self.count} workers alive\n", status=503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = {str(i): self._ready(i) for i in range(self.count)}
        ok = all(ready.values()) and not self._stopping.is_set()
        body: dict[str, Any] = {"ready": ok, "workers": ready}
        return web.Response(
            body=orjson.dumps(body), status=200 if ok else 503, content_type="application/json"
        )

    async def _mappings(self, _: web.Request) -> web.Response:
        """Every worker's mappings, each status marked with its worker."""
        found = self._statuses()
        return web.Response(body=orjson.dumps({"mappings": found}), content_type="application/json")

    def _statuses(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for index in range(self.count):
            path = self._dir / f"status-{index}.json"
            try:
                found += [{**m, "worker": index} for m in orjson.loads(path.read_bytes())]
            except (OSError, orjson.JSONDecodeError):  # not written yet, or being written
                continue
        return found

    def _observed(self, uuid: str, revision: float | None) -> dict[str, Any] | None:
        """A mapping's status as the workers report it (an Enabled one first), for the API;
        with ``revision``, only from workers that run that revision (its LastModified)."""
        reports = [
            m
            for m in self._statuses()
            if m.get("uuid") == uuid and (revision is None or m.get("revision") == revision)
        ]
        reports.sort(key=lambda m: m.get("state") != "Enabled")
        return reports[0] if reports else None

    def _ready(self, index: int) -> bool:
        proc = self._procs.get(index)
        marker = self._dir / f"ready-{index}"
        return (
            proc is not None
            and proc.returncode is None
            and marker.exists()
            and marker.read_text() == "1"
        )


def _mark_dead(path: Path, pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


async def watch_parent(stop: asyncio.Event, request_stop: Any, period: float = 1.0) -> None:
    """A worker stops when its supervisor is gone (killed with SIGKILL, say)."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(period)
        if os.getppid() != parent:
            request_stop()
            return
