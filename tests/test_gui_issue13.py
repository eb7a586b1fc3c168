"""GUI tests of what a new user hit (issue 13): the pair of coordinates shown, the window on small screens,
stale and misleading plots, bad input named at its field, imported data, status and truth, cramped views,
Reset and opened runs, runs whose scoring failed. Offscreen, tiny data, few steps."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QRect, QRectF, QSettings, QSize, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget
from qt_support import no_dangling_qthreads  # noqa: F401  (an autouse fixture: active in this module)
from qt_support import tiny_config as base_tiny_config

import engine.runs
from engine.alignment import latent_grid
from engine.config import RunConfig
from engine.integral import PointPosterior
from engine.runs import fit as engine_fit
from engine.trainer import RunResult
from gui import tasks
from gui.main_window import MainWindow, initial_geometry
from gui.panels.model_panel import PRESET_DIR
from gui.plots.curves import CurvesView
from gui.plots.data_view import DataView
from gui.plots.results import COLUMNS, ResultsModel
from gui.session import History, RunRecord, Session
from gui.settings import GEOMETRY, PAIR_FIRST, PAIR_SECOND, WINDOW_FRAME, Settings
from gui.state import RunState

TIMEOUT_MS = 60_000


def tiny_config(**training: Any) -> RunConfig:
    """The shared tiny run, 30 steps evaluated every 10 unless told."""
    return base_tiny_config(**{"steps": 30, "eval_every": 10, **training})


def ini(tmp_path: Path, name: str = "settings.ini") -> Settings:
    return Settings(QSettings(str(tmp_path / name), QSettings.Format.IniFormat))


def open_window(qtbot: Any, settings: Settings) -> MainWindow:
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.kind == "warmup" and not w.controller.busy, timeout=TIMEOUT_MS)
    return w


@pytest.fixture
def window(qtbot: Any, tmp_path: Path):
    w = open_window(qtbot, ini(tmp_path))
    yield w
    w.close()


def wait_idle(qtbot: Any, w: MainWindow) -> None:
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=TIMEOUT_MS)


def generate(qtbot: Any, w: MainWindow, preset: str, samples: int = 400) -> None:
    w.load_preset(str(PRESET_DIR / f"{preset}.json"))
    w.model_panel.form.fields["samples"].spin.setValue(samples)
    w.generate()
    wait_idle(qtbot, w)


def run_to_end(qtbot: Any, w: MainWindow, config: RunConfig | None = None) -> None:
    if config is not None:
        w.apply_config(config)
    assert w.start_action.isEnabled(), w.problem
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.start_action.trigger()
    qtbot.wait(100)  # a few redraw ticks


def blocking_fit(config: RunConfig, data: Any, test: Any = None, on_progress: Any = None, should_stop: Any = None,
                 stop_scoring: Any = None) -> RunResult:
    """A fit that takes no step until it is stopped (the seconds before a real run's first step), then
    fits no step."""
    while not should_stop():
        time.sleep(0.01)
    return engine_fit(config, data, test, on_progress, lambda: True, lambda: True)


def type_into(qtbot: Any, widget: Any, text: str) -> None:
    """Replace the text of a line edit, or of a spin box's line edit, by typing."""
    (widget.lineEdit() if hasattr(widget, "lineEdit") else widget).selectAll()
    qtbot.keyClicks(widget, text)


# ------------------------------------------------------------------------ 1. the pair of coordinates shown
def test_data_view_shows_two_different_coordinates_whatever_came_before(qtbot: Any, tmp_path: Path) -> None:
    s = ini(tmp_path)
    s.set(PAIR_FIRST, 0)  # what an earlier version saved after n = 1 data: x1 against x1
    s.set(PAIR_SECOND, 0)
    w = open_window(qtbot, s)
    pairs = w.data_view.pairs
    generate(qtbot, w, "n1m1-polynomial")
    generate(qtbot, w, "sigmoid-n3m2")
    assert pairs.pair() == (0, 1) and pairs.isVisible()
    qtbot.wait(100)
    plot = w.data_view.plot
    assert plot.getAxis("bottom").labelText == "x1" and plot.getAxis("left").labelText == "x2"
    pairs.second.setValue(1)  # x1 again: the two swap instead
    assert pairs.pair() == (1, 0)
    generate(qtbot, w, "degenerate-no-floor")  # n = 2: the selector is there, the pair kept
    assert w.session.data.dataset.n == 2 and pairs.isVisible() and pairs.pair() == (1, 0)
    generate(qtbot, w, "n1m1-polynomial")
    w.close()
    again = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert (again.get_int(PAIR_FIRST, -1), again.get_int(PAIR_SECOND, -1)) == (1, 0)  # not x1 / x1


# ------------------------------------------------------------------------------- 2. the window's size
@pytest.mark.parametrize("screen", [QSize(1600, 1000), QSize(1280, 800), QSize(800, 800)])
def test_first_geometry_lies_in_the_screens_free_area(screen: QSize) -> None:
    available = QRect(100, 30, screen.width(), screen.height() - 30)  # a panel above
    rect = initial_geometry(available)
    assert available.contains(rect) and rect.width() <= 1680 and rect.height() <= 1020
    margin = available.height() - rect.height()
    assert margin >= 40  # room for the window's title bar and frame


def test_window_opens_inside_the_screen_and_restores_only_a_geometry_that_fits(qtbot: Any, tmp_path: Path) -> None:
    available = QGuiApplication.primaryScreen().availableGeometry()
    s = ini(tmp_path)
    big = QWidget()  # a window saved on a larger screen
    qtbot.addWidget(big)
    big.setGeometry(QRect(0, 0, available.width() + 600, available.height() + 300))
    s.set(GEOMETRY, big.saveGeometry())
    s.set(WINDOW_FRAME, big.frameGeometry())
    w = open_window(qtbot, s)
    assert available.contains(w.frameGeometry()), (w.frameGeometry(), available)
    assert available.contains(w.statusBar().mapToGlobal(w.statusBar().rect().bottomRight()))
    fitting = QRect(available.x() + 20, available.y() + 20, available.width() - 80, available.height() - 90)
    w.setGeometry(fitting)
    qtbot.wait(50)
    w.close()
    w2 = open_window(qtbot, Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)))
    restored = w2.geometry()  # a geometry that fits is restored as it was (the platform may shift it by its frame)
    assert restored.size() == fitting.size() and (restored.topLeft() - fitting.topLeft()).manhattanLength() <= 10
    w2.close()


