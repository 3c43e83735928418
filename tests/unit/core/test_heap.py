"""The collector settings a service process takes once startup is done."""

from __future__ import annotations

import gc

from reference_impl.core.heap import WORKER_YOUNG_THRESHOLD, settle_heap


def test_startup_objects_are_frozen_and_the_thresholds_kept_by_default() -> None:
    before = gc.get_threshold()
    startup_object: dict[str, object] = {"made": "before settling"}
    gc.unfreeze()
    settle_heap()
    assert gc.get_freeze_count() > 0
    # Frozen objects are in no generation a collection walks.
    assert not any(o is startup_object for o in gc.get_objects())
    assert gc.get_threshold() == before


def test_a_worker_collects_the_young_generation_less_often() -> None:
    before = gc.get_threshold()
    try:
        settle_heap(WORKER_YOUNG_THRESHOLD)
        assert gc.get_threshold() == (WORKER_YOUNG_THRESHOLD, before[1], before[2])
        # Cycles are still collected: only the young generation's threshold moved.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.set_threshold(*before)
