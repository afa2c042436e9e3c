"""The garbage collector's settings for an ``esmd run`` process.

The hot path allocates many short-lived containers (a dict per record, a view per filtered
record, lists per chunk and batch). They never form reference cycles, so reference counting
frees them, yet each one counts towards CPython's young-generation threshold (700 by default):
a young collection ran every hundred records or so, and every few of those an older one
scanned every record still queued in the lanes. Measured on kafka_throughput.py, that was a
third of one process's time.

The settings here make a young collection rare (every 100,000 net container allocations) and
freeze what exists before the daemon starts (imported modules, the parsed config), so no
collection scans it again. Cycles are still collected, at the next young collection: every
~15,000 records under load (about six containers each), every few minutes when idle.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

#: allocations between young collections; older generations keep CPython's ratios (10, 10)
YOUNG_THRESHOLD: Final = 100_000


def tune_for_throughput() -> None:
    """Apply the process's collector settings; call once, after start-up imports."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


@contextlib.contextmanager
def tuned_for_throughput() -> Iterator[None]:
    """The settings of :func:`tune_for_throughput` for the block only, then CPython's again:
    for a benchmark that runs esmd in-process (as ``esmd run`` would run it) beside a plain
    client that keeps the interpreter's defaults."""
    default = gc.get_threshold()
    tune_for_throughput()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*default)