def test_usable_at_1280x800_and_tall_training_plots_at_1600x1000(qtbot: Any, tmp_path: Path) -> None:
    w = MainWindow(ini(tmp_path))
    qtbot.addWidget(w)
    for screen, plot_height in ((QRect(0, 0, 1280, 800), 100), (QRect(0, 0, 1600, 1000), 150)):
        w.fit_to_screen(screen)
        w.show()
        qtbot.wait(100)
        expected = initial_geometry(screen)
        assert w.size() == expected.size()  # not enlarged by the minimum sizes of docks and plots
        assert w.minimumSizeHint().width() <= expected.width() and w.minimumSizeHint().height() <= expected.height()
        assert w.statusBar().geometry().bottom() < w.height() and w.statusBar().isVisible()
        for plot in w.curves.plots:  # were about 60 px
            assert plot.getViewBox().sceneBoundingRect().height() >= plot_height
        assert w.data_view.plot.getViewBox().sceneBoundingRect().height() >= 150
        for dock in ("model", "estimator", "training"):  # the panels show whole in width (they scroll down)
            area = w.docks[dock].widget()
            assert area.viewport().width() >= area.widget().minimumSizeHint().width(), dock
    qtbot.waitUntil(lambda: not w.controller.busy, timeout=TIMEOUT_MS)
    w.close()


