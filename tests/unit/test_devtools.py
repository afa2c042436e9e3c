from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.devtools import servers


def test_a_stale_pid_file_does_not_name_an_unrelated_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "STATE", tmp_path)
    server = servers.SERVERS["moto"]
    state = tmp_path / server.name
    state.mkdir()
    (state / "pid").write_text(str(os.getpid()))  # alive, but not started in the state folder
    assert servers._pid(server) is None
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], cwd=state) as p:
        try:
            (state / "pid").write_text(str(p.pid))
            assert servers._pid(server) == p.pid
        finally:
            p.kill()
