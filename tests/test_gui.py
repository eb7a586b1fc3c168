"""GUI tests (pytest-qt, offscreen): runs from the UI, stop/pause/step/close, validation, failures,
redraw rate, screenshots, snapshot immutability, settings and files."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QRect, QSettings, Qt
from PySide6.QtGui import QImage, QPainterPath, QPixmapCache
from PySide6.QtWidgets import QApplication, QGraphicsPathItem, QMessageBox
from qt_support import (
    no_dangling_qthreads,  # noqa: F401  (an autouse fixture: active in this module)
    tiny_config,
)

from engine.config import RunConfig, default_nodes
from engine.estimator_table import INFO
from engine.progress import ScoringProgress, TrainingProgress
from engine.runs import fit as engine_fit
from engine.storage import load_dataset
from engine.trainer import FINISHED, RunResult
from engine.trainer import train as engine_train
from gui import tasks
from gui.app import PIXMAP_CACHE_KB, application
from gui.main_window import MainWindow
from gui.panels.fields import INVALID_STYLE
from gui.panels.model_panel import preset_files
from gui.plots.common import StreamingCurve
from gui.plots.curves import CurvesView
from gui.session import History
from gui.settings import Settings
from gui.state import RunState
from gui.tasks import Paused

RUN_TIMEOUT_MS = 60_000




@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


def open_window(qtbot: Any, settings: Settings) -> MainWindow:
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.kind == "warmup" and not w.controller.busy, timeout=RUN_TIMEOUT_MS)
    return w


@pytest.fixture
def window(qtbot: Any, settings: Settings):
    w = open_window(qtbot, settings)
    yield w
    w.close()


def run_to_end(qtbot: Any, w: MainWindow, config: RunConfig) -> None:
    w.apply_config(config)
    assert w.start_action.isEnabled(), w.problem
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.start_action.trigger()


def error_boxes(w: MainWindow) -> list[QMessageBox]:
    return [b for b in w.findChildren(QMessageBox) if b.isVisible()]


def test_short_run_from_the_ui_reaches_done_with_plots_and_a_result(qtbot: Any, window: MainWindow) -> None:
    w = window
    run_to_end(qtbot, w, tiny_config())
    assert w.session.state == RunState.DONE
    qtbot.wait(150)  # a few redraw ticks
    x, y = w.data_view.scatter.getData()
    assert len(x) == 300 and np.isfinite(y).all()
    gx, gy = w.data_view.learned_curve.getData()
    assert gx is not None and np.isfinite(gy).sum() > 100
    tx, _ = w.data_view.true_curve.getData()
    assert tx is not None and len(tx) > 100
    lx, _ = w.latent_view.inferred_scatter.getData()
    assert lx is not None and len(lx) > 0
    assert w.results.rowCount() == 1
    record = w.results.records[0]
    assert record.status in FINISHED and record.metrics["steps"] == 60
    assert math.isfinite(record.metrics["heldout_loglik"])
    objective = w.curves.overlays[record.run_id].objective.path()
    assert objective.elementCount() == 60
    assert w.curves.true_loglik.isVisible() and w.curves.true_sigma.isVisible()
    assert w.status.progress.value() == w.status.progress.maximum()  # the whole run
    assert w.start_action.isEnabled() and not w.stop_action.isEnabled()


def test_screenshot_after_a_run_is_not_blank(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    window.fit_to_screen(QRect(0, 0, 1920, 1200))  # 1680 x 1020, as on a large screen (not the offscreen 800 x 800)
    run_to_end(qtbot, window, tiny_config(steps=120))
    qtbot.wait(150)
    image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), -1)
    assert pixels.std() > 20
    assert image.save(str(tmp_path / "main-window.png"))  # the README's picture is gui/screenshots.py's


def test_stop_mid_run_answers_within_a_second(qtbot: Any, window: MainWindow) -> None:
    w = window
    w.apply_config(tiny_config(steps=1_000_000))
    seen: dict[str, float] = {}
    w.controller.progress.connect(lambda p: isinstance(p, ScoringProgress)
                                  and seen.setdefault("evaluating", time.perf_counter()))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.status.step >= 50, timeout=RUN_TIMEOUT_MS)
    assert w.session.state == RunState.RUNNING and not w.start_action.isEnabled()
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        clicked = time.perf_counter()
        w.stop_action.trigger()
        assert w.session.state == RunState.STOPPING
    assert seen["evaluating"] - clicked < 1.0
    assert w.session.state == RunState.DONE
    record = w.results.records[0]
    assert record.status == "stopped" and 50 <= record.metrics["steps"] < 1_000_000


def test_pause_step_resume(qtbot: Any, window: MainWindow) -> None:
    w = window
    w.apply_config(tiny_config(steps=1_000_000))
    paused_at: list[int] = []
    w.controller.progress.connect(lambda p: isinstance(p, Paused) and paused_at.append(p.step))
    w.step_action.trigger()  # from idle: a paused run that makes one step
    assert w.session.state == RunState.PAUSED and w.pause_action.text() == "Resume"
    qtbot.waitUntil(lambda: paused_at == [1], timeout=RUN_TIMEOUT_MS)
    w.step_action.trigger()
    qtbot.waitUntil(lambda: paused_at == [1, 2], timeout=RUN_TIMEOUT_MS)
    w.pause_action.trigger()  # resume
    assert w.session.state == RunState.RUNNING
    qtbot.waitUntil(lambda: w.status.step > 20, timeout=RUN_TIMEOUT_MS)
    w.pause_action.trigger()
    qtbot.waitUntil(lambda: len(paused_at) == 3, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.stop_action.trigger()
    assert w.results.records[0].metrics["steps"] == paused_at[-1]


def test_close_mid_run_stops_joins_and_keeps_the_run(qtbot: Any, settings: Settings) -> None:
    w = open_window(qtbot, settings)
    w.apply_config(tiny_config(steps=1_000_000))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.status.step >= 20, timeout=RUN_TIMEOUT_MS)
    w.close()
    assert not w.controller.busy
    assert [r.status for r in w.results.records] == ["stopped"]


def test_close_right_after_start_before_the_worker_thread_runs(qtbot: Any, settings: Settings) -> None:
    """The worker thread starts from the event loop; closing before it has started still ends the run cleanly."""
    w = open_window(qtbot, settings)
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=RUN_TIMEOUT_MS)  # the torch warm-up task
    w.apply_config(tiny_config(steps=1_000_000))
    w.start_action.trigger()
    assert w.controller.busy and w.session.state == RunState.RUNNING
    w.close()
    assert not w.controller.busy
    assert [r.status for r in w.results.records] == ["stopped"]  # the run so far (no step) is kept


def test_invalid_fields_block_start_with_their_message(qtbot: Any, window: MainWindow) -> None:
    w = window
    sigma = w.model_panel.form.fields["sigma"]
    sigma.line.selectAll()
    qtbot.keyClicks(sigma.line, "0")
    assert not w.start_action.isEnabled()
    assert "(0, 1000]" in sigma.error and sigma.editor.styleSheet() == INVALID_STYLE
    assert w.problem_label.full_text().startswith("Cannot start: σ (Model): ")  # the panel's words; the
    assert "simulation.sigma" in w.problem_label.toolTip()  # config's name in the tooltip
    w.start()
    assert w.session.state == RunState.IDLE and not w.controller.busy
    qtbot.keyClicks(sigma.line, ".2")
    assert w.start_action.isEnabled() and not sigma.error and w.session.config.simulation.sigma == 0.2

    hidden = w.training_panel.decoder_form.fields["hidden"]
    hidden.line.selectAll()
    qtbot.keyClicks(hidden.line, "64,x")
    assert "whole numbers" in hidden.error and not w.start_action.isEnabled()
    hidden.line.selectAll()
    qtbot.keyClicks(hidden.line, "16,16")
    assert w.session.config.decoder.hidden == (16, 16) and w.start_action.isEnabled()

    w.estimator_panel.form.fields["name"].combo.setCurrentIndex(0)  # mle-quadrature
    w.training_panel.decoder_form.fields["m"].spin.setValue(4)  # quadrature needs m <= 3
    assert "m <= 3" in w.estimator_panel.form.fields["name"].error
    assert not w.start_action.isEnabled() and not w.step_action.isEnabled()


def test_engine_exception_is_shown_and_the_app_returns_to_idle(qtbot: Any, window: MainWindow,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fit(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the engine broke")

    monkeypatch.setattr(tasks, "fit", broken_fit)
    w = window
    w.apply_config(tiny_config())
    w.start_action.trigger()
    qtbot.waitUntil(lambda: bool(error_boxes(w)), timeout=RUN_TIMEOUT_MS)
    box = error_boxes(w)[0]
    assert "the engine broke" in box.text() and "RuntimeError" in box.detailedText()
    assert w.session.state == RunState.FAILED and w.start_action.isEnabled()
    box.button(QMessageBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: w.session.state == RunState.IDLE)
    assert w.results.rowCount() == 0 and not w.controller.busy


def test_failed_run_status_is_shown_and_kept(qtbot: Any, window: MainWindow,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fit(*args: Any, **kwargs: Any) -> Any:
        result = engine_fit(*args, **kwargs)
        result.status, result.message = "failed", "the objective became nan at step 7"
        return result

    monkeypatch.setattr(tasks, "fit", failing_fit)
    w = window
    run_to_end(qtbot, w, tiny_config(steps=10))
    box = error_boxes(w)[0]
    assert "nan at step 7" in box.text()
    box.done(0)
    qtbot.waitUntil(lambda: w.session.state == RunState.IDLE)
    assert w.results.records[0].status == "failed"


def test_redraw_rate_stays_bounded_and_no_progress_is_lost(qtbot: Any, window: MainWindow) -> None:
    w = window
    received: list[TrainingProgress] = []
    w.controller.progress.connect(lambda p: isinstance(p, TrainingProgress) and received.append(p))
    frames = w.clock.frames
    t0 = time.perf_counter()
    run_to_end(qtbot, w, tiny_config(steps=150, snapshot_every=1, eval_every=1000))
    elapsed = time.perf_counter() - t0
    drawn = w.clock.frames - frames
    assert drawn <= 15 * elapsed + 3  # the 15 Hz clock, whatever the snapshot rate
    assert len(received) <= 20 * elapsed + 3  # the trainer sends at most 20 snapshots a second
    rows = [row["step"] for p in received for row in p.history_rows]
    assert rows == list(range(1, 151))


def test_emitted_snapshot_arrays_are_never_mutated(qtbot: Any, window: MainWindow) -> None:
    w = window
    kept: list[tuple[np.ndarray, np.ndarray]] = []

    def keep(p: Any) -> None:
        if not isinstance(p, TrainingProgress):
            return
        arrays = [p.sigma]
        if p.snapshot is not None:
            arrays += [p.snapshot.manifold.values, p.snapshot.manifold.aligned_values, p.snapshot.latents]
        kept.extend((a, a.copy()) for a in arrays if isinstance(a, np.ndarray))

    w.controller.progress.connect(keep)
    run_to_end(qtbot, w, tiny_config(steps=80, snapshot_every=2))
    assert len(kept) >= 6  # the first and the last snapshot at least, three arrays each
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in kept)


def test_settings_round_trip_keeps_types(qtbot: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "types.ini")
    s = Settings(QSettings(path, QSettings.Format.IniFormat))
    s.set("a/flag", True)
    s.set("a/count", 7)
    s.sync()
    again = Settings(QSettings(path, QSettings.Format.IniFormat))
    flag, count = again.get_bool("a/flag", False), again.get_int("a/count", 0)
    assert flag is True and type(count) is int and count == 7
    assert again.get_bool("a/missing", False) is False

    w = open_window(qtbot, again)
    w.curves.log_sigma.setChecked(True)
    w.samples_view.count.setValue(1234)
    w.session.config.simulation.sigma = 0.25
    w.close()
    w2 = open_window(qtbot, Settings(QSettings(path, QSettings.Format.IniFormat)))
    assert w2.curves.log_sigma.isChecked() and w2.samples_view.count.value() == 1234
    assert w2.session.config.simulation.sigma == 0.25
    assert w2.model_panel.form.fields["sigma"].line.text() == "0.25"
    w2.close()


def test_presets_load_into_the_panels(window: MainWindow) -> None:
    names = {p.stem for p in preset_files()}
    assert names == {"n1m1-polynomial", "sigmoid-n3m2", "mlp-n5m2", "linear-ppca-n5m2", "degenerate-no-floor"}
    for path in preset_files():
        window.load_preset(str(path))
        assert window.session.config == RunConfig.from_json(path.read_text())
        assert not window.problem and not error_boxes(window)
    window.load_preset(str(next(p for p in preset_files() if p.stem == "degenerate-no-floor")))
    assert window.training_panel.decoder_form.fields["sigma_min"].line.text() == "0"
    window.load_preset(str(next(p for p in preset_files() if p.stem == "linear-ppca-n5m2")))
    assert window.training_panel.decoder_form.fields["hidden"].line.text() == ""


def test_estimator_panel_shows_relevant_settings_and_the_formula(window: MainWindow) -> None:
    panel = window.estimator_panel
    combo = panel.form.fields["name"].combo
    combo.setCurrentIndex(combo.findData("iwae"))
    visible = {name for name, f in panel.form.fields.items() if not f.isHidden()}
    assert {"samples", "encoder_hidden", "dreg", "vae_sigma"} <= visible
    assert not visible & {"nodes", "proposal", "sampler", "beta"}
    assert panel.formula_label.text() == INFO["iwae"].formula
    assert panel.summary_label.text() == INFO["iwae"].summary
    assert "K" in panel.form.fields["samples"].toolTip()
    combo.setCurrentIndex(combo.findData("mle-mcem"))
    assert panel.form.fields["leapfrog_steps"].isHidden()
    panel.form.fields["sampler"].combo.setCurrentIndex(1)  # hmc
    assert not panel.form.fields["leapfrog_steps"].isHidden()


def test_cuda_is_greyed_out_with_a_reason_when_unavailable(window: MainWindow) -> None:
    field = window.training_panel.training_form.fields["device"]
    item = field.combo.model().item(field.combo.findData("cuda"))
    if window._cuda_reason is None:
        assert item.isEnabled()
    else:
        assert not item.isEnabled() and "torch.cuda.is_available()" in item.toolTip()


def test_files_save_open_export(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    w = window
    run_to_end(qtbot, w, tiny_config())

    def wait_idle() -> None:
        qtbot.waitUntil(lambda: not w.controller.busy, timeout=RUN_TIMEOUT_MS)

    w.files.save_run_to(str(tmp_path / "run1"))
    wait_idle()
    assert (tmp_path / "run1" / "decoder.safetensors").exists()
    w.files.open_run_from(str(tmp_path / "run1" / "run.json"))
    wait_idle()
    assert w.results.rowCount() == 2
    first, opened = w.results.records
    assert opened.saved is not None and opened.metrics["heldout_loglik"] == pytest.approx(
        first.metrics["heldout_loglik"])
    assert len(opened.history.step) == 60

    pickle = tmp_path / "model.pt"
    pickle.write_bytes(b"\x80\x04not really")
    w.files.open_run_from(str(pickle))
    qtbot.waitUntil(lambda: bool(error_boxes(w)), timeout=RUN_TIMEOUT_MS)
    box = error_boxes(w)[0]
    assert "pickle" in box.text().lower()
    box.done(0)
    assert w.results.rowCount() == 2

    w.files.save_config_to(str(tmp_path / "config.json"))
    assert RunConfig.from_json((tmp_path / "config.json").read_text()) == w.session.config
    for suffix in ("csv", "npz"):
        w.files.export_data_to(str(tmp_path / f"data.{suffix}"))
        wait_idle()
        assert len(load_dataset(tmp_path / f"data.{suffix}")) == 300
    w.files.import_data_from(str(tmp_path / "data.csv"))
    wait_idle()
    assert w.session.data is not None and w.session.data.simulation is None and w.session.data.dataset.truth is None
    w.files.export_results_to(str(tmp_path / "results.csv"))
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    for name in ("curves.png", "curves.svg"):
        w.files.export_plot_to(w.curves.glw, str(tmp_path / name))
        assert (tmp_path / name).stat().st_size > 1000
    w.files.export_plot_to(w.data_view.widget, str(tmp_path / "data.png"))
    assert (tmp_path / "data.png").stat().st_size > 1000


def test_samples_and_posterior_of_a_vae(qtbot: Any, window: MainWindow) -> None:
    w = window
    cfg = tiny_config()
    cfg.estimator.name = "vae"
    cfg.estimator.encoder_hidden = (8,)
    run_to_end(qtbot, w, cfg)
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.samples_view.fit_button.click()
    assert w.samples_view.samples is not None and w.samples_view.samples.x.shape == (1000, 1)
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.samples_view.truth_button.click()
    assert "true model" in w.samples_view.samples.label
    w.posterior_view.set_index(5)
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.posterior_view.button.click()
    post = w.posterior_view.result
    assert post is not None and post.index == 5 and post.encoder is not None
    h = post.axis[1] - post.axis[0]
    assert post.exact.sum() * h == pytest.approx(1.0, abs=1e-3)
    qtbot.wait(150)
    assert w.data_view.chosen.getData()[0] is not None and len(w.data_view.chosen.getData()[0]) == 1


def test_results_csv_lists_every_run(qtbot: Any, window: MainWindow) -> None:
    run_to_end(qtbot, window, tiny_config(steps=20))
    text = window.results.to_csv()
    header, row = text.strip().split("\n")
    assert header.startswith("run,estimator") and row.startswith("1,mle-quadrature")
    assert json.loads(window.session.config.to_json())["training"]["steps"] == 20


def _drawn(curve: StreamingCurve) -> tuple[np.ndarray, np.ndarray]:
    """The points of a streaming curve's items, in order, each shared end point counted once."""
    xs, ys = [], []
    for item in curve.items:
        x, y = item.getData()
        if x is None or len(x) == 0:
            continue
        skip = 1 if xs else 0
        xs.append(x[skip:])
        ys.append(y[skip:])
    return np.concatenate(xs), np.concatenate(ys)


