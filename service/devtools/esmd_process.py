"""``esmd run`` as a real subprocess, in its own process group: what soak and chaos runs
start, measure (RSS and open file descriptors of the whole group, /metrics) and kill.

The group is killed as a whole (``os.killpg``), as a container runtime or the OOM killer
would: with worker processes, no orphan keeps a partition or a lease.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson

_CHECKOUT = Path(__file__).resolve().parents[2]  # service/devtools/esmd_process.py
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EsmdProcess:
    """One config, started and stopped as often as a run needs; its log appends to
    ``<folder>/esmd.log``. ``config['server']['listen']`` must name a fixed port."""

    def __init__(
        self,
        config: dict[str, Any],
        folder: Path,
        log_level: str = "WARNING",
        env: dict[str, str] | None = None,
    ) -> None:
        self.folder = folder
        self.config_path = folder / "esmd.yaml"
        self.port = 0
        self.configure(config)
        self._log_level = log_level
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None

    def configure(self, config: dict[str, Any]) -> None:
        """The config the next start runs with."""
        self.config_path.write_bytes(orjson.dumps(config))  # JSON is YAML
        self.port = int(str(config["server"]["listen"]).rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self) -> None:
        argv = [sys.executable, "-m", "service", "run", "-c", str(self.config_path)]
        env = {**os.environ, **self._env, "PYTHONPATH": str(_CHECKOUT)}
        with open(self.folder / "esmd.log", "ab") as log:
            self._proc = subprocess.Popen(
                [*argv, "--log-level", self._log_level],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: killpg reaches workers too
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group, and reap it."""
        if self.running():
            os.killpg(self.pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (drain and commit), SIGKILL after ``timeout``; the exit status."""
        assert self._proc is not None, "not started"
        if self.running():
            os.killpg(self.pid, signal.SIGTERM)
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self._proc.wait()

    def metrics(self) -> str:
        """The /metrics page; empty while the daemon does not answer."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return str(reply.read().decode())
        except OSError:
            return ""

    def group(self) -> list[int]:
        """The pids of the process group (the daemon and its workers)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pid:  # fields after the name: state, ppid, pgrp
                pids.append(int(stat.parent.name))
        return pids

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.group():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
            except OSError:
                continue
        return total

    def open_fds(self) -> int:
        total = 0
        for pid in self.group():
            try:
                total += len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
        return total
