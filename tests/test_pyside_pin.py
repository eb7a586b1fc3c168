"""The pinned PySide6 keeps its references to None, True and False.

PySide6 6.12.0 on Python 3.11 returns the None of every void method (`setObjectName`, `setPen`, ...) and the
True of `SignalInstance.emit()` without taking a reference; pyqtgraph makes thousands of such calls a second,
and after some ten thousand the interpreter aborts ("Fatal Python error: none_dealloc"). 6.11.2, the pin,
does not; this test fails if a PySide6 with the bug is installed, on a Python where it matters.
"""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, Signal


class _Probe(QObject):
    ping = Signal()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None, True and False are immortal on Python 3.12+")
def test_void_calls_and_emit_keep_singleton_references():
    probe = _Probe()
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(1000):
        probe.setObjectName("probe")
        probe.ping.emit()
    after = sys.getrefcount(None), sys.getrefcount(True)
    assert after[0] >= before[0] - 10 and after[1] >= before[1] - 10, (before, after)