def test_streaming_curve_pieces_join_into_the_whole_series(qtbot: Any) -> None:
    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    plot = widget.getPlotItem()
    curve = StreamingCurve(plot, pieces=4)
    items_in_plot = len(plot.items)
    rng = np.random.default_rng(0)
    x = np.arange(1.0, 1001.0)
    y = rng.normal(size=1000)
    curve.reset(1000, pg.mkPen("b"))
    n = 0
    while n < 1000:
        n = min(1000, n + int(rng.integers(1, 90)))
        curve.draw(x[:n], y[:n])
        dx, dy = _drawn(curve)
        np.testing.assert_array_equal(dx, x[:n])
        np.testing.assert_array_equal(dy, y[:n])
        tail_x = curve.tail.getData()[0]
        assert tail_x[-1] - tail_x[0] <= 250 + 90  # a frame moves at most a quarter of the range and one batch
    assert len(plot.items) == items_in_plot  # pieces are reused items, never added during a run
    # log axis: log10 of the positive values, nothing for the rest; a reset redraws from the first point
    curve.log_y = True
    curve.reset()
    curve.draw(x[:500], y[:500])
    dx, dy = _drawn(curve)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(y[:500] > 0, np.log10(y[:500]), np.nan)
    np.testing.assert_array_equal(dx, x[:500])
    np.testing.assert_array_equal(dy, expected)
    curve.reset()
    assert all(item.getData()[0] is None or len(item.getData()[0]) == 0 for item in curve.items)


