"""`esmd run`'s collector settings: rare young collections, the start-up heap frozen."""

from __future__ import annotations

import gc

from service.gctune import YOUNG_THRESHOLD, tune_for_throughput, tuned_for_throughput


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


def test_tuned_for_a_block_then_back_to_the_defaults() -> None:
    before = gc.get_threshold()
    with tuned_for_throughput():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