# -------------------------------------------------------------------------- 3. stale and misleading plots
def test_start_replaces_the_last_runs_latents_at_once_and_says_it_is_starting(
        qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    w = window
    lv = w.latent_view
    generate(qtbot, w, "sigmoid-n3m2")  # data with 2-D latents, and a run's 2-D latents on show
    lv.set_inferred(w.session.data.z_shown + 0.1)
    qtbot.wait(100)
    monkeypatch.setattr(tasks, "fit", blocking_fit)
    w.apply_config(tiny_config())  # n = m = 1: Start draws new data first
    w.start_action.trigger()
    assert lv.inferred is None  # the last run's latents are gone (they were repainted in the new colour)
    qtbot.waitUntil(lambda: w.session.data is not None and w.session.data.dataset.n == 1, timeout=TIMEOUT_MS)
    assert lv.true_z is not None and lv.true_z.shape[1] == 1  # the new data's z, before the first step
    qtbot.wait(100)
    assert w.status.time_label.text().startswith("starting: ") and w.status.progress.maximum() == 0  # busy
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.stop_action.trigger()
    qtbot.wait(100)
    assert w.status.progress.maximum() > 0 and "starting" not in w.status.time_label.text()


def _history(steps: int = 50, offset: float = 0.0) -> History:
    step = np.arange(1.0, steps + 1)
    return History(step, -2.0 + offset + 0.01 * step, 0.5 + 0 * step, step[::10], -2.0 + offset + 0.01 * step[::10])


def test_training_curves_legend_lists_every_run_beside_the_plots_and_the_live_run_on_top(qtbot: Any) -> None:
    view = CurvesView()
    qtbot.addWidget(view)
    view.resize(900, 260)
    view.show()
    for run_id in range(1, 7):
        view.set_overlay(run_id, _history(offset=0.1 * run_id), "#0072B2", f"#{run_id} mle-quadrature", True,
                         (50.0, -1.0), "log p(x)")
    view.start_live("#D55E00", "ELBO", 100, "#7 vae")
    qtbot.wait(50)
    labels = [label.text for _sample, label in view.legend.items]
    assert labels == [f"#{i} mle-quadrature" for i in range(1, 7)] + ["#7 vae (running)"]
    shown = view.glw.ci.sceneBoundingRect()
    for sample, label in view.legend.items:  # every entry on screen, none over a plot's data
        for item in (sample, label):
            rect = item.sceneBoundingRect()
            assert shown.contains(rect), rect
            assert not any(rect.intersects(p.getViewBox().sceneBoundingRect()) for p in view.plots)
    overlay = view.overlays[1]
    live_items = [view.live_heldout, *view.streams["objective"].items, *view.streams["sigma"].items]
    assert min(i.zValue() for i in live_items) > max(i.zValue() for i in overlay.items)  # drawn over them
    title = view.objective_plot.titleLabel.text
    assert "log p(x)" in title and "ELBO" in title  # not "ELBO" over the MLE runs' log p(x)
    view.end_live()
    assert len(view.legend.items) == 6 and view.objective_plot.titleLabel.text == "Objective: log p(x)"


def test_data_view_legend_is_under_the_plot_and_repainted_in_the_runs_colour(qtbot: Any) -> None:
    view = DataView()
    qtbot.addWidget(view)
    view.resize(500, 400)
    view.show()
    qtbot.wait(50)
    legend = view.legend
    assert not legend.sceneBoundingRect().intersects(view.plot.getViewBox().sceneBoundingRect())
    sample = next(s for s, _label in legend.items if s.item is view.learned_curve)
    changed: list[QRectF] = []
    view.widget.scene().changed.connect(lambda rects: changed.extend(rects))
    view.set_learned_colour("#009E73", "g_θ of #3 mle-mcem")
    qtbot.waitUntil(lambda: bool(changed), timeout=2000)
    assert any(r.intersects(sample.sceneBoundingRect()) for r in changed)  # its sample is painted again
    assert legend.getLabel(view.learned_curve).text == "g_θ of #3 mle-mcem"


# ------------------------------------------------------------------------------------- 6. bad input
def test_too_few_points_for_the_split_are_refused_at_the_field(qtbot: Any, window: MainWindow) -> None:
    w = window
    samples = w.model_panel.form.fields["samples"]
    samples.spin.setValue(2)  # 20 % held out leaves 1 training point: the run failed in a dialog
    assert not w.start_action.isEnabled() and not w.step_action.isEnabled()
    assert "leave 1 for training" in samples.error and "N >= 3" in samples.error
    assert w.problem.startswith("samples N (Model): ")
    samples.spin.setValue(3)
    assert w.start_action.isEnabled() and not samples.error


def test_unwise_settings_are_warned_beside_their_fields_without_blocking(qtbot: Any, window: MainWindow) -> None:
    w = window
    sim, dec = w.model_panel.form.fields, w.training_panel.decoder_form.fields
    sim["m"].spin.setValue(3)  # n = 1
    assert "m = 3 > n = 1" in sim["m"].warning and not sim["m"].error and sim["m"].error_label.isVisible()
    sim["m"].spin.setValue(1)
    assert not sim["m"].warning and not sim["m"].error_label.isVisible()
    sim["n"].spin.setValue(5)
    dec["m"].spin.setValue(7)
    assert "fitted m = 7 > n = 5" in dec["m"].warning
    est = w.estimator_panel.form.fields
    est["name"].combo.setCurrentIndex(est["name"].combo.findData("mle-importance"))
    est["samples"].spin.setValue(100_000)
    assert "K = 100 000" in est["samples"].warning and "slow" in est["samples"].warning
    assert w.start_action.isEnabled()  # legal, so warned, not refused


def test_text_an_integer_box_cannot_take_is_kept_and_named_not_dropped(qtbot: Any, window: MainWindow) -> None:
    w = window
    box = w.training_panel.training_form.fields["eval_every"]
    line = box.spin.lineEdit()
    box.spin.setFocus()
    type_into(qtbot, box.spin, "12x")
    assert line.text() == "12x"  # QSpinBox dropped the x without a word
    assert "'12x' is not a whole number from 1 to 10 000 000" in box.error and not w.start_action.isEnabled()
    assert w.session.config.training.eval_every == 12  # the config follows the text while it can be taken
    qtbot.keyClick(box.spin, Qt.Key.Key_Return)  # editing ends: the last good value comes back, and it says so
    assert line.text() == "12" and not box.error and w.start_action.isEnabled()
    assert "'12x' was not a whole number" in box.notice and "kept 12" in box.notice
    type_into(qtbot, box.spin, "1e5")
    assert "'1e5'" in box.error
    type_into(qtbot, box.spin, "500")
    assert w.session.config.training.eval_every == 500 and not box.error and not box.notice


def test_cannot_start_is_one_short_line_in_the_panels_words(qtbot: Any, window: MainWindow) -> None:
    w = window
    bar = w.problem_label.parentWidget()
    height = bar.height()
    w.training_panel.decoder_form.fields["m"].spin.setValue(15)  # 2^15 grid points: a long engine message
    qtbot.wait(50)
    text = w.problem_label.full_text()
    assert text.startswith("Cannot start: nodes G (Estimator): ") and "estimator.nodes" not in text
    assert "estimator.nodes" in w.problem_label.toolTip()  # the config's name, and the whole message
    assert w.problem_label.height() <= w.problem_label.fontMetrics().height() + 8  # one line
    assert bar.height() == height  # the toolbar, and every panel under it, did not move
    shown = w.problem_label.text()
    assert shown == text or shown.endswith("…")
    assert w.problem_label.fontMetrics().horizontalAdvance(shown) <= w.problem_label.width()


# ------------------------------------------------------------------------------------ 7. imported data
def test_imported_data_are_named_in_the_model_panel_and_the_results(qtbot: Any, window: MainWindow,
                                                                      tmp_path: Path) -> None:
    w = window
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    x = np.column_stack([z, z**2]) + 0.1 * rng.normal(size=(200, 2))
    path = tmp_path / "mine.csv"
    np.savetxt(path, x, delimiter=",", header="x1,x2", comments="")
    w.load_preset(str(PRESET_DIR / "mlp-n5m2.json"))  # the settings describe n = 5, a random MLP
    w.files.import_data_from(str(path))
    wait_idle(qtbot, w)
    banner = w.model_panel.source_label
    assert banner.isVisible() and "imported from mine.csv" in banner.text() and "n = 2" in banner.text()
    cfg = tiny_config(steps=10)
    cfg.simulation = w.session.config.simulation
    run_to_end(qtbot, w, cfg)
    record = w.results.records[0]
    data_column = next(i for i, c in enumerate(COLUMNS) if c[0] == "data")
    assert w.results.data(w.results.index(0, data_column)) == "mine.csv n=2"  # not "mlp n=5 m=2"
    row = w.results.to_csv().strip().split("\n")[1]
    assert "imported:mine.csv" in row and record.decoder.n == 2
    w.data_view.redraw()
    assert w.data_view.legend.getLabel(w.data_view.true_curve) is None  # no true model: no "true f" entry
    assert w.data_view.texts._shown["title"] == "Data and learned g_θ"
    generate(qtbot, w, "n1m1-polynomial")
    assert not banner.isVisible()
    w.data_view.redraw()
    assert w.data_view.legend.getLabel(w.data_view.true_curve).text == "true f"


# -------------------------------------------------------------------------------- 8. status and truth
def test_a_finished_run_shows_the_tables_time_no_eta_and_its_final_score(
        qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_fit(*args: Any, **kwargs: Any) -> RunResult:
        result = engine_fit(*args, **kwargs)
        result.wall_time = result.metrics["wall_time"] = 178.0  # e.g. a run that was paused a while
        return result

    monkeypatch.setattr(tasks, "fit", slow_fit)
    w = window
    run_to_end(qtbot, w, tiny_config(steps=20, eval_every=1000))  # held out only at its end
    assert w.session.state == RunState.DONE
    text = w.status.time_label.text()
    assert "ETA" not in text and "2:58" in text, text
    time_column = next(i for i, c in enumerate(COLUMNS) if c[0] == "time (s)")
    assert w.results.data(w.results.index(0, time_column)) == "178.0"
    record = w.results.records[0]
    x, y = w.curves.overlays[record.run_id].final.getData()
    assert list(x) == [20.0] and list(y) == [pytest.approx(record.metrics["heldout_loglik"])]


def test_preset_box_names_a_preset_only_while_the_fields_hold_it(qtbot: Any, window: MainWindow) -> None:
    w = window
    combo = w.model_panel.preset_combo
    w.load_preset(str(PRESET_DIR / "sigmoid-n3m2.json"))
    assert combo.currentText() == "sigmoid-n3m2"
    sigma = w.model_panel.form.fields["sigma"]
    type_into(qtbot, sigma.line, "0.2")
    assert combo.currentIndex() == -1 and combo.placeholderText() == "custom (changed from sigmoid-n3m2)"
    type_into(qtbot, sigma.line, "0.05")  # the preset's value again
    assert combo.currentText() == "sigmoid-n3m2"
    w.close()
    again = open_window(qtbot, w.settings)  # the last settings are the preset's: it is named
    assert again.model_panel.preset_combo.currentText() == "sigmoid-n3m2"
    again.close()


# ---------------------------------------------------------------------------------------- 9. cramped
def test_estimator_names_are_not_cut_off(qtbot: Any, window: MainWindow) -> None:
    window.fit_to_screen(QRect(0, 0, 1280, 800))
    qtbot.wait(50)
    combo = window.estimator_panel.form.fields["name"].combo
    room = combo.style().subControlRect(combo.style().ComplexControl.CC_ComboBox, _combo_option(combo),
                                        combo.style().SubControl.SC_ComboBoxEditField, combo).width()
    for i in range(combo.count()):
        assert combo.fontMetrics().horizontalAdvance(combo.itemText(i)) <= room, combo.itemText(i)
        assert combo.itemData(i, Qt.ItemDataRole.ToolTipRole)  # what it is, in its tooltip
    assert "adaptive Gauss-Hermite" in window.estimator_panel.kind_label.text()


def _combo_option(combo: Any) -> Any:
    from PySide6.QtWidgets import QStyleOptionComboBox

    option = QStyleOptionComboBox()
    option.initFrom(combo)
    return option


# ------------------------------------------------------------------------- 10. Reset and opened runs
def test_reset_clears_samples_the_chosen_point_and_its_posterior(qtbot: Any, window: MainWindow) -> None:
    w = window
    generate(qtbot, w, "n1m1-polynomial", samples=200)
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.samples_view.truth_button.click()
    w.side_tabs.setCurrentWidget(w.samples_view)
    w.data_view.set_selected(3)
    w.posterior_view.set_result(PointPosterior(3, np.zeros(1), np.linspace(-1, 1, 5), np.ones(5), None, "x"))
    qtbot.wait(100)
    assert w.samples_view.samples is not None
    w.reset()
    qtbot.wait(100)
    assert w.samples_view.samples is None and w.data_view.selected is None and w.posterior_view.result is None
    assert w.side_tabs.currentWidget() is w.latent_view
    assert len(w.data_view.chosen.getData()[0]) == 0


def test_an_opened_run_draws_its_g_theta(qtbot: Any, window: MainWindow, tmp_path: Path) -> None:
    w = window
    run_to_end(qtbot, w, tiny_config(steps=10))
    w.files.save_run_to(str(tmp_path / "run1"))
    wait_idle(qtbot, w)
    w.reset()
    assert w.data_view.learned is None
    w.files.open_run_from(str(tmp_path / "run1" / "run.json"))
    wait_idle(qtbot, w)
    opened = w.results.records[-1]
    assert opened.saved is not None and w.session.selected == opened.run_id
    assert w.data_view.learned is not None
    grid, values = w.data_view.learned.shown(aligned=True)
    assert values.shape == (1, latent_grid(1).shape[1], 1) and np.isfinite(values).all()
    assert np.array_equal(grid, latent_grid(1))  # drawn over the true latent grid
    label = w.data_view.legend.getLabel(w.data_view.learned_curve).text
    assert label.startswith(f"g_θ of {opened.name}, aligned (z ↦ ")


# --------------------------------------------------------------------------- a run whose scoring failed
def test_a_run_whose_scoring_failed_says_so_in_the_table_and_the_status(
        qtbot: Any, window: MainWindow, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_score(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("not enough memory for the held-out points")

    monkeypatch.setattr(engine.runs, "score_run", failing_score)
    w = window
    run_to_end(qtbot, w, tiny_config(steps=10))
    record = w.results.records[0]
    assert record.metrics.get("scoring_failed")
    columns = {c[0]: i for i, c in enumerate(COLUMNS)}
    index = w.results.index(0, columns["held-out log-lik"])
    assert w.results.data(index) == "scoring failed"
    assert "not enough memory" in w.results.data(index, Qt.ItemDataRole.ToolTipRole)
    assert w.results.data(w.results.index(0, columns["status"])) == "cap_reached, scoring failed"
    assert "scoring failed" in w.statusBar().currentMessage()
    assert not [b for b in w.findChildren(QMessageBox) if b.isVisible()]  # the run is kept, no dialog


def test_unscored_and_stopped_scorings_read_as_such(qtbot: Any) -> None:
    cfg = tiny_config()
    session = Session(cfg)
    model = ResultsModel(session)
    for run_id, metrics in ((1, {"scored": False, "warnings": ["not scored yet: the scoring was still running"]}),
                            (2, {"scoring_stopped": True, "warnings": ["scoring stopped by the user"]})):
        session.add_record(RunRecord(run_id, "#0072B2", cfg, metrics, _history(), "converged", "converged", ""))
    held = next(i for i, c in enumerate(COLUMNS) if c[0] == "held-out log-lik")
    assert [model.data(model.index(r, held)) for r in range(2)] == ["not scored", "scoring stopped"]
    assert "still running" in model.data(model.index(0, held), Qt.ItemDataRole.ToolTipRole)
    assert QApplication.instance() is not None


def test_fits_are_drawn_aligned_to_the_truth_with_a_toggle_to_see_them_raw(qtbot: Any, window: MainWindow,
                                                                          tmp_path: Path) -> None:
    """Deliver 4: the data, latents and samples views draw the fit through its Procrustes map (said in the
    legend and titles); View → Align fits to the truth off draws it as fitted; the choice is kept."""
    w = window
    run_to_end(qtbot, w, tiny_config(steps=30))
    record = w.results.records[-1]
    view = record.manifold
    assert view is not None and view.latent_map is not None
    label = w.data_view.legend.getLabel(w.data_view.learned_curve).text
    assert f", aligned ({view.latent_map.describe()})" in label
    drawn = w.data_view.learned_curve.getData()[1]
    np.testing.assert_allclose(drawn[np.isfinite(drawn)], view.aligned_values.reshape(-1), rtol=1e-6)

    w.align_action.setChecked(False)  # raw
    qtbot.wait(100)
    assert w.data_view.legend.getLabel(w.data_view.learned_curve).text.endswith(", raw")
    drawn = w.data_view.learned_curve.getData()[1]
    np.testing.assert_allclose(drawn[np.isfinite(drawn)], view.values.reshape(-1), rtol=1e-6)
    assert not w.latent_view.aligned and not w.samples_view.aligned
    assert w.latent_view.inferred_raw is not None and w.latent_view._shown() == (w.latent_view.inferred_raw, "raw")

    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.sample("fit", 50)
    samples = w.samples_view.samples
    assert samples is not None and samples.z_aligned is not None
    np.testing.assert_allclose(samples.z_aligned, view.latent_map.to_truth(samples.z))
    w.samples_view.redraw()
    np.testing.assert_allclose(w.samples_view.sample_scatter.getData()[0], samples.z[:, 0])  # raw: as drawn
    w.align_action.setChecked(True)
    w.samples_view.redraw()
    np.testing.assert_allclose(w.samples_view.sample_scatter.getData()[0], samples.z_aligned[:, 0])
    assert "aligned to the truth" in w.samples_view.texts._shown["title"]

    w.align_action.setChecked(False)
    w.save_settings()
    again = open_window(qtbot, w.settings)
    assert not again.align_action.isChecked() and not again.data_view.aligned
    again.close()