def test_live_sigma_curve_follows_the_log_axis(qtbot: Any) -> None:
    view = CurvesView()
    qtbot.addWidget(view)
    view.show()
    view.start_live("#0072B2", "ELBO", 100)
    rows = [{"step": s, "objective": -2.0 + 0.01 * s, "sigma": 0.5 * 0.97**s} for s in range(1, 41)]
    view.add_rows(rows)
    view.redraw()
    sigma = np.array([r["sigma"] for r in rows])
    np.testing.assert_allclose(_drawn(view.streams["sigma"])[1], sigma)
    view.log_sigma.setChecked(True)
    view.redraw()
    np.testing.assert_allclose(_drawn(view.streams["sigma"])[1], np.log10(sigma))
    lo, hi = view.sigma_plot.viewRange()[1]
    assert lo <= np.log10(sigma).min() and np.log10(sigma).max() <= hi


def _points(path: QPainterPath) -> np.ndarray:
    return np.array([(path.elementAt(i).x, path.elementAt(i).y) for i in range(path.elementCount())])


def test_overlays_are_static_items_in_the_units_of_their_axes(qtbot: Any) -> None:
    """A finished run's dense curves are Qt path items (no Python call when a live frame repaints over
    them); σ follows the log axis both ways, and auto-ranging covers every overlay exactly."""
    view = CurvesView()
    qtbot.addWidget(view)
    view.show()
    step = np.arange(1.0, 501.0)
    sigma = 0.5 * 0.99**step
    objective = -1.0 / step
    objective[10] = np.nan  # a skipped step breaks the line
    history = History(step, objective, sigma, step[::100], -1.0 / step[::100])
    view.set_overlay(1, history, "#0072B2", "#1", True)
    overlay = view.overlays[1]
    assert isinstance(overlay.objective, QGraphicsPathItem) and isinstance(overlay.sigma, QGraphicsPathItem)
    ok = np.isfinite(objective)
    path = overlay.objective.path()  # the skipped point repeats the last one, and the line starts again after it
    np.testing.assert_allclose(np.delete(_points(path), 10, axis=0), np.column_stack([step[ok], objective[ok]]))
    assert path.elementAt(11).type == QPainterPath.ElementType.MoveToElement
    assert not overlay.heldout.opts["clipToView"] and not overlay.heldout.opts["autoDownsample"]
    view.log_sigma.setChecked(True)
    np.testing.assert_allclose(_points(overlay.sigma.path())[:, 1], np.log10(sigma))
    view.sigma_plot.autoRange(padding=0)
    lo, hi = view.sigma_plot.viewRange()[1]
    np.testing.assert_allclose([lo, hi], [np.log10(sigma).min(), np.log10(sigma).max()], atol=1e-9)
    view.log_sigma.setChecked(False)
    np.testing.assert_allclose(_points(overlay.sigma.path())[:, 1], sigma)
    view.objective_plot.autoRange(padding=0)
    np.testing.assert_allclose(view.objective_plot.viewRange()[1], [np.nanmin(objective), np.nanmax(objective)],
                               atol=1e-9)


