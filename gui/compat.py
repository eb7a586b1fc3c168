"""Process-level adjustments for the GUI: a work-around for reference-counting bugs of PySide6 6.12.0
on Python < 3.12, and a garbage-collector setting that keeps full collections out of training runs.

PySide6 6.12.0 returns the `None` of every void method (`setPen`, `setData`, `setObjectName`, ...) and
the `True` of `SignalInstance.emit()` without taking a reference. On Python 3.12+ these singletons are
immortal and nothing happens; on 3.11 every such call drops one reference, and after some ten thousand
calls (pyqtgraph makes thousands a second while it paints) the interpreter aborts with "Fatal Python
error: none_dealloc" (or "bool_dealloc"). PySide6 6.11.2 is not affected.

`guard()` detects the bugs with two probe calls and, only if one is present, raises the reference
counts of None, True and False (statically allocated singletons that are never freed) by 2**40, which
no session can use up.
"""

from __future__ import annotations

import ctypes
import gc
import sys

from PySide6.QtCore import QObject, Signal

HEADROOM = 1 << 40


class _Probe(QObject):
    ping = Signal()


def drops_singleton_references() -> bool:
    """True if a void call or an emit() loses a reference to None or True."""
    probe = _Probe()
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(8):
        probe.setObjectName("probe")
        probe.ping.emit()
    after = sys.getrefcount(None), sys.getrefcount(True)
    return after[0] < before[0] or after[1] < before[1]


def guard() -> bool:
    """Apply the work-around where needed; True if it was applied."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    if not drops_singleton_references():
        return False
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += HEADROOM  # ob_refcnt: PyObject's first field
    return True


GC_THRESHOLDS = (5_000, 100, 50)


def settle_garbage_collector() -> None:
    """Move everything alive now (torch, Qt, pyqtgraph: ~250 000 objects) out of the collector's reach and
    collect less often. A run allocates a dict per step (its history), so with the default thresholds a
    full collection (150-200 ms with the GIL held, stalling the GUI and training alike) came every
    half-second; call once, when start-up is over."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
