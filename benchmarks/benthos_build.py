"""Benthos v4.27.0, built from the Go module proxy into the project's cache folder.

The main (benchmarks/benthos/main.go) imports only the components the peer benchmark uses:
io (http_client), kafka (kafka_franz) and pure (mapping, archive). It is copied into a
throw-away Go module under ``CACHE/benthos-build``, which requires
``github.com/benthosdev/benthos/v4@v4.27.0`` (the proxy serves that version although it
refuses to list versions), and ``go build`` writes ``CACHE/bin/benthos-v4.27.0``. About two
minutes on a fresh 2-core machine, then nothing. No Benthos code is kept in this repository.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from service.devtools.servers import CACHE

MODULE = "github.com/benthosdev/benthos/v4"
VERSION = "v4.27.0"
MAIN = Path(__file__).resolve().parent / "benthos" / "main.go"
BINARY = CACHE / "bin" / f"benthos-{VERSION}"


def benthos_binary() -> Path:
    """The built binary; built on first use (one builder at a time across processes)."""
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    with (BINARY.parent / ".benthos.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.access(BINARY, os.X_OK):
            _build()
    return BINARY


def _build() -> None:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    work = CACHE / "benthos-build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(MAIN, work / "main.go")
    (work / "go.mod").write_text("module esmd.local/benthos-bench\n\ngo 1.22\n")
    env = {**os.environ, "GO111MODULE": "on", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    partial = BINARY.parent / f"{BINARY.name}.partial"
    for args in (
        ["get", f"{MODULE}@{VERSION}"],
        ["mod", "tidy"],
        ["build", "-o", str(partial), "."],
    ):
        subprocess.run([go, *args], cwd=work, env=env, check=True, timeout=1800)
    partial.rename(BINARY)  # complete or absent: an interrupted build is not mistaken for one


if __name__ == "__main__":
    print(benthos_binary())
