"""streams.gc_tuning: what a worker process does to the collector before it joins its group."""

from __future__ import annotations

import gc

from streams.gc_tuning import tune_gc


def test_the_start_heap_is_frozen_and_the_collector_turned_on_with_rare_young_collections() -> None:
    enabled, threshold = gc.isenabled(), gc.get_threshold()
    try:
        gc.disable()  # as fusionrec.__main__ starts a worker
        gc.unfreeze()
        tune_gc(12_345)
        assert gc.isenabled()
        assert gc.get_threshold() == (12_345, 20, 20)
        assert gc.get_freeze_count() > 1_000  # this interpreter's modules and objects, out of the collector's reach
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if not enabled:
            gc.disable()
