"""The AWS Lambda Runtime Interface Emulator (built with go install) running a handler under
the real Python runtime client (awslambdaric): esmd's stand-in for a Lambda function."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from service.devtools.servers import CACHE

RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"
ROOT = Path(__file__).resolve().parents[2]


def rie_binary() -> Path:
    exe = CACHE / "bin" / f"aws-lambda-rie-{RIE_VERSION}"
    if not exe.exists():
        build = CACHE / "bin" / f"rie-{RIE_VERSION}"
        subprocess.run(
            ["go", "install", f"{RIE_MODULE}@{RIE_VERSION}"],
            check=True,
            env={**os.environ, "GOBIN": str(build)},
            timeout=600,
        )
        (build / "aws-lambda-rie").rename(exe)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_rie(handler: str, out: Path, function_name: str = "fn") -> Iterator[str]:
    """Run ``handler`` (module.function) under the emulator; yields its endpoint URL (the
    Invoke API's, for the lambda target's endpoint_url). $ESMD_TEST_OUT names ``out``."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(rie_binary()),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{port}",
            sys.executable,
            "-m",
            "awslambdaric",
            handler,
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "ESMD_TEST_OUT": str(out),
            "AWS_LAMBDA_FUNCTION_NAME": function_name,
            "PYTHONPATH": str(ROOT),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the Runtime Interface Emulator did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