def test_application_makes_room_for_the_cached_plot_items(qtbot: Any) -> None:
    """Qt's default 10 MB pixmap cache holds the cached curves of a handful of finished runs; past that
    every live frame rendered evicted ones again."""
    QPixmapCache.setCacheLimit(10 * 1024)
    assert application() is QApplication.instance()
    assert QPixmapCache.cacheLimit() == PIXMAP_CACHE_KB >= 100 * 1024
    QPixmapCache.setCacheLimit(2 * PIXMAP_CACHE_KB)
    application()
    assert QPixmapCache.cacheLimit() == 2 * PIXMAP_CACHE_KB  # a larger limit is kept


def test_the_worker_is_deleted_in_the_gui_thread_after_its_thread_ends(qtbot: Any, window: MainWindow) -> None:
    """Deleted in its own thread (deleteLater), Qt's destructor held Qt's signal-slot locks while waiting for
    the GIL, which the GUI thread held while waiting for one of those locks: a deadlock."""
    w = window
    w.apply_config(tiny_config(steps=20))
    deleted_in: list[int] = []
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.start_action.trigger()
        worker = w.controller._worker
        assert worker is not None
        worker.destroyed.connect(lambda: deleted_in.append(threading.get_ident()), Qt.ConnectionType.DirectConnection)
        del worker
    qtbot.waitUntil(lambda: bool(deleted_in), timeout=RUN_TIMEOUT_MS)
    assert deleted_in == [threading.main_thread().ident]


