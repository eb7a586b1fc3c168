"""GUI tests of real data in the window: the decoder's preprocessing field, no silent m for imported data,
"Choose m from the data", a CSV's column names in the plots and table, and the true model's held-out
log-likelihood from the moment data are generated. Offscreen, tiny data, few steps."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt
from qt_support import (
    main_window,
    no_dangling_qthreads,  # noqa: F401  (an autouse fixture: active in this module)
)

from engine.config import RunConfig
from engine.evaluate import heldout_loglik
from engine.selection import choose_m
from engine.trainer import split_indices
from gui import tasks
from gui.main_window import MainWindow
from gui.panels.model_panel import PRESET_DIR
from gui.state import RunState

TIMEOUT_MS = 90_000


def tiny_config(steps: int = 8) -> RunConfig:
    cfg = RunConfig()
    cfg.simulation.samples = 300
    cfg.decoder.hidden = (4,)
    cfg.estimator.name = "mle-quadrature"
    cfg.estimator.nodes = 16
    cfg.training.steps = steps
    cfg.training.batch_size = 32
    cfg.training.eval_every = 1000
    cfg.training.snapshot_every = 5
    cfg.training.device = "cpu"
    return cfg


@pytest.fixture
def window(qtbot: Any, tmp_path: Path):
    yield from main_window(qtbot, tmp_path, TIMEOUT_MS)


def wait_idle(qtbot: Any, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=TIMEOUT_MS)


def write_csv(path: Path, names: list[str], N: int = 160, seed: int = 0) -> np.ndarray:
    """Columns on one latent line plus a little noise, in different units."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((N, 1))
    scale = np.array([1.0, 10.0, 100.0, 0.5, 3.0][: len(names)])
    x = (z * np.linspace(1.0, 2.0, len(names)) + 0.1 * rng.standard_normal((N, len(names)))) * scale
    np.savetxt(path, x, delimiter=",", header=",".join(names), comments="")
    return x


def import_csv(qtbot: Any, w: MainWindow, path: Path) -> None:
    w.files.import_data_from(str(path))
    wait_idle(qtbot, w)
    assert w.session.data is not None and w.session.data.imported_from == path.name


def run_to_end(qtbot: Any, w: MainWindow) -> None:
    assert w.start_action.isEnabled(), w.problem
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.start_action.trigger()
    qtbot.wait(50)


# ------------------------------------------------------------------------------------ 1. preprocessing
def test_preprocess_field_is_bound_to_the_decoder_config(window: MainWindow) -> None:
    w = window
    field = w.training_panel.decoder_form.fields["preprocess"]
    assert [field.combo.itemData(i) for i in range(field.combo.count())] == ["none", "center", "standardize"]
    assert "data's own units" in field.toolTip()
    field.combo.setCurrentIndex(field.combo.findData("standardize"))
    assert w.session.config.decoder.preprocess == "standardize"
    cfg = tiny_config()
    cfg.decoder.preprocess = "center"
    w.apply_config(cfg)
    assert field.value() == "center" and w.session.config.decoder.preprocess == "center"


