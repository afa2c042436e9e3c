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


def test_the_auth_broker_has_a_jaas_line_per_sasl_listener_and_mechanism() -> None:
    """Kafka reads no listener-wide JAAS default: a pair without its own line fails."""
    lines = servers._auth_jaas().splitlines()
    for listener in ("sasl_plaintext", "sasl_ssl"):
        for mechanism in servers.SASL_MECHANISMS:
            key = f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config="
            assert sum(line.startswith(key) for line in lines) == 1, key
    ports = {servers.auth_address(name) for name in servers.AUTH_LISTENERS}
    assert len(ports) == len(servers.AUTH_LISTENERS)
