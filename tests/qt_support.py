"""What the GUI test files share: the check that no test leaves a QThread running, a window with its own
settings, and a tiny run config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shiboken6
from PySide6.QtCore import QSettings, QThread

from engine.config import RunConfig


def main_window(qtbot: Any, tmp_path: Path, timeout_ms: int) -> Iterator[Any]:
    """A shown main window with its own settings file, once its warm-up task is done; closed afterwards (the
    body of a `window` fixture)."""
    from gui.main_window import MainWindow
    from gui.settings import Settings

    w = MainWindow(Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.kind == "warmup" and not w.controller.busy, timeout=timeout_ms)
    yield w
    w.close()


@pytest.fixture(autouse=True)
def no_dangling_qthreads(monkeypatch: pytest.MonkeyPatch):
    """Fail a test that leaves a QThread running (as napari's conftest does); active where it is imported."""
    started: list[QThread] = []
    original = QThread.start

    def start(self: QThread, *args: Any) -> None:
        started.append(self)
        original(self, *args)

    monkeypatch.setattr(QThread, "start", start)
    yield
    assert not [t for t in started if shiboken6.isValid(t) and t.isRunning()], "a QThread is still running"


def tiny_config(**training: Any) -> RunConfig:
    """n = m = 1, 300 points, a small decoder: a run of a second or two (60 steps unless told)."""
    cfg = RunConfig()
    cfg.simulation.samples = 300
    cfg.decoder.hidden = (8,)
    cfg.estimator.name = "mle-quadrature"
    cfg.estimator.nodes = 16
    cfg.training.steps = 60
    cfg.training.batch_size = 64
    cfg.training.eval_every = 20
    cfg.training.snapshot_every = 5
    cfg.training.device = "cpu"
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg
