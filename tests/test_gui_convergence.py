"""The Training panel and the views of a run until converged (issue 23): the default has no step cap, the
caps are optional, the curves mark the learning-rate cuts and convergence, the table and the status bar say
how the run ended. Offscreen, tiny data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qt_support import (
    main_window,
    no_dangling_qthreads,  # noqa: F401  (an autouse fixture: active in this module)
    tiny_config,
)

from engine.config import RunConfig
from engine.progress import TrainingProgress
from gui.main_window import MainWindow
from gui.plots.results import COLUMNS
from gui.state import RunState

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def window(qtbot: Any, tmp_path: Path):
    yield from main_window(qtbot, tmp_path, RUN_TIMEOUT_MS)


def test_the_default_is_until_converged_and_the_caps_are_optional(window: MainWindow) -> None:
    w = window
    fields = w.training_panel.training_form.fields
    assert w.session.config.training.steps is None and w.session.config.training.time_limit is None
    steps = fields["steps"]
    assert steps.line.text() == "" and steps.line.placeholderText() == "until converged"
    assert fields["schedule"].combo.currentData() == "plateau"
    assert w.training_panel.decoder_form.fields["init"].combo.currentData() == "ppca"
    steps.line.setText("500")
    steps.line.textEdited.emit("500")
    assert w.session.config.training.steps == 500
    steps.line.setText("")
    steps.line.textEdited.emit("")
    assert w.session.config.training.steps is None
    w.training_panel.training_form.fields["schedule"].combo.setCurrentIndex(
        fields["schedule"].combo.findData("cosine"))  # cosine needs a cap: refused beside the field, Start off
    assert "training.steps or training.time_limit" in fields["schedule"].error and not w.start_action.isEnabled()


def _until_converged() -> RunConfig:
    cfg = tiny_config(steps=None, eval_every=20, patience=3, tol=0.01)
    cfg.training.threads = 1
    return cfg


def test_a_run_until_converged_marks_its_cuts_and_says_it_converged(qtbot: Any, window: MainWindow) -> None:
    w = window
    w.apply_config(_until_converged())
    seen: list[TrainingProgress] = []
    w.controller.progress.connect(lambda p: isinstance(p, TrainingProgress) and seen.append(p))
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.start_action.trigger()
    assert w.session.state == RunState.DONE
    record = w.results.records[0]
    conv = record.metrics["convergence"]
    assert record.status == "converged" and conv["converged_at"] == record.metrics["steps"]
    assert len(conv["lr_cuts"]) == 5
    assert all(p.steps is None for p in seen) and seen[-1].converged_at == conv["converged_at"]
    qtbot.waitUntil(lambda: w.status.step_label.text() == f"step {record.metrics['steps']}")  # no "/ cap"
    qtbot.waitUntil(lambda: w.status.progress.value() == w.status.progress.maximum())  # converged: done whole
    overlay = w.curves.overlays[record.run_id]
    assert sorted(m.value() for m in overlay.marks) == sorted([*conv["lr_cuts"], conv["converged_at"]])
    status_col = [c[0] for c in COLUMNS].index("status")
    assert w.results.data(w.results.index(0, status_col)) == "converged"


def test_the_live_curves_grow_their_axis_and_draw_each_cut_once(qtbot: Any, window: MainWindow) -> None:
    w = window
    w.curves.start_live("#0072B2", "log p(x)", None, "#1")
    assert w.curves.objective_plot.viewRange()[0][1] == pytest.approx(2000, rel=0.02)  # OPEN_RANGE to begin
    w.curves.set_marks((100,), None)
    w.curves.set_marks((100,), None)
    w.curves.set_marks((100, 300), 500)
    steps = sorted(mark.value() for _, mark in w.curves._live_marks)
    assert steps == [100, 100, 300, 300, 500, 500]  # each on the objective and the held-out plot
    w.curves.expect_steps(1.6 * 5000)
    assert w.curves.objective_plot.viewRange()[0][1] >= 8000
    w.curves.end_live()
    assert w.curves._live_marks == []
