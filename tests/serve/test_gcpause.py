"""The collector's pause tracking and the start-up heap freeze used by the serving replicas."""

from __future__ import annotations

import gc

from app.serve.gcpause import GcPauses, freeze_startup_heap


def test_pauses_are_counted_per_generation_and_tracking_stops_on_close():
    pauses = GcPauses()
    try:
        gc.collect(0)
        gc.collect()
        summary = pauses.summary()
        assert summary["collections"][0] >= 1 and summary["collections"][2] >= 1
        assert summary["pause_max_ms"][2] > 0 and summary["pause_total_ms"][2] >= summary["pause_max_ms"][2]
    finally:
        pauses.close()
    before = list(pauses.count)
    gc.collect()
    assert pauses.count == before and pauses._callback not in gc.callbacks


def test_the_startup_heap_is_frozen_and_later_objects_are_not():
    try:
        frozen = freeze_startup_heap()
        # Frozen objects still die by reference counting (another thread may free some at any
        # moment), so the count can only fall until the next freeze: never rise on its own.
        assert frozen > 1000 and gc.get_freeze_count() <= frozen
        garbage = [[] for _ in range(10)]
        for a, b in zip(garbage, garbage[1:]):  # a cycle made after the freeze
            a.append(b)
            b.append(a)
        assert gc.get_freeze_count() <= frozen  # the cycle made after the freeze is not frozen
        del garbage, a, b
        assert gc.collect() > 0  # still collected: only the start-up heap is exempt
    finally:
        gc.unfreeze()
