"""Rendering the Helm chart with the pinned helm, and reading what it rendered."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import REPO

CHART = REPO / "deploy" / "helm" / "esmd"
EXAMPLES = REPO / "deploy" / "helm" / "examples"
RELEASE = "esmd"
NAMESPACE = "esmd"

#: The values the chart is rendered with: its defaults, and every example values file.
VALUE_SETS: dict[str, list[Path]] = {
    "default": [],
    **{p.stem: [p] for p in sorted(EXAMPLES.glob("*.yaml"))},
}


class HelmError(RuntimeError):
    """helm refused the chart or the values; the message is helm's."""


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template(
    helm: Path,
    values: list[Path] | tuple[Path, ...] = (),
    sets: list[str] | tuple[str, ...] = (),
    set_files: list[str] | tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The documents of ``helm template`` (HelmError with helm's message when it refuses)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    for item in set_files:
        args += ["--set-file", item]
    proc = run_helm(helm, *args)
    if proc.returncode != 0:
        raise HelmError(proc.stderr.strip())
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['kind'] for d in docs]}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found: dict[str, Any] = containers[0]
    return found


def rendered_config(docs: list[dict[str, Any]]) -> str:
    """The esmd.yaml the pods mount, from the rendered ConfigMap."""
    text: str = only(docs, "ConfigMap")["data"]["esmd.yaml"]
    return text


def pod_environment(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The variables the Deployment gives esmd: literal values as they are, and a stand-in
    for each one taken from a Secret (its value is not in the chart, by design)."""
    env: dict[str, str] = {}
    for var in container(docs).get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        else:
            assert "secretKeyRef" in var["valueFrom"], var
            env[var["name"]] = f"secret-{var['name'].lower()}"
    return env