# ------------------------------------------------------------------ threads, time limit, automatic nodes
def test_threads_and_time_limit_fields_edit_the_training_config(qtbot: Any, window: MainWindow) -> None:
    w = window
    form = w.training_panel.training_form
    threads, limit = form.fields["threads"], form.fields["time_limit"]
    assert w.session.config.training.threads == 0 and threads.spin.text() == "auto"
    assert "auto" in threads.toolTip() and "sleep" in threads.toolTip()
    threads.spin.setValue(3)
    assert w.session.config.training.threads == 3 and threads.spin.text() == "3"
    threads.spin.setValue(0)
    assert w.session.config.training.threads == 0 and threads.spin.text() == "auto"

    assert w.session.config.training.time_limit is None and limit.line.text() == ""
    assert limit.line.placeholderText() == "none" and "whichever" in limit.toolTip()
    qtbot.keyClicks(limit.line, "5")
    assert w.session.config.training.time_limit == 5.0 and w.start_action.isEnabled()
    limit.line.selectAll()
    qtbot.keyClicks(limit.line, "0")  # the engine's range is (0, 1e7]
    assert "(0, 1e+07]" in limit.error and not w.start_action.isEnabled()
    limit.line.selectAll()
    qtbot.keyClick(limit.line, Qt.Key.Key_Delete)
    assert w.session.config.training.time_limit is None and not limit.error and w.start_action.isEnabled()

    cfg = tiny_config(threads=4, time_limit=2.5)
    w.apply_config(cfg)
    assert threads.spin.text() == "4" and limit.line.text() == "2.5"
    assert RunConfig.from_json(w.session.config.to_json()).training.time_limit == 2.5


