"""The garbage-collector setting of the GUI process: full collections kept out of training runs."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (5_000, 100, 50)


def settle_garbage_collector() -> None:
    """Move everything alive now (torch, Qt, pyqtgraph: ~250 000 objects) out of the collector's reach and
    collect less often: a run allocates a dict per step, and with the default thresholds a full collection
    (150-200 ms with the GIL held, stalling the GUI and training alike) came every half-second. Call once,
    when start-up is over."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
