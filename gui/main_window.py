"""The main window: docks in data-flow order (Model, Estimator, Training), live plots, the results table,
menus, the run controls and the status bar.

One `RunConfig` (self.config) is the state of the settings: each panel edits one of its sections, a run
gets a deep copy, the worker hands it to the engine, and one `RunResult` comes back into the results
table. The engine runs only in the worker thread (gui/worker.py, tasks in gui/tasks.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import QCoreApplication, Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QToolBar,
    QWidget,
)

from engine.config import ConfigError, RunConfig
from engine.storage import atomic_write_text
from engine.trainer import RunResult, resolve_device

from . import dialogs, tasks
from .compat import settle_garbage_collector
from .panels.estimator_panel import EstimatorPanel
from .panels.model_panel import ModelPanel
from .panels.training_panel import TrainingPanel
from .plots.common import RedrawClock, run_colour
from .plots.curves import CurvesView, History
from .plots.data_view import DataView, SamplesView
from .plots.latent_view import LatentView
from .plots.posterior_view import PosteriorView
from .plots.results import ResultsModel, ResultsTable, RunRecord
from .settings import (
    GEOMETRY,
    LAST_CONFIG,
    LAST_DIR,
    LOG_SIGMA,
    PAIR_FIRST,
    PAIR_SECOND,
    SAMPLE_COUNT,
    WINDOW_STATE,
    Settings,
)
from .state import ACTIVE, ENABLED, RunState
from .status import StatusView
from .worker import RunController

APP_NAME = "NLICA Lab"
USER_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"
TASK_TITLES = {"generate": "Generating data", "import": "Importing data", "export_data": "Exporting data",
               "sample": "Sampling", "posterior": "Computing the posterior", "save_run": "Saving the run",
               "open_run": "Opening the run", "warmup": "Starting torch", "train": "Training"}


@dataclass
class LiveRun:
    """The run being trained: its number and colour, and the plot setup from its first snapshot."""

    run_id: int
    colour: str
    setup: dict[str, Any] | None = None
    scoring: bool = False  # training has ended and the held-out points are being scored


def _cuda_reason() -> str | None:
    """Why CUDA cannot be chosen, or None when it can."""
    if resolve_device("auto").type == "cuda":
        return None
    return "CUDA is not available: torch.cuda.is_available() is False (a CPU build of torch, or no GPU)"


def export_svg(widget: QWidget, path: str) -> None:
    """The widget as vector graphics. (pyqtgraph 0.14's SVGExporter cannot parse the paths Qt 6.12 writes.)"""
    generator = QSvgGenerator()
    generator.setFileName(path)
    generator.setSize(widget.size())
    generator.setViewBox(widget.rect())
    generator.setTitle(APP_NAME)
    painter = QPainter(generator)
    try:
        widget.render(painter)
    finally:
        painter.end()
    if not Path(path).exists():
        raise OSError("the SVG file was not written")


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.settings = settings if settings is not None else Settings()
        self.config = self._restored_config()
        self.controller = RunController(self)
        self.state = RunState.IDLE
        self.data: tasks.DataBundle | None = None
        self.results = ResultsModel()
        self.live: LiveRun | None = None
        self.selected_run: int | None = None
        self.problem = ""
        self._next_run_id = 1
        self._sample_seed = 0
        self._closing = False
        self._saved_pair: tuple[int, int] | None = None
        self._cuda_reason = _cuda_reason()

        self._build_panels()
        self._build_plots()
        self._build_actions()
        self._build_menus()
        self.status = StatusView(self.statusBar())
        self.clock = RedrawClock([self.data_view, self.latent_view, self.curves, self.samples_view,
                                  self.posterior_view, self.status], parent=self)
        self.controller.progress.connect(self._on_progress)
        self.controller.failed.connect(self._on_task_failed)
        self.controller.busy_changed.connect(self._on_busy_changed)
        self._restore_view_settings()
        self._on_edited()
        QTimer.singleShot(0, self._warm_up)

    # ---------------------------------------------------------------------------------------- building
    def _build_panels(self) -> None:
        c = self.config
        self.model_panel = ModelPanel(c.simulation)
        self.estimator_panel = EstimatorPanel(c.estimator, lambda: self.config.decoder.m)
        self.training_panel = TrainingPanel(c.decoder, c.training, self._cuda_reason)
        self.forms = [self.model_panel.form, self.estimator_panel.form, self.training_panel.decoder_form,
                      self.training_panel.training_form]
        for panel in (self.model_panel, self.estimator_panel, self.training_panel):
            panel.edited.connect(self._on_edited)
        self.model_panel.preset_requested.connect(self.load_preset)
        self.model_panel.generate_requested.connect(self.generate)
        self.model_panel.import_requested.connect(self.import_data)

        self.docks: dict[str, QDockWidget] = {}
        for key, title, panel in (("model", "1 · Model", self.model_panel),
                                  ("estimator", "2 · Estimator", self.estimator_panel),
                                  ("training", "3 · Training", self.training_panel)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{key}")
            dock.setWidget(_scrolled(panel))
            dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                             | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                             | QDockWidget.DockWidgetFeature.DockWidgetClosable)
            self.docks[key] = dock
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.docks["model"])
        self.splitDockWidget(self.docks["model"], self.docks["training"], Qt.Orientation.Horizontal)
        self.splitDockWidget(self.docks["model"], self.docks["estimator"], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["model"], self.docks["training"]], [330, 330], Qt.Orientation.Horizontal)

    def _build_plots(self) -> None:
        self.data_view = DataView()
        self.data_view.point_clicked.connect(self._on_point_clicked)
        self.latent_view = LatentView()
        self.curves = CurvesView()
        self.samples_view = SamplesView(self.data_view.pairs)
        self.samples_view.sample_requested.connect(self.sample)
        self.posterior_view = PosteriorView()
        self.posterior_view.compute_requested.connect(self.compute_posterior)
        self.posterior_view.index_changed.connect(self.data_view.set_selected)
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(self.latent_view, "Latents")
        self.side_tabs.addTab(self.samples_view, "Samples")
        self.side_tabs.addTab(self.posterior_view, "Posterior")
        self.top_plots = QSplitter(Qt.Orientation.Horizontal)
        self.top_plots.addWidget(self.data_view)
        self.top_plots.addWidget(self.side_tabs)
        central = QSplitter(Qt.Orientation.Vertical)
        central.addWidget(self.top_plots)
        central.addWidget(self.curves)
        central.setSizes([480, 520])
        self.setCentralWidget(central)

        self.results_table = ResultsTable(self.results)
        self.results_table.run_selected.connect(self._on_run_selected)
        self.results.overlay_toggled.connect(self._on_overlay_toggled)
        dock = QDockWidget("Results", self)
        dock.setObjectName("dock_results")
        dock.setWidget(self.results_table)
        self.docks["results"] = dock
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resizeDocks([dock], [170], Qt.Orientation.Vertical)

    def _action(self, text: str, slot: Callable[[], Any], shortcut: str | QKeySequence.StandardKey = "",
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(tip or text)
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        self.start_action = self._action("Start", self.start, "Ctrl+R", "Start a new run with these settings")
        self.pause_action = self._action("Pause", self.toggle_pause, "Ctrl+P", "Pause or resume the run")
        self.step_action = self._action("Step", self.step, "Ctrl+T",
                                        "One optimiser step, then pause (starts a paused run if none)")
        self.stop_action = self._action("Stop", self.stop, "Ctrl+.",
                                        "Stop the run; it is scored and kept in the results table (Stop "
                                        "during the scoring ends it; the trained run is kept)")
        self.reset_action = self._action("Reset", self.reset, "", "Clear the live plots")
        self.run_actions = {"start": self.start_action, "pause": self.pause_action, "step": self.step_action,
                            "stop": self.stop_action, "reset": self.reset_action}
        bar = QToolBar("Run")
        bar.setObjectName("toolbar_run")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in self.run_actions.values():
            bar.addAction(action)
        bar.addSeparator()
        self.problem_label = QLabel()
        self.problem_label.setStyleSheet("color: #c62828; padding-left: 8px;")
        self.problem_label.setWordWrap(True)
        bar.addWidget(self.problem_label)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def _build_menus(self) -> None:
        files = self.menuBar().addMenu("&File")
        self.file_actions = {
            "open_config": self._action("Open config…", self.open_config, QKeySequence.StandardKey.Open),
            "save_config": self._action("Save config…", self.save_config, QKeySequence.StandardKey.Save),
            "import_data": self._action("Import data (CSV/NPZ)…", self.import_data),
            "export_data": self._action("Export data (CSV/NPZ)…", self.export_data),
            "open_run": self._action("Open run…", self.open_run, "",
                                     "Open a run folder saved by NLICA Lab (run.json + safetensors)"),
            "save_run": self._action("Save run…", self.save_run, "", "Save the selected run as a folder"),
            "export_results": self._action("Export results table (CSV)…", self.export_results),
        }
        for key in ("open_config", "save_config", None, "import_data", "export_data", None, "open_run",
                    "save_run", None):
            if key is None:
                files.addSeparator()
            else:
                files.addAction(self.file_actions[key])
        plots = files.addMenu("Export plot (PNG/SVG)")
        for title, widget in (("Data view…", self.data_view.widget), ("Latent view…", self.latent_view.widget),
                              ("Training curves…", self.curves.glw), ("Samples…", self.samples_view.widget),
                              ("Posterior…", self.posterior_view.stack)):
            plots.addAction(self._action(title, lambda _checked=False, w=widget, t=title:
                                         self.export_plot(w, t.rstrip("…"))))
        files.addAction(self.file_actions["export_results"])
        files.addSeparator()
        files.addAction(self._action("Quit", self.close, QKeySequence.StandardKey.Quit))
        run = self.menuBar().addMenu("&Run")
        for action in self.run_actions.values():
            run.addAction(action)
        view = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        helpm = self.menuBar().addMenu("&Help")
        helpm.addAction(self._action("User guide", self._show_guide))
        helpm.addAction(self._action("About", self._about))

    # ---------------------------------------------------------------------------------------- settings
    def _restored_config(self) -> RunConfig:
        text = self.settings.get_str(LAST_CONFIG)
        if text:
            try:
                return RunConfig.from_json(text)
            except ConfigError:
                pass
        return RunConfig()

    def _restore_view_settings(self) -> None:
        geometry = self.settings.get_bytes(GEOMETRY)
        if geometry.isEmpty():
            self.resize(1680, 1020)
        else:
            self.restoreGeometry(geometry)
        state = self.settings.get_bytes(WINDOW_STATE)
        if not state.isEmpty():
            self.restoreState(state)
        self.samples_view.count.setValue(self.settings.get_int(SAMPLE_COUNT, 1000))
        self.curves.log_sigma.setChecked(self.settings.get_bool(LOG_SIGMA, False))
        self._saved_pair = (self.settings.get_int(PAIR_FIRST, 0), self.settings.get_int(PAIR_SECOND, 1))

    def save_settings(self) -> None:
        s = self.settings
        s.set(GEOMETRY, self.saveGeometry())
        s.set(WINDOW_STATE, self.saveState())
        s.set(LAST_CONFIG, self.config.to_json())
        s.set(SAMPLE_COUNT, self.samples_view.count.value())
        s.set(LOG_SIGMA, self.curves.log_sigma.isChecked())
        first, second = self.data_view.pairs.pair()
        s.set(PAIR_FIRST, first)
        s.set(PAIR_SECOND, second)
        s.sync()

    def _last_dir(self) -> str:
        return self.settings.get_str(LAST_DIR, str(Path.home()))

    def _remember_dir(self, path: str) -> None:
        p = Path(path)
        self.settings.set(LAST_DIR, str(p if p.is_dir() else p.parent))

    # -------------------------------------------------------------------------------------- validation
    @Slot()
    def _on_edited(self) -> None:
        self.problem = self._validate()
        self.estimator_panel.show_defaults()  # the automatic nodes follow the fitted m
        self.problem_label.setText(f"Cannot start: {self.problem}" if self.problem else "")
        self._update_data_label()
        device = self.config.training.device
        self.status.set_device(resolve_device("auto").type if device == "auto" else device)
        self._update_controls()

    def _validate(self) -> str:
        """Show every problem at its field; return the first one ('' when the settings are valid)."""
        problems = [f"{path}: {msg}" for form in self.forms for path, msg in form.parse_problems()]
        err: ConfigError | None = None
        try:
            self.config.validate()
        except ConfigError as exc:
            err = exc
        for form in self.forms:
            form.show_config_error(err)
        if err is not None:
            problems.append(str(err))
        return problems[0] if problems else ""

    def _simulation_problem(self) -> str:
        problems = [f"{p}: {m}" for p, m in self.model_panel.form.parse_problems()]
        try:
            self.config.simulation.validate()
        except ConfigError as exc:
            problems.append(str(exc))
        return problems[0] if problems else ""

    def _data_stale(self) -> bool:
        """Simulated data drawn with other settings than the current ones (imported data never is)."""
        if self.data is None:
            return True
        return self.data.simulation is not None and self.data.simulation != self.config.simulation

    def _update_data_label(self) -> None:
        if self.data is None:
            self.model_panel.set_data_text("No data yet: Generate, or Start (which generates first).", False)
        else:
            self.model_panel.set_data_text(self.data.summary, self._data_stale())

    # ------------------------------------------------------------------------------ state and controls
    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.status.set_state(state)
        self._update_controls()

    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self._update_controls()

    def _update_controls(self) -> None:
        busy = self.controller.busy
        enabled = ENABLED[self.state]
        can_start = not busy and not self.problem
        self.start_action.setEnabled("start" in enabled and can_start)
        self.step_action.setEnabled("step" in enabled and (self.state == RunState.PAUSED or can_start))
        self.pause_action.setEnabled("pause" in enabled)
        self.pause_action.setText("Resume" if self.state == RunState.PAUSED else "Pause")
        self.stop_action.setEnabled("stop" in enabled)
        self.reset_action.setEnabled("reset" in enabled and not busy)
        self.model_panel.set_busy(busy)
        record = self._selected_record()
        truth = self.data is not None and self.data.dataset.truth is not None
        self.samples_view.set_enabled(record is not None and not busy, truth and not busy)
        if record is None:
            self.posterior_view.set_available(False, "Train or open a run first (it is chosen in the results "
                                                     "table).")
        elif record.decoder.m > 2:
            self.posterior_view.set_available(False, f"The posterior grid needs m ≤ 2 (this run: "
                                                     f"m = {record.decoder.m}).")
        else:
            self.posterior_view.set_available(not busy and self.data is not None, "")
        fa = self.file_actions
        for key in ("import_data", "open_run"):
            fa[key].setEnabled(not busy)
        fa["export_data"].setEnabled(not busy and self.data is not None)
        fa["save_run"].setEnabled(not busy and record is not None and record.result is not None)
        fa["export_results"].setEnabled(bool(self.results.records))

    # ------------------------------------------------------------------------------------- run control
    @Slot()
    def start(self) -> None:
        self._start_run(paused=False)

    def _start_run(self, paused: bool) -> None:
        """A new run with a deep copy of the settings; `paused`: it waits before its first step."""
        if self.problem:
            self.statusBar().showMessage(f"Cannot start: {self.problem}", 8000)
            return
        if self.controller.busy or self.state in ACTIVE:
            return
        config = copy.deepcopy(self.config)
        data = None if self._data_stale() else self.data
        run_id, self._next_run_id = self._next_run_id, self._next_run_id + 1
        colour = run_colour(run_id - 1).name()
        self.live = LiveRun(run_id, colour)
        self.curves.start_live(colour, "", config.training.steps)
        self.data_view.set_learned(None, None)
        self.data_view.set_learned_colour(colour)
        self.latent_view.set_colour(colour)
        self.status.start(config.training.steps, config.training.time_limit)
        self.controller.start("train", tasks.train(config, data), self._on_trained, paused=paused)
        self._set_state(RunState.PAUSED if paused else RunState.RUNNING)
        self.statusBar().showMessage(f"Run #{run_id}: {config.estimator.name}", 4000)

    @Slot()
    def toggle_pause(self) -> None:
        if self.state == RunState.RUNNING:
            self.controller.pause()
            self._set_state(RunState.PAUSED)
        elif self.state == RunState.PAUSED:
            self.controller.resume()
            self._set_state(RunState.RUNNING)

    @Slot()
    def step(self) -> None:
        if self.state == RunState.PAUSED:
            self.controller.step_once()
        elif "step" in ENABLED[self.state] and not self.controller.busy:
            self._start_run(paused=True)
            if self.state == RunState.PAUSED:
                self.controller.step_once()

    @Slot()
    def stop(self) -> None:
        """Stop training (the run is then scored), or the scoring (the trained run is kept)."""
        if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.SCORING):
            self.controller.stop()
            self._set_state(RunState.STOPPING)

    @Slot()
    def reset(self) -> None:
        self.data_view.set_learned(None, None)
        self.latent_view.set_true(self.data.z_shown if self.data is not None else None, "")
        self.curves.end_live()
        self.status.start(0)
        self._set_state(RunState.IDLE)

    @Slot(object)
    def _on_progress(self, info: dict[str, Any]) -> None:
        phase = info.get("phase")
        if phase == "data":
            self._set_data(info["data"])
            return
        live = self.live
        if phase == "evaluating" and live is not None and not live.scoring:
            live.scoring = True  # Stop now stops the scoring, even after a Stop that ended the training
            if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING) and not self._closing:
                self._set_state(RunState.SCORING)
        if phase is not None:  # "paused" or "evaluating"
            self.status.set_progress(info)
            return
        if live is None:
            return
        setup = info.get("setup")
        if live.setup is None and setup is not None:
            live.setup = setup
            self.latent_view.set_true(setup["z_true_shown"], setup["estimator"])
            self.curves.set_objective_label(setup["objective_label"])
        if "manifold" in info:  # a plot snapshot (a few a second; the curves get every progress dict)
            self.data_view.set_learned(live.setup["grid"] if live.setup is not None else None, info["manifold"])
            self.latent_view.set_inferred(info["latents"])
        self.curves.add_rows(info.get("history_rows", []))
        fraction = info.get("fraction", 0.0)
        if info.get("time_limit") is not None and fraction > 0:
            self.curves.expect_steps(info["step"] / fraction)
        self.status.set_progress(info)

    def _on_trained(self, result: RunResult) -> None:
        live = self.live
        self.live = None
        if live is None:
            return
        record = RunRecord(live.run_id, live.colour, result.config, result.metrics,
                           History.from_rows(result.history), result.status, result.message,
                           self.data.summary if self.data is not None else "", result=result)
        self._add_record(record)
        self.curves.set_true_loglik(result.metrics.get("true_heldout_loglik"))
        self.status.set_progress({"step": result.steps_done, "phase": ""})
        warnings = result.metrics.get("warnings", [])
        note = f"Run #{record.run_id} {result.status}: {result.message}"
        if result.metrics.get("scoring_stopped"):
            note += "; its scoring was stopped (no held-out metrics)"
        self.statusBar().showMessage(note + (f" — {warnings[0]}" if warnings else ""), 15000)
        if result.status == "failed":
            self._fail(f"Run #{record.run_id} failed", result.message, "\n".join(warnings))
        else:
            self._set_state(RunState.DONE)

    def _add_record(self, record: RunRecord) -> None:
        self.results.add(record)
        self.curves.end_live()
        self.curves.set_overlay(record.run_id, record.history, record.colour, record.name, record.checked)
        self.results_table.select_run(record.run_id)
        self.selected_run = record.run_id
        self._update_controls()

    @Slot(str, str)
    def _on_task_failed(self, message: str, details: str) -> None:
        kind = self.controller.kind
        title = f"{TASK_TITLES.get(kind, kind)} failed"
        if kind == "train":
            self.live = None
            self.curves.end_live()
            self._fail(title, message, details)
        elif kind == "warmup":
            self.statusBar().showMessage(f"{title}: {message}", 10000)
        else:
            self._show_error(title, message, details)

    def _fail(self, title: str, message: str, details: str) -> None:
        """A run failed: FAILED while the error is on screen, then IDLE."""
        self._set_state(RunState.FAILED)
        box = self._show_error(title, message, details)
        if box is None:
            self._set_state(RunState.IDLE)
        else:
            box.finished.connect(self._after_error)

    def _show_error(self, title: str, message: str, details: str = "") -> QMessageBox | None:
        if self._closing:
            return None
        return dialogs.show_error(self, title, message, details)

    @Slot()
    def _after_error(self) -> None:
        if self.state == RunState.FAILED:
            self._set_state(RunState.IDLE)

    @Slot()
    def _warm_up(self) -> None:
        if not self.controller.busy:
            self.statusBar().showMessage("Starting torch…")
            self.controller.start("warmup", tasks.warm_up, self._on_warm)

    def _on_warm(self, result: None) -> None:
        settle_garbage_collector()
        self.statusBar().showMessage("Ready", 3000)

    # --------------------------------------------------------------------------------------- the data
    def _set_data(self, bundle: tasks.DataBundle) -> None:
        self.data = bundle
        self.data_view.set_data(bundle)
        if self._saved_pair is not None:
            self.data_view.pairs.set_pair(*self._saved_pair)
            self._saved_pair = None
        self.samples_view.set_data(bundle)
        self.posterior_view.set_point_count(len(bundle.dataset))
        self.posterior_view.set_result(None)
        truth = bundle.dataset.truth
        self.curves.set_true_sigma(truth.noise_sigma if truth is not None and truth.sigma_identified else None)
        self.curves.set_true_loglik(None)
        if self.live is None:
            self.latent_view.set_true(bundle.z_shown, "")
            self.data_view.set_learned(None, None)
        self._update_data_label()
        self._update_controls()

    @Slot()
    def generate(self) -> None:
        problem = self._simulation_problem()
        if problem:
            self.statusBar().showMessage(f"Cannot generate: {problem}", 8000)
            return
        if not self.controller.busy:
            self.controller.start("generate", tasks.generate(copy.deepcopy(self.config.simulation)),
                                  self._set_data)
            self._update_controls()

    @Slot()
    def import_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import data", self._last_dir(),
                                              "Data files (*.csv *.npz);;All files (*)")
        if path:
            self.import_data_from(path)

    def import_data_from(self, path: str) -> None:
        if self.controller.busy:
            return
        self._remember_dir(path)
        self.controller.start("import", tasks.import_data(path), self._set_data)

    @Slot()
    def export_data(self) -> None:
        if self.data is None:
            return
        path, chosen = QFileDialog.getSaveFileName(self, "Export data", str(Path(self._last_dir()) / "data.npz"),
                                                   "NumPy archive (*.npz);;CSV (*.csv)")
        if path:
            if Path(path).suffix.lower() not in (".npz", ".csv"):
                path += ".csv" if "csv" in chosen.lower() else ".npz"
            self.export_data_to(path)

    def export_data_to(self, path: str) -> None:
        if self.data is None or self.controller.busy:
            return
        self._remember_dir(path)
        self.controller.start("export_data", tasks.export_data(path, self.data.dataset),
                              lambda p: self.statusBar().showMessage(f"Data saved to {p}", 8000))

    # ----------------------------------------------------------------------------------- selected run
    def _selected_record(self) -> RunRecord | None:
        return None if self.selected_run is None else self.results.record(self.selected_run)

    @Slot(int)
    def _on_run_selected(self, run_id: int) -> None:
        self.selected_run = run_id
        self._update_controls()

    @Slot(int, bool)
    def _on_overlay_toggled(self, run_id: int, on: bool) -> None:
        record = self.results.record(run_id)
        if record is not None:
            self.curves.set_overlay(run_id, record.history, record.colour, record.name, on)

    @Slot(int)
    def _on_point_clicked(self, index: int) -> None:
        self.posterior_view.set_index(index)
        self.side_tabs.setCurrentWidget(self.posterior_view)

    @Slot(str, int)
    def sample(self, source: str, count: int) -> None:
        if self.controller.busy:
            return
        self._sample_seed += 1
        if source == "truth":
            if self.data is None or self.data.dataset.truth is None:
                return
            model, label = self.data.dataset.truth, "Samples from the true model"
        else:
            record = self._selected_record()
            if record is None:
                return
            model, label = record.decoder, f"Samples from run {record.name}"
        self.controller.start("sample", tasks.sample(model, count, self._sample_seed, label),
                              self.samples_view.set_samples)

    @Slot(int)
    def compute_posterior(self, index: int) -> None:
        record = self._selected_record()
        if record is None or self.data is None or self.controller.busy:
            return
        if record.decoder.n != self.data.dataset.n:
            self._show_error("Posterior", f"Run {record.name} models n = {record.decoder.n} coordinates but the "
                                          f"data have n = {self.data.dataset.n}.")
            return
        x = self.data.dataset.x[index]
        self.data_view.set_selected(index)
        self.controller.start("posterior", tasks.posterior(record.decoder, record.encoder, x, index,
                                                           f"run {record.name}"),
                              self.posterior_view.set_result)

    # ------------------------------------------------------------------------------------------ files
    def apply_config(self, config: RunConfig) -> None:
        """Show another config in the panels (after a preset or a config file)."""
        self.config = config
        self.model_panel.bind(config.simulation)
        self.estimator_panel.bind(config.estimator)
        self.training_panel.bind(config.decoder, config.training)
        self._on_edited()

    def _read_config(self, path: str) -> RunConfig | None:
        try:
            return RunConfig.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            self._show_error("Cannot open the config", f"{path}: {exc}")
        except ConfigError as exc:
            self._show_error("Cannot open the config", f"{Path(path).name}: {exc}")
        return None

    @Slot(str)
    def load_preset(self, path: str) -> None:
        config = self._read_config(path)
        if config is not None:
            self.apply_config(config)
            self.model_panel.show_preset(Path(path).stem)
            self.statusBar().showMessage(f"{Path(path).stem} loaded", 5000)

    @Slot()
    def open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open config", self._last_dir(), "Run config (*.json)")
        if path:
            self._remember_dir(path)
            self.load_preset(path)

    @Slot()
    def save_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save config", str(Path(self._last_dir()) / "config.json"),
                                              "Run config (*.json)")
        if path:
            self.save_config_to(path if path.endswith(".json") else path + ".json")

    def save_config_to(self, path: str) -> None:
        self._remember_dir(path)
        try:
            atomic_write_text(path, self.config.to_json())
        except OSError as exc:
            self._show_error("Cannot save the config", f"{path}: {exc}")
            return
        self.statusBar().showMessage(f"Config saved to {path}", 6000)

    @Slot()
    def open_run(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open run (run.json in a run folder)", self._last_dir(),
                                              "NLICA Lab run (run.json);;All files (*)")
        if path:
            self.open_run_from(path)

    def open_run_from(self, path: str) -> None:
        if self.controller.busy:
            return
        self._remember_dir(path)
        self.controller.start("open_run", tasks.open_run(path), self._on_run_opened)

    def _on_run_opened(self, opened: tasks.OpenedRun) -> None:
        saved = opened.saved
        run_id, self._next_run_id = self._next_run_id, self._next_run_id + 1
        record = RunRecord(run_id, run_colour(run_id - 1).name(), saved.config, saved.metrics,
                           History.from_rows(opened.history), str(saved.info.get("status", "done")),
                           str(saved.info.get("message", "")), f"opened from {saved.path}", saved=saved)
        self._add_record(record)
        self.statusBar().showMessage(f"Opened {saved.path} as run #{run_id}", 8000)

    @Slot()
    def save_run(self) -> None:
        record = self._selected_record()
        if record is None or record.result is None:
            return
        default = Path(self._last_dir()) / f"run-{record.run_id}-{record.estimator}"
        path, _ = QFileDialog.getSaveFileName(self, "Save run as a folder", str(default), "Run folder (*)")
        if path:
            self.save_run_to(path)

    def save_run_to(self, path: str) -> None:
        record = self._selected_record()
        if record is None or record.result is None or self.controller.busy:
            return
        self._remember_dir(str(Path(path).parent))
        self.controller.start("save_run", tasks.save_trained_run(record.result, path),
                              lambda p: self.statusBar().showMessage(f"Run saved to {p}", 8000))

    def export_plot(self, widget: QWidget, title: str) -> None:
        name = title.lower().replace(" ", "-")
        path, chosen = QFileDialog.getSaveFileName(self, f"Export {title}", str(Path(self._last_dir()) / name),
                                                   "PNG image (*.png);;SVG image (*.svg)")
        if path:
            if Path(path).suffix.lower() not in (".png", ".svg"):
                path += ".svg" if "svg" in chosen.lower() else ".png"
            self.export_plot_to(widget, path)

    def export_plot_to(self, widget: QWidget, path: str) -> None:
        """PNG (pyqtgraph's ImageExporter) or SVG (QSvgGenerator) of a plot widget, by suffix."""
        self._remember_dir(path)
        if isinstance(widget, QStackedWidget):  # the posterior: the page on show
            widget = widget.currentWidget()
        try:
            if path.lower().endswith(".svg"):
                export_svg(widget, path)
            else:
                item = widget.getPlotItem() if isinstance(widget, pg.PlotWidget) else widget.ci
                pg.exporters.ImageExporter(item).export(fileName=path)
        except OSError as exc:
            self._show_error("Cannot export the plot", f"{path}: {exc}")
            return
        self.statusBar().showMessage(f"Plot saved to {path}", 6000)

    @Slot()
    def export_results(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export results", str(Path(self._last_dir()) / "results.csv"),
                                              "CSV (*.csv)")
        if path:
            self.export_results_to(path if path.endswith(".csv") else path + ".csv")

    def export_results_to(self, path: str) -> None:
        self._remember_dir(path)
        try:
            atomic_write_text(path, self.results.to_csv())
        except OSError as exc:
            self._show_error("Cannot export the results", f"{path}: {exc}")
            return
        self.statusBar().showMessage(f"Results saved to {path}", 6000)

    def _show_guide(self) -> None:
        if not (USER_GUIDE.exists() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(USER_GUIDE)))):
            QMessageBox.information(self, "User guide", f"The user guide is docs/user-guide.md ({USER_GUIDE})")

    def _about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"{APP_NAME}: maximum-likelihood learning of the nonlinear ICA model X = f(Z) + ε, "
                          "by direct MLE and by VAEs.")

    # ----------------------------------------------------------------------------------------- closing
    def shutdown(self) -> None:
        """Stop any task and join its thread; a run stopped here (in training or in scoring) is kept in the
        table, unscored or partly scored."""
        if self.controller.busy:
            if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.SCORING):
                self._set_state(RunState.STOPPING)
            self.controller.shutdown()
        QCoreApplication.processEvents()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._closing = True
        self.shutdown()
        self.clock.timer.stop()
        self.save_settings()
        super().closeEvent(event)