def test_empty_nodes_field_names_the_default_for_the_fitted_m(qtbot: Any, window: MainWindow) -> None:
    w = window
    nodes = w.estimator_panel.form.fields["nodes"]
    name = w.estimator_panel.form.fields["name"].combo
    m = w.training_panel.decoder_form.fields["m"].spin
    assert w.session.config.estimator.name == "mle-adaptive" and w.session.config.estimator.nodes is None
    assert nodes.line.text() == "" and nodes.line.placeholderText() == "auto: 16 for m = 1"
    m.setValue(2)
    assert nodes.line.placeholderText() == f"auto: {default_nodes('mle-adaptive', 2)} for m = 2" == "auto: 3 for m = 2"
    name.setCurrentIndex(name.findData("mle-quadrature"))
    assert nodes.line.placeholderText() == f"auto: {default_nodes('mle-quadrature', 2)} for m = 2"
    qtbot.keyClicks(nodes.line, "7")
    assert w.session.config.estimator.nodes == 7
    nodes.line.selectAll()
    qtbot.keyClicks(nodes.line, "x")
    assert "whole number" in nodes.error and not w.start_action.isEnabled()
    nodes.line.selectAll()
    qtbot.keyClick(nodes.line, Qt.Key.Key_Delete)
    assert w.session.config.estimator.nodes is None and w.start_action.isEnabled()
    cfg = RunConfig()
    cfg.decoder.m = 4
    w.apply_config(cfg)  # the fitted m of another config
    assert nodes.line.text() == "" and nodes.line.placeholderText() == "auto: 3 for m = 4"
    m.setValue(15)  # the degree-5 rule's 2m + 2^m points: the engine refuses, and the field says why
    assert "got auto" in nodes.error and "32798 points" in nodes.error and not w.start_action.isEnabled()


