"""`esmd demo` runs end to end on the real broker and reports what it did."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_and_summarises(kafka_bootstrap: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "demo",
            "--bootstrap",
            kafka_bootstrap,
            "--seconds",
            "6",
            "--listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\w+)=(\d+)", last))
    assert int(counts["polled"]) > 0
    assert int(counts["invoked"]) > 0
    assert int(counts["filtered_out"]) > 0
    # what the handler saw is what esmd says it invoked (in this process, from its start)
    assert int(counts["handler_seen"]) == int(counts["invoked"])
    assert int(counts["polled"]) >= int(counts["invoked"]) + int(counts["filtered_out"])
