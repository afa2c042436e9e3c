"""The image's environment, built without Docker: the Dockerfile's own build-stage commands
(COPY, then ``python -m venv /opt/esmd && /opt/esmd/bin/pip install .``) run in a folder that
stands for the image's root, on a CPython of the base image's version; then esmd runs from that
venv as the image's non-root user (USER, through setpriv) to validate the compose example's
config and every config the Helm chart renders, and to serve the HEALTHCHECK.

Two differences from ``docker build``, both on purpose: pip may use the local wheel cache (the
image sets PIP_NO_CACHE_DIR to keep it out of the layer), and the runtime stage's useradd is
not run here (the uid and gid of USER need no passwd entry to run a process).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import VALUE_SETS, pod_environment, rendered_config
from tests.deploy.dockerfile import Stage, copy_parts, parse
from tests.deploy.tools import REPO

#: The first test to need helm builds it (about 3 minutes on a fresh 2-core machine).
pytestmark = pytest.mark.timeout(900)


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings ("moto[server]>=5.0" -> "moto")."""
    return {_normal(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: The package's own dependencies, all of which the image needs.
RUNTIME = _names(_PROJECT["dependencies"])
#: The dev extra, none of which belongs in the image.
DEV_ONLY = _names(_PROJECT["optional-dependencies"]["dev"]) - RUNTIME


@dataclass
class Image:
    """A folder standing for the image's root, and how to run commands as its user."""

    root: Path
    user: tuple[int, int] | None  # USER's uid and gid; None when this machine cannot switch
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    healthcheck: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def argv(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        uid, gid = self.user
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]

    def run(
        self, argv: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv),
            env={**self.env, **(env or {})},
            cwd=self.path(self.workdir),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def esmd(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.path("/opt/esmd/bin/esmd")), *args], env)