def test_time_limited_run_shows_the_fraction_of_its_time(qtbot: Any, window: MainWindow) -> None:
    """10^7 steps and a 2 s limit: the bar follows the time, the ETA comes from it, the x axis fits the run."""
    w = window
    w.apply_config(tiny_config(steps=10_000_000, time_limit=2.0))
    bar = w.status.progress
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.start_action.trigger()
        qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() >= 0.25 * bar.maximum(), timeout=RUN_TIMEOUT_MS)
        text = w.status.time_label.text()
        assert "of 0:02 elapsed" in text and "ETA 0:0" in text, text
        assert w.curves.objective_plot.viewRange()[0][1] < 1e6  # not the planned 10^7 steps
    record = w.results.records[0]
    assert record.status == "cap_reached" and "time limit" in record.message
    qtbot.waitUntil(lambda: bar.value() == bar.maximum() and bar.text() == "100%")  # the next redraw


# --------------------------------------------------------------------------------- the final scoring
def scoring_fit(chunks: int, chunk_s: float = 0.01) -> Any:
    """engine.runs.fit with a scoring of `chunks` pauses that reports its fraction and checks should_stop
    between them, as the engine's does."""
    def fit(config: RunConfig, data: Any, test: Any = None, on_progress: Any = None,
            should_stop: Any = None, stop_scoring: Any = None) -> RunResult:
        result = engine_train(config, data, test, on_progress, should_stop)
        for i in range(chunks):
            on_progress(ScoringProgress(result.steps_done, config.training.steps, i / chunks,
                                        result.status == "stopped"))
            if stop_scoring():
                result.metrics = {"scoring": "stopped", "chunks": i}
                return result
            time.sleep(chunk_s)
        result.metrics = {"scoring": "done", "chunks": chunks}
        return result
    return fit