# ------------------------------------------------------------- 2 and 4. no silent m; the CSV's column names
def test_imported_csv_start_fits_ppcas_m_in_the_worker_and_names_columns(qtbot: Any, window: MainWindow,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    w = window
    threads: list[bool] = []
    real = tasks.suggest_m

    def spy(x: np.ndarray, *a: Any, **k: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(x, *a, **k)

    monkeypatch.setattr(tasks, "suggest_m", spy)
    cfg = tiny_config()
    cfg.decoder.m = 3  # whatever the last session left: not silently fitted to these data
    w.apply_config(cfg)
    names = ["alcohol", "hue", "proline", "ash"]
    x = write_csv(tmp_path / "wine.csv", names)
    import_csv(qtbot, w, tmp_path / "wine.csv")
    m_field = w.training_panel.decoder_form.fields["m"]
    assert "PPCA" in m_field.warning  # said beside m before Start
    # 4: the column names in the pair selectors and the axes
    qtbot.wait(100)
    pairs = w.data_view.pairs
    assert pairs.first.text() == "alcohol" and pairs.second.text() == "hue"
    assert w.data_view.plot.getAxis("bottom").labelText == "alcohol"
    pairs.second.setValue(3)
    qtbot.wait(100)
    assert w.data_view.plot.getAxis("left").labelText == "proline"
    assert "columns alcohol, hue, proline, ash" in w.session.data.summary

    run_to_end(qtbot, w)
    expected = real(x).chosen
    record = w.results.records[-1]
    assert record.config.decoder.m == expected and w.session.config.decoder.m == expected
    assert threads == [False]  # suggest_m ran in the worker thread, once
    assert m_field.spin.value() == expected and "PPCA's suggestion" in m_field.notice
    tip = w.results.data(w.results.index(0, 3), Qt.ItemDataRole.ToolTipRole)
    assert "alcohol" in tip

    # the m now set is kept: a second Start suggests nothing
    run_to_end(qtbot, w)
    assert threads == [False]


def test_m_set_after_import_is_fitted(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    w = window
    w.apply_config(tiny_config())
    write_csv(tmp_path / "d.csv", ["a", "b", "c"])
    import_csv(qtbot, w, tmp_path / "d.csv")
    m_field = w.training_panel.decoder_form.fields["m"]
    m_field.spin.setValue(2)  # the user sets m: it is what Start fits
    assert "PPCA" not in m_field.warning
    run_to_end(qtbot, w)
    assert w.results.records[-1].config.decoder.m == 2


# --------------------------------------------------------------------------------- 3. choose m from the data
def test_choose_m_fits_each_m_keeps_the_runs_draws_the_curve_and_sets_m(qtbot: Any, window: MainWindow,
                                                                         tmp_path: Path) -> None:
    w = window
    cfg = tiny_config(steps=10)
    cfg.decoder.m = 2
    w.apply_config(cfg)
    x = write_csv(tmp_path / "d.csv", ["a", "b", "c"], N=120)
    import_csv(qtbot, w, tmp_path / "d.csv")
    messages: list[str] = []
    w.statusBar().messageChanged.connect(messages.append)
    assert w.choose_m_action.isEnabled()
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.choose_m_action.trigger()
    qtbot.wait(50)
    assert any("m 1 of 2" in m for m in messages) and any("m 2 of 2" in m for m in messages)
    records = w.results.records
    assert [r.config.decoder.m for r in records] == [1, 2]
    assert [r.estimator for r in records] == ["mle-importance", "mle-importance"]  # one family for every m
    chosen = choose_m({f"m{r.config.decoder.m}": r.result for r in records}).chosen
    assert w.session.config.decoder.m == chosen and w.training_panel.decoder_form.fields["m"].spin.value() == chosen
    assert "chosen from the data" in w.training_panel.decoder_form.fields["m"].notice
    dialog = w.select_m_dialog
    assert dialog is not None and dialog.isVisible()
    items = dialog.plot.items
    assert any(isinstance(i, pg.ErrorBarItem) for i in items)
    marks = [i for i in items if isinstance(i, pg.InfiniteLine)]
    assert [m.value() for m in marks] == [chosen]
    names = [i.name() for i in dialog.plot.listDataItems()]
    assert "PPCA (linear)" in names and "fitted (held-out ± SE)" in names
    assert w.session.state == RunState.DONE and w.start_action.isEnabled()
    dialog.widget.grab().save(str(tmp_path / "select-m.png"))
    assert x.shape == (120, 3)


def test_choose_m_stops_and_keeps_what_finished(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    w = window
    cfg = tiny_config(steps=1_000_000)
    cfg.decoder.m = 2
    w.apply_config(cfg)
    write_csv(tmp_path / "d.csv", ["a", "b", "c"], N=120)
    import_csv(qtbot, w, tmp_path / "d.csv")
    steps: list[int] = []
    w.controller.progress.connect(lambda p: steps.append(p.step) if isinstance(p, tasks.SelectMProgress) else None)
    w.choose_m_action.trigger()
    qtbot.waitUntil(lambda: any(s > 0 for s in steps), timeout=TIMEOUT_MS)
    assert w.stop_action.isEnabled() and not w.start_action.isEnabled()
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.stop_action.trigger()
    assert len(w.results.records) == 1 and w.results.records[0].status == "stopped"
    assert w.session.config.decoder.m == 2  # nothing scored: m is unchanged
    assert w.session.state == RunState.DONE


# ----------------------------------------------------------------------------------------- 5. truth first
def test_truth_is_scored_when_data_are_generated_on_the_runs_held_out_points(qtbot: Any, window: MainWindow) -> None:
    w = window
    w.load_preset(str(PRESET_DIR / "n1m1-polynomial.json"))
    cfg = tiny_config()
    cfg.simulation = w.session.config.simulation
    cfg.simulation.samples = 300
    w.apply_config(cfg)
    w.generate()
    wait_idle(qtbot, w)
    ds = w.session.data.dataset
    _, held = split_indices(len(ds), cfg.training.val_fraction, cfg.training.seed)
    expected = heldout_loglik(ds.truth, ds.x[held], seed=cfg.training.seed).mean
    line = w.curves.true_loglik
    assert line.isVisible() and math.isclose(line.value(), expected, rel_tol=1e-9)
    assert f"{expected:.3f}" in w.comparison.summary.text()
    assert w.comparison.truth.isVisible()
    run_to_end(qtbot, w)
    record = w.results.records[-1]
    assert math.isclose(record.metrics["true_heldout_loglik"], expected, rel_tol=1e-9)  # the same points
    assert len(w.comparison.fits.data) == 1
    # another split: Start scores the truth on its held-out points first
    w.training_panel.training_form.fields["seed"].spin.setValue(7)
    run_to_end(qtbot, w)
    _, held7 = split_indices(len(ds), cfg.training.val_fraction, 7)
    expected7 = heldout_loglik(ds.truth, ds.x[held7], seed=7).mean
    assert math.isclose(w.session.data.truth_score.mean, expected7, rel_tol=1e-9)
    assert math.isclose(w.results.records[-1].metrics["true_heldout_loglik"], expected7, rel_tol=1e-9)
    assert len(w.comparison.fits.data) == 2
