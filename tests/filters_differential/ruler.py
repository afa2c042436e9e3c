"""AWS's event-ruler (the matcher behind EventBridge and ESM filtering) as one long-lived JVM.

The jars come from Maven Central (``pom.xml`` here) into the project's cache folder
(``<repo>/.cache``, or ``$ESMD_CACHE``); the harness is compiled with javac on first use and
again whenever its source changes. Requests and answers are JSON lines (see RulerHarness.java).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SOURCE = HERE / "RulerHarness.java"


def tools_present() -> bool:
    """True when java, javac and mvn are all on PATH (the differential test needs them)."""
    return all(shutil.which(tool) for tool in ("java", "javac", "mvn"))


def cache_dir() -> Path:
    return Path(os.environ.get("ESMD_CACHE") or REPO / ".cache")


def ruler_version() -> str:
    text = (HERE / "pom.xml").read_text()
    return text.split("<ruler.version>")[1].split("</ruler.version>")[0]


def build() -> tuple[Path, Path]:
    """Resolve event-ruler's jars and compile the harness; return (libs, classes)."""
    home = cache_dir() / f"event-ruler-{ruler_version()}"
    libs = home / "libs"
    if not (libs / ".complete").exists():
        shutil.rmtree(libs, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(HERE / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ],
            check=True,
            timeout=900,
        )
        (libs / ".complete").touch()
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    classes = home / f"classes-{digest}"
    if not (classes / "RulerHarness.class").exists():
        shutil.rmtree(classes, ignore_errors=True)
        classes.mkdir(parents=True)
        subprocess.run(
            ["javac", "-nowarn", "-cp", f"{libs}/*", "-d", str(classes), str(SOURCE)],
            check=True,
            timeout=300,
        )
    return libs, classes


class Unstable(list[list[bool | None]]):
    """event-ruler's answers from several machines compiled from one pattern, which differ:
    its NameState reuse across ``$or`` branches follows identity hash codes, so a branch
    one machine keeps another may lose. There is no reference answer to compare with."""


class Ruler:
    """One event-ruler JVM; close() it (or use it as a context manager) when done."""

    def __init__(self) -> None:
        libs, classes = build()
        self._proc = subprocess.Popen(
            ["java", "-Xmx1g", "-cp", f"{classes}{os.pathsep}{libs}/*", "RulerHarness"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def __enter__(self) -> Ruler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the event-ruler harness exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def decide(self, pattern: str, events: list[str]) -> list[bool | None] | str | Unstable:
        """Match results per event (None: event-ruler could not read the event), the
        rejection message when event-ruler refuses the pattern, or :class:`Unstable` when
        machines compiled from the same pattern answer differently."""
        answer = self._ask({"pattern": pattern, "events": events})
        if "error" in answer:
            return str(answer["error"])
        if "unstable" in answer:
            return Unstable(answer["unstable"])
        return list(answer["matches"])

    def bench(self, pattern: str, events: list[str], seconds: float = 2.0) -> dict[str, float]:
        """event-ruler's own events/s on parsed events ("decoded") and from JSON ("raw")."""
        answer = self._ask({"bench": {"pattern": pattern, "events": events, "seconds": seconds}})
        return {key: float(answer[key]) for key in ("decoded", "raw", "hits")}

    def complexity(self, pattern: str, cap: int = 100) -> int | str:
        """event-ruler's MachineComplexityEvaluator on the pattern's wildcard sub-rules (at
        most ``cap``), or the rejection message when it refuses the pattern."""
        answer = self._ask({"complexity": pattern, "cap": cap})
        if "error" in answer:
            return str(answer["error"])
        return int(answer["complexity"])

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        if self._proc.stdout:
            self._proc.stdout.close()