def test_stop_during_scoring_answers_within_a_second_and_keeps_the_run(
        qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "fit", scoring_fit(chunks=100_000))
    w = window
    w.apply_config(tiny_config(steps=20))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.session.state == RunState.SCORING and w.status.scored > 0.0001, timeout=RUN_TIMEOUT_MS)
    assert w.stop_action.isEnabled() and not w.pause_action.isEnabled() and not w.step_action.isEnabled()
    qtbot.waitUntil(lambda: w.status.progress.text().startswith("scoring"), timeout=5000)
    assert "scoring held-out points" in w.status.time_label.text()
    with qtbot.waitSignal(w.controller.finished, timeout=5000):
        clicked = time.perf_counter()
        w.stop_action.trigger()
        assert w.session.state == RunState.STOPPING
    assert time.perf_counter() - clicked < 1.0
    record = w.results.records[0]
    assert record.status in FINISHED and record.metrics["scoring"] == "stopped"
    assert w.session.state == RunState.DONE and w.start_action.isEnabled()


def test_stop_during_training_still_scores_the_run(qtbot: Any, window: MainWindow,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "fit", scoring_fit(chunks=20))
    w = window
    w.apply_config(tiny_config(steps=1_000_000))
    states: list[RunState] = []
    w.controller.progress.connect(lambda info: states.append(w.session.state))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.status.step >= 20, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(w.controller.finished, timeout=RUN_TIMEOUT_MS):
        w.stop_action.trigger()
    record = w.results.records[0]
    assert record.status == "stopped" and record.metrics == {"scoring": "done", "chunks": 20}
    assert RunState.SCORING in states  # and Stop could have ended the scoring too


def test_close_during_scoring_returns_within_a_second_and_keeps_the_run(
        qtbot: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "fit", scoring_fit(chunks=100_000))
    w = open_window(qtbot, settings)
    w.apply_config(tiny_config(steps=20))
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.session.state == RunState.SCORING, timeout=RUN_TIMEOUT_MS)
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 1.0
    assert not w.controller.busy
    assert [(r.status, r.metrics["scoring"]) for r in w.results.records] == [("cap_reached", "stopped")]


def test_close_while_the_engine_scores_a_large_held_out_set(qtbot: Any, settings: Settings) -> None:
    """The engine's own scoring (27 000 held-out points: about a minute) ends within about a second."""
    cfg = tiny_config(steps=20, val_fraction=0.9)
    cfg.simulation.samples = 30_000
    w = open_window(qtbot, settings)
    w.apply_config(cfg)
    w.start_action.trigger()
    qtbot.waitUntil(lambda: w.session.state == RunState.SCORING, timeout=RUN_TIMEOUT_MS)
    qtbot.wait(300)  # well into the scoring
    t0 = time.perf_counter()
    w.close()
    assert time.perf_counter() - t0 < 1.5
    assert not w.controller.busy
    record = w.results.records[0]  # the trained run is kept, and says that its scoring was stopped
    assert w.results.rowCount() == 1 and record.status in FINISHED and record.metrics["scoring_stopped"] is True
