"""The outside tools the deployment tests use, installed on first use from the Go module proxy.

- ``helm``: built with ``go install helm.sh/helm/v3/cmd/helm@HELM_VERSION`` into
  ``<repo>/.cache/bin`` (GOBIN), with the ldflags helm's own Makefile sets, so ``helm version``
  and the default Kubernetes version are right. About 3.5 minutes on a fresh 2-core machine,
  then nothing.
- KEDA's CRDs (``github.com/kedacore/keda/v2``), prometheus-operator's CRDs and the Compose
  specification's JSON Schema (``github.com/compose-spec/compose-go/v2``): read from the
  modules that ``go mod download`` puts in the Go module cache (a few MB, seconds).

``python -m tests.deploy.tools`` installs everything ahead of a test run and prints where.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
BIN = CACHE / "bin"

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"
KEDA_MODULE = "github.com/kedacore/keda/v2"
KEDA_VERSION = "v2.21.0"
PROM_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator"
PROM_OPERATOR_VERSION = "v0.85.0"
COMPOSE_GO_MODULE = "github.com/compose-spec/compose-go/v2"
COMPOSE_GO_VERSION = "v2.16.2"

KEDA_SCALEDOBJECT_CRD = "config/crd/bases/keda.sh_scaledobjects.yaml"
SERVICEMONITOR_CRD = "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
COMPOSE_SPEC = "schema/compose-spec.json"


class ToolError(RuntimeError):
    """A tool could not be installed; the message says what ran and what it printed."""


def go() -> str:
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise ToolError("the Go toolchain (`go`) is needed to install helm and fetch schemas")
    return found


def _run_go(args: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> str:
    CACHE.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "GO111MODULE": "on", **(env or {})}
    proc = subprocess.run(
        [go(), *args],
        cwd=CACHE,  # outside any go.mod or go.work
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise ToolError(f"go {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def module(path: str, version: str) -> dict[str, str]:
    """``go mod download -json path@version``: where the module's files are (``Dir``)."""
    info: dict[str, str] = json.loads(_run_go(["mod", "download", "-json", f"{path}@{version}"]))
    if info.get("Error"):
        raise ToolError(f"go mod download {path}@{version}: {info['Error']}")
    return info


def module_file(path: str, version: str, name: str) -> Path:
    found = Path(module(path, version)["Dir"]) / name
    if not found.is_file():
        raise ToolError(f"{path}@{version} has no {name}")
    return found


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One installer at a time, across processes (two test runs in one work tree)."""
    BIN.mkdir(parents=True, exist_ok=True)
    with (BIN / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _helm_version(binary: Path) -> str | None:
    if not os.access(binary, os.X_OK):
        return None
    proc = subprocess.run(
        [str(binary), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _helm_ldflags() -> str:
    """The ldflags of helm's Makefile: its version, and the Kubernetes version of its client-go
    (which helm template and helm lint take as the cluster's when none is given)."""
    gomod = Path(module(HELM_MODULE, HELM_VERSION)["GoMod"]).read_text()
    found = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.MULTILINE)
    if found is None:
        raise ToolError(f"{HELM_MODULE}@{HELM_VERSION}: no k8s.io/client-go in go.mod")
    flags = ["-s", "-w", f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}"]
    for pkg in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [
            f"-X {HELM_MODULE}/{pkg}.k8sVersionMajor=1",
            f"-X {HELM_MODULE}/{pkg}.k8sVersionMinor={found.group(1)}",
        ]
    return " ".join(flags)


def helm() -> Path:
    """The pinned helm binary, built into .cache/bin when it is missing or another version."""
    binary = BIN / "helm"
    if _helm_version(binary) == HELM_VERSION:
        return binary
    with _locked("helm"):
        if _helm_version(binary) == HELM_VERSION:  # another process built it meanwhile
            return binary
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="gobin-") as gobin:
            _run_go(
                [
                    "install",
                    "-trimpath",
                    f"-ldflags={_helm_ldflags()}",
                    f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}",
                ],
                env={"GOBIN": gobin, "CGO_ENABLED": "0"},
            )
            os.replace(Path(gobin) / "helm", binary)
        print(
            f"installed helm {HELM_VERSION} into {binary} in {time.monotonic() - started:.0f}s",
            file=sys.stderr,
        )
    if _helm_version(binary) != HELM_VERSION:
        raise ToolError(f"{binary} does not report {HELM_VERSION} after installing it")
    return binary


def keda_scaledobject_crd() -> Path:
    return module_file(KEDA_MODULE, KEDA_VERSION, KEDA_SCALEDOBJECT_CRD)


def servicemonitor_crd() -> Path:
    return module_file(PROM_OPERATOR_MODULE, PROM_OPERATOR_VERSION, SERVICEMONITOR_CRD)


def compose_spec() -> Path:
    return module_file(COMPOSE_GO_MODULE, COMPOSE_GO_VERSION, COMPOSE_SPEC)


def main() -> int:
    started = time.monotonic()
    print(f"helm {HELM_VERSION}: {helm()}")
    print(f"KEDA {KEDA_VERSION} ScaledObject CRD: {keda_scaledobject_crd()}")
    print(f"prometheus-operator {PROM_OPERATOR_VERSION} ServiceMonitor CRD: {servicemonitor_crd()}")
    print(f"compose-go {COMPOSE_GO_VERSION} compose-spec.json: {compose_spec()}")
    print(f"ready in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
