"""`esmd run`'s collector settings: rare young collections, the start-up heap frozen."""

from __future__ import annotations

import gc

from service.gctune import YOUNG_THRESHOLD, tune_for_throughput


def test_tune_raises_the_young_threshold_and_freezes_the_heap() -> None:
    before = gc.get_threshold()
    try:
        tune_for_throughput()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()  # tuned, never switched off: cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
