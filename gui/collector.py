"""The garbage-collector setting of the GUI process: full collections kept out of training runs."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 100, 50)


def settle_garbage_collector() -> None:
    """Move everything alive now (torch, Qt, pyqtgraph) out of the collector's reach and collect less often: a
    run allocates objects at every step, and with the default thresholds frequent full collections, which hold
    the GIL, stall the GUI and training alike (bench/RESULTS.md, "GUI and engine design measurements").
    Call once, when start-up is over."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
