"""Helpers for the operator tools' tests: the esmd CLI as a separate process, config files."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, config: dict[str, Any]) -> str:
    """A config file (JSON is YAML) for the CLI."""
    path = tmp_path / "esmd.yaml"
    path.write_text(json.dumps(config))
    return str(path)


async def esmd(
    *args: str, stdin: str | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m service ARGS`` from the repository root: (exit code, stdout, stderr);
    ``env`` adds to the environment."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def verdicts(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]
