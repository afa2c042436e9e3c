"""The shape of the ``service`` package's imports, each checked in fresh interpreters:

- the daemon's modules never import the dev tooling (``service.devtools``): the image and a
  production install run without it, and only ``esmd demo`` may load it, lazily;
- every module imports on its own, so an import cycle that happens to work in the order the
  test suite or the daemon imports things still fails here.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service"

#: modules allowed to import the dev tooling (lazily, inside the demo command)
DEV_ONLY = ("service.devtools", "service.demo")


def service_modules() -> list[str]:
    """Every module and package of ``service`` by its dotted name, from the files on disk (so
    that finding them imports nothing). ``service.__main__`` is left out: importing it runs
    the command line."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "__pycache__" in parts or parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root, as the venv's python."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


SAMPLE_CONFIG = """\
server:
  listen: 127.0.0.1:9464
aws:
  region: us-east-1
  endpoint_url: http://127.0.0.1:5000
  endpoints: {sqs: "http://127.0.0.1:9324"}
checkpoints:
  store: sqlite
  path: ./esmd-state.db
functions:
  orders-handler: {python: "service.examples.handlers:handle"}
  audit: {url: "http://127.0.0.1:8080/2015-03-31/functions/function/invocations"}
  thumbs: {lambda: "arn:aws:lambda:us-east-1:123456789012:function:thumbs"}
mappings:
  - Name: orders
    EventSourceArn: arn:aws:sqs:us-east-1:000000000000:orders
    FunctionName: orders-handler
    BatchSize: 10
    FunctionResponseTypes: [ReportBatchItemFailures]
    FilterCriteria:
      Filters:
        - Pattern: '{"body": {"status": ["COMPLETED"]}}'
    ScalingConfig: {MaximumConcurrency: 50}
  - Name: clicks
    SelfManagedEventSource:
      Endpoints: {KAFKA_BOOTSTRAP_SERVERS: ["127.0.0.1:9092"]}
    Topics: [clicks]
    SelfManagedKafkaEventSourceConfig: {ConsumerGroupId: esmd-clicks}
    StartingPosition: TRIM_HORIZON
    FunctionName: audit
    ProvisionedPollerConfig: {MinimumPollers: 1, MaximumPollers: 8}
    DestinationConfig:
      OnFailure: {Destination: "arn:aws:sqs:us-east-1:000000000000:clicks-failures"}
  - Name: thumbs
    EventSourceArn: arn:aws:kinesis:us-east-1:000000000000:stream/images
    StartingPosition: LATEST
    FunctionName: thumbs
"""

#: in one interpreter: import every module of the daemon, then run `esmd validate` and
#: `esmd schema` through the console script's entry point, then list what got imported
DAEMON_PATH = textwrap.dedent(
    """
    import contextlib, importlib, io, sys

    config, *modules = sys.argv[1:]
    import service.daemon, service.cli
    for name in modules:
        importlib.import_module(name)
    from service.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["validate", "-c", config]) == 0, "validate refused the sample config"
        assert main(["schema"]) == 0
    assert "OK (3 mapping(s)" in out.getvalue(), out.getvalue()
    print("\\n".join(sorted(sys.modules)))
    """
)


def test_the_daemon_never_imports_the_dev_tooling(tmp_path: Path) -> None:
    config = tmp_path / "esmd.yaml"
    config.write_text(SAMPLE_CONFIG)
    runtime = [m for m in service_modules() if not m.startswith(DEV_ONLY)]
    assert "service.daemon" in runtime and "service.workers" in runtime
    proc = _python(DAEMON_PATH, str(config), *runtime)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "service.daemon" in loaded and "service.config" in loaded
    leaked = [m for m in loaded if m.startswith("service.devtools")]
    assert not leaked, f"the daemon's modules imported the dev tooling: {leaked}"


def test_the_demo_imports_the_dev_tooling_only_when_it_starts_a_broker() -> None:
    proc = _python("import sys, service.demo; print('service.devtools' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_the_dev_tooling_needs_only_the_standard_library() -> None:
    """scripts/services.py runs with the system python before the venv exists."""
    code = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        import service.devtools.servers
        names = {m.partition(".")[0] for m in set(sys.modules) - before}
        print("\\n".join(sorted(n for n in names if n not in sys.stdlib_module_names)))
        """
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["service"], proc.stdout


#: imports every module named on the command line, each in a child forked from one parent
#: that has loaded only third-party packages, so a child pays for ``service`` alone
IMPORT_EACH_ALONE = textwrap.dedent(
    """
    import importlib, os, sys, traceback

    for heavy in ("aiobotocore.session", "aiokafka", "aiohttp", "pydantic", "structlog",
                  "prometheus_client", "orjson", "yaml", "pymongo", "aiormq", "uvloop"):
        try:
            importlib.import_module(heavy)
        except ImportError:
            pass
    assert not [m for m in sys.modules if m == "service" or m.startswith("service.")]
    failed = 0
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(name)
            except BaseException:
                print(f"import {name}:\\n{traceback.format_exc()}", flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    sys.exit(1 if failed else 0)
    """
)


def test_each_module_imports_alone() -> None:
    """Each module imported first in a fresh interpreter (a fork of one that loaded only
    third-party packages): an import cycle broken only by who imports first fails here."""
    modules = service_modules()
    assert len(modules) > 20 and "service.devtools.servers" in modules
    proc = _python(IMPORT_EACH_ALONE, *modules, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