def _clean_environ() -> dict[str, str]:
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_NO_CACHE_DIR"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _interpreter(minor: str, user: tuple[int, int] | None) -> tuple[str, tuple[int, int] | None]:
    """A CPython ``minor`` with venv and ensurepip that the image's user can run too; the
    user is dropped (None) when only an interpreter it cannot run is here."""
    candidates = [f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"]
    candidates += [p for p in [shutil.which(f"python{minor}")] if p]
    usable = []
    for path in candidates:
        probe = [path, "-c", "import ensurepip, venv"]
        if os.access(path, os.X_OK) and _quiet(probe).returncode == 0:
            usable.append(path)
    assert usable, f"no CPython {minor} with venv here (the base image's version)"
    if user is not None:
        for path in usable:
            image = Image(Path("/"), user)
            if _quiet(image.argv([path, "-c", "pass"])).returncode == 0:
                return path, user
    return usable[0], None


def _quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _build_stage(image: Image, stage: Stage, python: str, venv: str) -> None:
    """Run the build stage's instructions in order: ENV, WORKDIR, COPY and RUN."""
    bin_dir = image.path("/usr/local/bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "python").symlink_to(python)  # the base image's `python`
    env = {**_clean_environ(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    cwd = image.path("/")
    for inst in stage.instructions:
        if inst.keyword == "ENV":
            env.update({k: v for k, v in stage.env().items() if k != "PIP_NO_CACHE_DIR"})
        elif inst.keyword == "WORKDIR":
            cwd = image.path(inst.args) if inst.args.startswith("/") else cwd / inst.args
            cwd.mkdir(parents=True, exist_ok=True)
        elif inst.keyword == "COPY":
            flags, sources, dest = copy_parts(inst)
            assert not flags, inst
            _copy(sources, image.path(dest) if dest.startswith("/") else cwd / dest)
        elif inst.keyword == "RUN":
            command = inst.args.replace(venv, str(image.path(venv)))
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert proc.returncode == 0, f"line {inst.line}: {command}\n{proc.stdout}{proc.stderr}"
        else:
            raise AssertionError(f"line {inst.line}: {inst.keyword} in the build stage is new here")


def _copy(sources: list[str], dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source in sources:
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True)
        else:
            target = dest / src.name if str(dest).endswith("/") or dest.is_dir() else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _runtime_stage(image: Image, stage: Stage, venv: str) -> None:
    """The runtime stage: its files, ENV, WORKDIR, USER and HEALTHCHECK (useradd not run)."""
    user = stage.all("USER")[-1].args
    uid, gid = (int(n) for n in user.split(":"))
    [setup] = stage.all("RUN")
    assert f"--uid {uid}" in setup.args and f"--gid {gid}" in setup.args
    image.workdir = stage.all("WORKDIR")[-1].args
    assert f"install -d -o esmd -g esmd -m 0750 {image.workdir}" in setup.args
    home = image.path(image.workdir)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o750)
    if image.user is not None:
        os.chown(home, uid, gid)
        assert image.user == (uid, gid)
    for inst in stage.all("COPY"):
        flags, sources, dest = copy_parts(inst)
        if flags.get("from") == "build":
            assert sources == [venv] and dest == venv, "the venv keeps its path"
        else:
            _copy(sources, image.path(dest))
    path = f"{image.path('/usr/local/bin')}:{os.environ['PATH']}"
    env = {k: v.replace(venv, str(image.path(venv))) for k, v in stage.env().items()}
    env["PATH"] = env["PATH"].replace("${PATH}", path)
    image.env = {**_clean_environ(), **env, "HOME": str(home)}
    check = stage.one("HEALTHCHECK").args
    image.healthcheck = json.loads(check.partition(" CMD ")[2])


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    """Builds the image's environment once for this module (about 25 s with a warm pip cache)."""
    build, runtime = parse((REPO / "Dockerfile").read_text())
    venv = "/opt/esmd"
    minor = re.search(r"python:(3\.\d+)", build.base)
    assert minor, build.base
    uid, gid = (int(n) for n in runtime.all("USER")[-1].args.split(":"))
    can_switch = os.geteuid() == 0 and shutil.which("setpriv") is not None
    python, user = _interpreter(minor.group(1), (uid, gid) if can_switch else None)
    root = Path(tempfile.mkdtemp(prefix="esmd-image-"))
    root.chmod(0o755)  # mkdtemp's 0700 would keep the image's user out
    image = Image(root, user)
    if user is None:
        image.notes.append(
            f"esmd runs as uid {os.geteuid()}: cannot switch to {uid}:{gid} here "
            "(needs root and setpriv, and a CPython that uid can run)"
        )
    try:
        _build_stage(image, build, python, venv)
        _runtime_stage(image, runtime, venv)
        yield image
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_runs_as_the_images_non_root_user(image: Image) -> None:
    """As USER's uid and gid when this process may switch (root with setpriv); a test run
    that is not root already runs esmd as a non-root user, its own."""
    uid = image.run(["id", "-u"]).stdout.strip()
    assert uid != "0", image.notes
    if image.user is not None:
        assert uid == str(image.user[0])


def test_only_runtime_dependencies_are_installed(image: Image) -> None:
    pip = str(image.path("/opt/esmd/bin/pip"))
    listed = image.run([pip, "list", "--format", "json", "--disable-pip-version-check"])
    assert listed.returncode == 0, listed.stderr
    names = {_normal(p["name"]) for p in json.loads(listed.stdout)}
    assert "esmd" in names
    assert not RUNTIME - names, RUNTIME - names
    assert not names & DEV_ONLY, names & DEV_ONLY
    check = image.run([pip, "check", "--disable-pip-version-check"])
    assert check.returncode == 0, check.stdout + check.stderr


def test_validates_the_images_default_config(image: Image) -> None:
    proc = image.esmd("validate", "-c", str(image.path("/etc/esmd/esmd.yaml")))
    assert proc.returncode == 0, proc.stderr
    schema = image.esmd("schema")
    assert schema.returncode == 0 and json.loads(schema.stdout)["title"] == "esmd configuration"


def _place(image: Image, name: str, text: str) -> Path:
    """Put a config where the image's user can read it (as a mount would)."""
    path = image.path(f"/mnt/{name}/esmd.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_validates_the_compose_example_config(image: Image) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    environment = {k: str(v) for k, v in compose["services"]["esmd"]["environment"].items()}
    path = _place(image, "compose", (REPO / "deploy" / "compose" / "esmd.yaml").read_text())
    proc = image.esmd("validate", "-c", str(path), env=environment)
    assert proc.returncode == 0, proc.stderr
    assert "OK (1 mapping(s): completed-orders)" in proc.stdout


@pytest.mark.parametrize("values", VALUE_SETS)
def test_validates_the_helm_rendered_config(
    image: Image, rendered: dict[str, list[dict[str, Any]]], values: str
) -> None:
    docs = rendered[values]
    path = _place(image, f"helm-{values}", rendered_config(docs))
    proc = image.esmd("validate", "-c", str(path), env=pod_environment(docs))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: OK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return bool(reply.status == 200)
    except urllib.error.URLError:
        return False


def test_daemon_answers_the_healthcheck_and_stops_on_sigterm(image: Image) -> None:
    port = _free_port()
    config = yaml.safe_load(image.path("/etc/esmd/esmd.yaml").read_text())
    config["server"]["listen"] = f"0.0.0.0:{port}"
    # no mapping to drain: SIGTERM must end it at once, well inside the default grace period
    config["server"].pop("shutdown_grace_seconds", None)
    path = _place(image, "run", yaml.safe_dump(config))
    health = {"ESMD_HEALTH_URL": f"http://127.0.0.1:{port}/healthz"}
    assert image.run(image.healthcheck, health, timeout=30).returncode != 0, "nothing listens yet"
    argv = image.argv([str(image.path("/opt/esmd/bin/esmd")), "run", "-c", str(path)])
    log = path.with_suffix(".log")
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            argv,
            env=image.env,
            cwd=image.path(image.workdir),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + 30
            while image.run(image.healthcheck, health, timeout=30).returncode != 0:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the HEALTHCHECK never passed"
                time.sleep(0.2)
            status = Path(f"/proc/{proc.pid}/status").read_text()
            assert re.search(
                rf"^Uid:\s+{image.user[0] if image.user else os.geteuid()}\s", status, re.M
            )
            # ready once every worker process has started its mappings (here: none)
            while not _answers(f"http://127.0.0.1:{port}/readyz"):
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- the compose stack, without Docker ----------------------------------------------------

PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

async def main(bootstrap, topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for line in sys.stdin:
            await producer.send_and_wait(topic, line.strip().encode())
    finally:
        await producer.stop()

asyncio.run(main(*sys.argv[1:]))
"""


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def _metric(text: str, name: str, mapping: str) -> float:
    found = re.search(rf'^{name}\{{[^}}]*mapping="{mapping}"[^}}]*\}} (\S+)$', text, re.M)
    assert found, f"{name} for {mapping} not in /metrics"
    return float(found[1])


@pytest.mark.integration
def test_compose_example_end_to_end(image: Image, kafka_bootstrap: str, unique: str) -> None:
    """The compose stack's own parts, with the compose-only host names swapped for local
    addresses: produce-orders.sh writes orders, esmd (from the image's venv, as its user)
    runs the example config, and target.py receives exactly the COMPLETED ones."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    topic, group = f"esmd-compose-orders-{unique}", f"esmd-compose-{unique}"
    producer = image.path(f"/mnt/producer-{unique}.py")
    producer.write_text(PRODUCER)
    produce_env = {
        **_clean_environ(),
        "ORDER_COUNT": "30",
        "ORDER_INTERVAL": "0",
        "PRODUCER": f"{sys.executable} {producer} {kafka_bootstrap} {topic}",
    }
    script = REPO / "deploy" / "compose" / "produce-orders.sh"
    subprocess.run(["sh", str(script)], env=produce_env, check=True, timeout=120)

    target_env = {**_clean_environ(), "TARGET_HOST": "127.0.0.1", "TARGET_PORT": "0"}
    target_script = REPO / "deploy" / "compose" / "target.py"
    with subprocess.Popen(
        [sys.executable, str(target_script)], env=target_env, stdout=subprocess.PIPE, text=True
    ) as target:
        try:
            assert target.stdout is not None
            listening = json.loads(target.stdout.readline())["listening"]
            _run_compose_esmd(image, compose, kafka_bootstrap, topic, group, listening)
        finally:
            target.terminate()
            target.wait(timeout=10)


def _run_compose_esmd(
    image: Image,
    compose: dict[str, Any],
    bootstrap: str,
    topic: str,
    group: str,
    target: str,
) -> None:
    config = yaml.safe_load((REPO / "deploy" / "compose" / "esmd.yaml").read_text())
    port = _free_port()
    config["server"]["listen"] = f"0.0.0.0:{port}"
    config["checkpoints"]["path"] = str(image.path(config["checkpoints"]["path"]))
    [mapping] = config["mappings"]
    function = config["functions"][mapping["FunctionName"]]
    function["url"] = function["url"].replace("target:8080", target)
    mapping["Topics"] = [topic]
    mapping["SelfManagedKafkaEventSourceConfig"]["ConsumerGroupId"] = group
    path = _place(image, f"compose-e2e-{group}", yaml.safe_dump(config))
    env = {k: str(v) for k, v in compose["esmd"]["environment"].items()}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    argv = image.argv([str(image.path("/opt/esmd/bin/esmd")), "run", "-c", str(path)])
    log = path.with_suffix(".log")
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            argv,
            env={**image.env, **env},
            cwd=image.path(image.workdir),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as esmd,
    ):
        try:
            deadline = time.monotonic() + 90
            while _get_json(f"http://{target}/")["records"] < 10:
                assert esmd.poll() is None, log.read_text()
                assert time.monotonic() < deadline, (
                    f"the target did not get 10 orders\n{log.read_text()}"
                )
                time.sleep(0.2)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                metrics = reply.read().decode()
            name = mapping["Name"]
            assert _metric(metrics, "esm_invoked_events_total", name) == 10
            assert _metric(metrics, "esm_filtered_out_events_total", name) == 20
            esmd.send_signal(signal.SIGTERM)
            assert esmd.wait(timeout=60) == 0
            assert _get_json(f"http://{target}/")["records"] == 10, "no order twice"
        finally:
            if esmd.poll() is None:
                esmd.kill()
                esmd.wait()
