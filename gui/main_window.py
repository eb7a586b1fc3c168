"""The main window: docks in data-flow order (Model, Estimator, Training), live plots, the results table,
menus, the run controls and the status bar.

One `RunConfig` (self.session.config) is the state of the settings: each panel edits one of its sections, a run
gets a deep copy, the worker hands it to the engine, and one `RunResult` comes back into the results
table. The engine runs only in the worker thread (gui/worker.py, tasks in gui/tasks.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QRect, QSize, Qt, QTimer, QUrl, Slot
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QGuiApplication,
    QKeySequence,
    QResizeEvent,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from engine.config import ConfigError, RunConfig
from engine.estimator_table import objective_label
from engine.progress import ScoringProgress, TrainingProgress
from engine.trainer import resolve_device

from . import dialogs, tasks
from .collector import settle_garbage_collector
from .files import FileActions
from .panels.estimator_panel import EstimatorPanel
from .panels.fields import config_message
from .panels.model_panel import ModelPanel, preset_files
from .panels.training_panel import TrainingPanel
from .plots.common import RedrawClock
from .plots.comparison import ComparisonChart, SelectMDialog
from .plots.curves import OPEN_RANGE, CurvesView
from .plots.data_view import DataView, SamplesView
from .plots.latent_view import LatentView
from .plots.posterior_view import PosteriorView
from .plots.results import ResultsModel, ResultsTable, scoring_note
from .session import RunRecord, Session
from .settings import (
    ALIGN_FITS,
    GEOMETRY,
    LAST_CONFIG,
    LOG_SIGMA,
    PAIR_FIRST,
    PAIR_SECOND,
    SAMPLE_COUNT,
    WINDOW_FRAME,
    WINDOW_STATE,
    Settings,
)
from .state import ACTIVE, ENABLED, RunState
from .status import StatusView
from .tasks import Paused
from .worker import RunController

APP_NAME = "NLICA Lab"
USER_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"
TASK_TITLES = {"generate": "Generating data", "import": "Importing data", "export_data": "Exporting data",
               "sample": "Sampling", "posterior": "Computing the posterior", "save_run": "Saving the run",
               "open_run": "Opening the run", "warmup": "Starting torch", "train": "Training",
               "select_m": "Choosing m"}
MAX_SELECT_M = 6  # "Choose m from the data" fits m = 1..min(n - 1, this), as select-m does
PANEL_TITLES = ("Model", "Estimator", "Training", "Training")  # of the forms, in the order of self.forms
PREFERRED_SIZE = QSize(1680, 1020)  # the window's first size on a screen with room for it
SCREEN_SHARE = 0.94  # of the screen's free area the first window takes at most (its frame needs the rest)


def _cuda_reason() -> str | None:
    """Why CUDA cannot be chosen, or None when it can."""
    if resolve_device("auto").type == "cuda":
        return None
    return "CUDA is not available: torch.cuda.is_available() is False (a CPU build of torch, or no GPU)"


def initial_geometry(available: QRect, preferred: QSize = PREFERRED_SIZE) -> QRect:
    """The first window rectangle on a screen whose free area is `available`: the preferred size, or a
    share of that area where it is smaller, centred in it."""
    width = min(preferred.width(), round(SCREEN_SHARE * available.width()))
    height = min(preferred.height(), round(SCREEN_SHARE * available.height()))
    rect = QRect(0, 0, width, height)
    rect.moveCenter(available.center())
    return rect


def fits_a_screen(frame: QRect) -> bool:
    """Whether the window rectangle `frame` (decorations included) lies inside one screen's free area now."""
    screen = QGuiApplication.screenAt(frame.center())
    return screen is not None and frame.isValid() and screen.availableGeometry().contains(frame)


class ElidedLabel(QLabel):
    """One line of text, cut with "…" to the width the label gets; it never asks for more room than a
    short line, so a long message cannot grow the toolbar it is in. The whole text is `full_text()`."""

    def __init__(self) -> None:
        super().__init__()
        self._full = ""
        self.setWordWrap(False)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def sizeHint(self) -> QSize:
        return QSize(min(self.fontMetrics().horizontalAdvance(self._full) + 8, 480), self.fontMetrics().height() + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(40, self.fontMetrics().height() + 4)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        room = max(0, self.contentsRect().width())
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, room)
        if shown != self.text():
            self.setText(shown)


def _scrolled(widget: QWidget) -> QScrollArea:
    """The panel in a scroll area: on a small screen the dock scrolls rather than cutting its fields off."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    return area


def _panel_width(dock: QDockWidget) -> int:
    """The width at which a dock shows its panel whole, a vertical scroll bar beside it."""
    area = dock.widget()
    assert isinstance(area, QScrollArea)
    return area.widget().minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.settings = settings if settings is not None else Settings()
        self.session = Session(self._restored_config())
        self.controller = RunController(self)
        self.results = ResultsModel(self.session)
        self.problem = ""  # why Start is refused, in the panels' words ('' when it is not)
        self.problem_detail = ""  # the same with the config's field names
        self._preset: tuple[str, RunConfig] | None = None  # the preset loaded last, as loaded
        self._closing = False
        self._saved_pair: tuple[int, int] | None = None
        self._shown_once = False
        self._cuda_reason = _cuda_reason()
        self.select_m_dialog: SelectMDialog | None = None

        self.files = FileActions(self)
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
        self.session.subscribe(self._on_session)
        self._restore_view_settings()
        self._preset = self._matching_preset()
        self._on_edited()
        QTimer.singleShot(0, self._warm_up)

    # ---------------------------------------------------------------------------------------- building
    def _build_panels(self) -> None:
        c = self.session.config
        self.model_panel = ModelPanel(c.simulation)
        self.estimator_panel = EstimatorPanel(c.estimator, lambda: self.session.config.decoder.m)
        self.training_panel = TrainingPanel(c.decoder, c.training, self._cuda_reason)
        self.forms = [self.model_panel.form, self.estimator_panel.form, self.training_panel.decoder_form,
                      self.training_panel.training_form]
        for panel in (self.model_panel, self.estimator_panel, self.training_panel):
            panel.edited.connect(self._on_edited)
        self.model_panel.preset_requested.connect(self.load_preset)
        self.model_panel.generate_requested.connect(self.generate)
        self.model_panel.import_requested.connect(self.files.import_data)
        self.training_panel.decoder_form.fields["m"].edited.connect(self._on_m_edited)

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
        self.top_plots.setSizes([500, 500])
        central = QSplitter(Qt.Orientation.Vertical)
        central.addWidget(self.top_plots)
        central.addWidget(self.curves)
        central.setSizes([540, 460])
        self.setCentralWidget(central)

        self.results_table = ResultsTable(self.results)
        self.results_table.run_selected.connect(self._on_run_selected)
        self.results.overlay_toggled.connect(self._on_overlay_toggled)
        self.comparison = ComparisonChart()
        self.side_tabs.addTab(self.comparison, "Compare")
        results_area = QWidget()
        results_layout = QVBoxLayout(results_area)
        results_layout.setContentsMargins(0, 0, 0, 0)
        results_layout.setSpacing(2)
        results_layout.addWidget(self.comparison.summary)  # the true model's held-out log-likelihood
        results_layout.addWidget(self.results_table, 1)
        dock = QDockWidget("Results", self)
        dock.setObjectName("dock_results")
        dock.setWidget(results_area)
        self.docks["results"] = dock
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resizeDocks([dock], [170], Qt.Orientation.Vertical)

    def make_action(self, text: str, slot: Callable[[], Any], shortcut: str | QKeySequence.StandardKey = "",
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(tip or text)
        action.setStatusTip(tip or text)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        self.start_action = self.make_action("Start", self.start, "Ctrl+R", "Start a new run with these settings")
        self.pause_action = self.make_action("Pause", self.toggle_pause, "Ctrl+P", "Pause or resume the run")
        self.step_action = self.make_action("Step", self.step, "Ctrl+T",
                                        "One optimiser step, then pause (starts a paused run if none)")
        self.stop_action = self.make_action("Stop", self.stop, "Ctrl+.",
                                        "Stop the run; it is scored and kept in the results table (Stop "
                                        "during the scoring ends it; the trained run is kept)")
        self.reset_action = self.make_action("Reset", self.reset, "", "Clear the live plots")
        self.choose_m_action = self.make_action(
            "Choose m from the data", self.choose_m, "Ctrl+M",
            f"Fit m = 1..min(n - 1, {MAX_SELECT_M}) on the data in use (direct MLE: adaptive quadrature up to m = 3, "
            "importance sampling above), keep every run, and set m to the smallest within one paired standard "
            "error of the best held-out log-likelihood (Stop ends the series)")
        self.align_action = QAction("Align fits to the truth", self)
        self.align_action.setCheckable(True)
        self.align_action.setChecked(True)
        self.align_action.setStatusTip("The latents are identified only up to rotation: draw each fit's g_θ, "
                                       "latents and samples through the Procrustes map of its latents onto the "
                                       "true ones (unchecked: as fitted)")
        self.align_action.toggled.connect(self.set_aligned)
        self.run_actions = {"start": self.start_action, "pause": self.pause_action, "step": self.step_action,
                            "stop": self.stop_action, "reset": self.reset_action}
        bar = QToolBar("Run")
        bar.setObjectName("toolbar_run")
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in self.run_actions.values():
            bar.addAction(action)
        bar.addSeparator()
        bar.addAction(self.choose_m_action)
        bar.addSeparator()
        self.problem_label = ElidedLabel()  # one line, whatever the message: the panels never move
        self.problem_label.setStyleSheet("color: #c62828; padding-left: 8px;")
        bar.addWidget(self.problem_label)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)

    def set_aligned(self, aligned: bool) -> None:
        """Draw fits through their Procrustes map onto the true latents (True) or as fitted."""
        for view in (self.data_view, self.latent_view, self.samples_view):
            view.set_aligned(aligned)

    def _build_menus(self) -> None:
        files = self.menuBar().addMenu("&File")
        for key in ("open_config", "save_config", None, "import_data", "export_data", None, "open_run",
                    "save_run", None):
            if key is None:
                files.addSeparator()
            else:
                files.addAction(self.files.actions[key])
        plots = files.addMenu("Export plot (PNG/SVG)")
        for title, widget in (("Data view…", self.data_view.widget), ("Latent view…", self.latent_view.widget),
                              ("Training curves…", self.curves.glw), ("Samples…", self.samples_view.widget),
                              ("Posterior…", self.posterior_view.stack)):
            plots.addAction(self.make_action(title, lambda _checked=False, w=widget, t=title:
                                         self.files.export_plot(w, t.rstrip("…"))))
        files.addAction(self.files.actions["export_results"])
        files.addSeparator()
        files.addAction(self.make_action("Quit", self.close, QKeySequence.StandardKey.Quit))
        run = self.menuBar().addMenu("&Run")
        for action in self.run_actions.values():
            run.addAction(action)
        run.addSeparator()
        run.addAction(self.choose_m_action)
        view = self.menuBar().addMenu("&View")
        view.addAction(self.align_action)
        view.addSeparator()
        for dock in self.docks.values():
            view.addAction(dock.toggleViewAction())
        helpm = self.menuBar().addMenu("&Help")
        helpm.addAction(self.make_action("User guide", self._show_guide))
        helpm.addAction(self.make_action("About", self._about))

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
        """The saved window geometry and dock layout, only if the saved window fits a screen as it is now;
        else a size from the screen's free area."""
        geometry = self.settings.get_bytes(GEOMETRY)
        state = self.settings.get_bytes(WINDOW_STATE)
        if not geometry.isEmpty() and fits_a_screen(self.settings.get_rect(WINDOW_FRAME)):
            self.restoreGeometry(geometry)
            if not state.isEmpty():
                self.restoreState(state)
        else:
            self.fit_to_screen()
        self.samples_view.count.setValue(self.settings.get_int(SAMPLE_COUNT, 1000))
        self.curves.log_sigma.setChecked(self.settings.get_bool(LOG_SIGMA, False))
        self.align_action.setChecked(self.settings.get_bool(ALIGN_FITS, True))
        self._saved_pair = (self.settings.get_int(PAIR_FIRST, 0), self.settings.get_int(PAIR_SECOND, 1))

    def fit_to_screen(self, available: QRect | None = None) -> None:
        """Size the window, and its docks in proportion, for a screen whose free area is `available`
        (the window's screen by default)."""
        if available is None:
            screen = self.screen() or QGuiApplication.primaryScreen()
            available = screen.availableGeometry()
        rect = initial_geometry(available)
        self.setGeometry(rect)
        side = [self.docks["model"], self.docks["training"]]
        room = round(0.25 * rect.width())  # each of the two columns of docks at most
        self.resizeDocks(side, [min(room, max(_panel_width(d), 300)) for d in side], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["results"]], [max(110, min(170, round(0.16 * rect.height())))],
                         Qt.Orientation.Vertical)

    def showEvent(self, event: QShowEvent) -> None:
        """At the first show: the data view and the side tabs share their row evenly (a splitter divides by
        its widgets' size hints, which gave the data view a third)."""
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            QTimer.singleShot(0, self._even_splits)

    def _even_splits(self) -> None:
        half = max(1, self.top_plots.width() // 2)
        self.top_plots.setSizes([half, half])

    def save_settings(self) -> None:
        s = self.settings
        s.set(GEOMETRY, self.saveGeometry())
        s.set(WINDOW_FRAME, self.frameGeometry())
        s.set(WINDOW_STATE, self.saveState())
        s.set(LAST_CONFIG, self.session.config.to_json())
        s.set(SAMPLE_COUNT, self.samples_view.count.value())
        s.set(LOG_SIGMA, self.curves.log_sigma.isChecked())
        s.set(ALIGN_FITS, self.align_action.isChecked())
        if self._saved_pair is None:  # else no data of n >= 2 came: the saved pair stays
            first, second = self.data_view.pairs.last_pair()
            s.set(PAIR_FIRST, first)
            s.set(PAIR_SECOND, second)
        s.sync()

    # -------------------------------------------------------------------------------------- validation
    @Slot()
    def _on_edited(self) -> None:
        self.problem, self.problem_detail = self._validate()
        self._show_warnings()
        self.estimator_panel.show_defaults()  # the automatic nodes follow the fitted m
        self.problem_label.set_full_text(f"Cannot start: {self.problem}" if self.problem else "")
        self.problem_label.setToolTip(f"Cannot start: {self.problem_detail}\n(the field is marked in its panel)"
                                      if self.problem else "")
        self._update_data_label()
        self._show_preset()
        device = self.session.config.training.device
        self.status.set_device(resolve_device("auto").type if device == "auto" else device)
        self._update_controls()

    def _field_name(self, path: str) -> str:
        """A config field as the panels call it: `simulation.sigma` -> "σ (Model)"."""
        for form, panel in zip(self.forms, PANEL_TITLES, strict=True):
            label = form.label_of(path)
            if label is not None:
                return f"{label} ({panel})"
        return path

    def _validate(self) -> tuple[str, str]:
        """Show every problem at its field; return the first one, in the panels' words and with the config's
        field names (('', '') when the settings can run)."""
        problems = [(path, msg) for form in self.forms for path, msg in form.parse_problems()]
        err: ConfigError | None = None
        try:
            self.session.config.validate()
        except ConfigError as exc:
            err = exc
        if err is None:
            err = self.session.split_problem()
        for form in self.forms:
            form.show_config_error(err)
        if err is not None:
            problems.append((err.field, config_message(err)))
        if not problems:
            return "", ""
        path, message = problems[0]
        return f"{self._field_name(path)}: {message}", f"{path}: {message}"

    def _show_warnings(self) -> None:
        """Legal settings that work badly (`Session.warnings`), said beside their fields (they do not block Start)."""
        warnings = self.session.warnings()
        for form in self.forms:
            form.show_warnings(warnings)

    def _matching_preset(self) -> tuple[str, RunConfig] | None:
        """The preset whose settings the config holds (at start-up: the last session's settings), if any."""
        for path in preset_files():
            try:
                config = RunConfig.from_json(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ConfigError):
                continue
            if config == self.session.config:
                return path.stem, config
        return None

    def _show_preset(self) -> None:
        """The preset box names the preset only while the settings are still the preset's."""
        if self._preset is None:
            self.model_panel.show_preset(None)
        else:
            name, config = self._preset
            self.model_panel.show_preset(name, modified=config != self.session.config)

    def _simulation_problem(self) -> str:
        problems = [f"{self._field_name(p)}: {m}" for p, m in self.model_panel.form.parse_problems()]
        try:
            self.session.config.simulation.validate()
        except ConfigError as exc:
            problems.append(f"{self._field_name(exc.field)}: {config_message(exc)}")
        return problems[0] if problems else ""

    def _update_data_label(self) -> None:
        if self.session.data is None:
            self.model_panel.set_data_text("No data yet: Generate, or Start (which generates first).", False)
        else:
            self.model_panel.set_data_text(self.session.data.summary, self.session.data_stale())
        imported = self.session.data is not None and self.session.data.simulation is None
        self.model_panel.set_source(self.session.data.summary if imported else None)

    # ------------------------------------------------------------------------------ state and controls
    @Slot(bool)
    def _on_busy_changed(self, busy: bool) -> None:
        self._update_controls()

    def _update_controls(self) -> None:
        busy = self.controller.busy
        enabled = ENABLED[self.session.state]
        can_start = not busy and not self.problem
        self.start_action.setEnabled("start" in enabled and can_start)
        self.step_action.setEnabled("step" in enabled and (self.session.state == RunState.PAUSED or can_start))
        self.pause_action.setEnabled("pause" in enabled)
        self.pause_action.setText("Resume" if self.session.state == RunState.PAUSED else "Pause")
        self.stop_action.setEnabled("stop" in enabled)
        self.reset_action.setEnabled("reset" in enabled and not busy)
        self.choose_m_action.setEnabled("start" in enabled and can_start and self.session.data_in_use() is not None)
        self.model_panel.set_busy(busy)
        record = self.session.selected_record()
        truth = self.session.data is not None and self.session.data.dataset.truth is not None
        self.samples_view.set_enabled(record is not None and not busy, truth and not busy)
        if record is None:
            self.posterior_view.set_available(False, "Train or open a run first (it is chosen in the results "
                                                     "table).")
        elif record.decoder.m > 2:
            self.posterior_view.set_available(False, f"The posterior grid needs m ≤ 2 (this run: "
                                                     f"m = {record.decoder.m}).")
        else:
            self.posterior_view.set_available(not busy and self.session.data is not None, "")
        fa = self.files.actions
        for key in ("import_data", "open_run"):
            fa[key].setEnabled(not busy)
        fa["export_data"].setEnabled(not busy and self.session.data is not None)
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
        if self.controller.busy or self.session.state in ACTIVE:
            return
        config = copy.deepcopy(self.session.config)
        data = self.session.data_in_use()
        estimator = config.estimator.name
        live = self.session.begin_run(estimator)
        colour, name = live.colour, live.name
        self.curves.start_live(colour, objective_label(estimator, config.estimator.samples), config.training.steps,
                               name)
        self.data_view.set_learned(None)
        self.data_view.set_learned_colour(colour, f"g_θ of {name}")
        # the last run's latents go now, not at this run's first snapshot (seconds away; then in this colour)
        self.latent_view.set_true(data.z_shown if data is not None else None, estimator)
        self.latent_view.set_colour(colour)
        self.status.start(config.training.steps, config.training.time_limit,
                          "drawing the data" if data is None else "building the model")
        self.controller.start("train", tasks.train(config, data, self.session.suggests_m()), self._on_trained,
                              paused=paused)
        self.session.move_to(RunState.PAUSED if paused else RunState.RUNNING)
        self.statusBar().showMessage(f"Run {name}", 4000)

    @Slot()
    def toggle_pause(self) -> None:
        if self.session.state == RunState.RUNNING:
            self.controller.pause()
            self.session.move_to(RunState.PAUSED)
        elif self.session.state == RunState.PAUSED:
            self.controller.resume()
            self.session.move_to(RunState.RUNNING)

    @Slot()
    def step(self) -> None:
        if self.session.state == RunState.PAUSED:
            self.controller.step_once()
        elif "step" in ENABLED[self.session.state] and not self.controller.busy:
            self._start_run(paused=True)
            if self.session.state == RunState.PAUSED:
                self.controller.step_once()

    @Slot()
    def stop(self) -> None:
        """Stop training (the run is then scored), or the scoring (the trained run is kept)."""
        if self.session.state in (RunState.RUNNING, RunState.PAUSED, RunState.SCORING):
            self.controller.stop()
            self.session.move_to(RunState.STOPPING)

    @Slot()
    def reset(self) -> None:
        """Clear the live plots: g_θ, inferred latents, samples, the chosen point and its posterior."""
        self.data_view.set_learned(None)
        self.data_view.set_selected(None)
        self.latent_view.set_true(self.session.data.z_shown if self.session.data is not None else None, "")
        self.samples_view.set_data(self.session.data)
        self.posterior_view.set_result(None)
        self.side_tabs.setCurrentWidget(self.latent_view)
        self.curves.end_live()
        self.status.start(0)
        self.session.move_to(RunState.IDLE)

    @Slot(object)
    def _on_progress(self, p: Any) -> None:
        """One progress record of the task in the worker (engine/progress.py, gui/tasks.py, worker.Paused)."""
        match p:
            case tasks.DataDrawn():
                self.session.set_data(p.data)
            case tasks.TruthScored():
                self.session.set_truth_score(p.truth)
                self._show_truth(p.truth)
            case tasks.MSuggested():
                self._take_m(p.suggestion.m, p.suggestion.note)
            case tasks.SelectMProgress():
                self._on_select_progress(p)
            case tasks.SelectMRun():
                self._on_select_run(p.run)
            case ScoringProgress():
                self.session.scoring_began(move=not self._closing)
                self.status.set_progress(p)
            case Paused():
                self.status.set_progress(p)
            case TrainingProgress():
                self._on_training_progress(p)

    def _on_training_progress(self, p: TrainingProgress) -> None:
        live = self.session.live
        if live is None:
            return
        if live.setup is None and p.setup is not None:
            live.setup = p.setup
            self.latent_view.set_true(p.setup.z_true_shown, p.setup.estimator)
            self.curves.set_objective_label(p.setup.objective_label)
        if p.snapshot is not None:  # a plot snapshot (a few a second; the curves get every progress)
            self.data_view.set_learned(p.snapshot.manifold, live=True)
            self.latent_view.set_inferred(p.snapshot.latents, p.snapshot.latents_raw)
        self.curves.add_rows(p.history_rows)
        self.curves.set_marks(p.lr_cuts, p.converged_at)
        if p.time_limit is not None and p.fraction > 0:
            self.curves.expect_steps(p.step / p.fraction)
        elif p.steps is None:  # until converged: the axis grows with the run
            self.curves.expect_steps(max(OPEN_RANGE, 1.6 * p.step))
        self.status.set_progress(p)

    def _on_trained(self, trained: tasks.TrainedRun) -> None:
        live = self.session.end_run()
        if live is None:
            return
        result = trained.result
        record = self.session.add_trained(trained, live)
        self.curves.set_true_loglik(result.metrics.get("true_heldout_loglik"))
        self.status.finish(result.steps_done, result.wall_time,  # the table's time, not the last progress's
                           converged=result.status == "converged")
        warnings = result.metrics.get("warnings", [])
        note = f"Run #{record.run_id} {result.status}: {result.message}"
        scoring = scoring_note(result.metrics)
        if scoring:
            note += f"; {scoring} (no held-out metrics{': see the results table' if 'failed' in scoring else ''})"
        elif warnings:
            note += f" — {warnings[0]}"
        self.statusBar().showMessage(note, 15000)
        if result.status == "failed":
            self._fail(f"Run #{record.run_id} failed", result.message, "\n".join(warnings))
        else:
            self.session.move_to(RunState.DONE)

    def _take_m(self, m: int, note: str) -> None:
        """m for the next runs, set by the app (PPCA's suggestion, or the choice from the data), said beside
        the m field and in the status bar."""
        self.session.take_m(m)
        field = self.training_panel.decoder_form.fields["m"]
        field.set_value(m)
        self._on_edited()
        field.set_notice(note)
        self.statusBar().showMessage(note, 15000)

    # --------------------------------------------------------------------------- choose m from the data
    @Slot()
    def choose_m(self) -> None:
        """Fit m = 1..M on the data in use (`tasks.select_m`), each run kept in the table; the chart and the
        chosen m at the end."""
        data = self.session.data_in_use()
        if self.problem:
            self.statusBar().showMessage(f"Cannot start: {self.problem}", 8000)
            return
        if data is None:
            self.statusBar().showMessage("Choose m: generate or import data first", 8000)
            return
        if self.controller.busy or self.session.state in ACTIVE:
            return
        max_m = min(max(data.dataset.n - 1, 1), MAX_SELECT_M)
        config = copy.deepcopy(self.session.config)
        self.curves.end_live()
        self.status.start(config.training.steps, config.training.time_limit, "building the model")
        self.controller.start("select_m", tasks.select_m(config, data, max_m), self._on_m_selected)
        self.session.move_to(RunState.RUNNING)
        self.statusBar().showMessage(f"Choosing m: m = 1 … {max_m}", 4000)

    def _on_select_progress(self, p: tasks.SelectMProgress) -> None:
        doing = "scoring" if p.scoring else f"step {p.step}" + ("" if p.steps is None else f" / {p.steps}")
        self.statusBar().showMessage(f"Choosing m: m {p.k} of {p.of} (m = {p.m}), {doing}")
        self.status.set_series(p.step, p.steps, (p.k - 1 + p.fraction) / p.of)

    def _on_select_run(self, trained: tasks.TrainedRun) -> None:
        self.session.add_trained(trained)
        self.curves.set_true_loglik(trained.result.metrics.get("true_heldout_loglik",
                                                               self.comparison.truth_value))

    def _on_m_selected(self, selected: tasks.SelectedM) -> None:
        self.status.finish(self.status.step, self.status.elapsed)
        self.session.move_to(RunState.DONE)
        stopped = " (stopped: the m fitted so far)" if selected.stopped else ""
        if selected.choice is None or selected.chart is None:
            self.statusBar().showMessage(f"Choose m: no m was scored{stopped}; m is unchanged", 15000)
            return
        c = selected.choice
        capped = [str(r["m"]) for r in selected.record["candidates"] if r["status"] == "cap_reached"]
        unfinished = f"; m = {', '.join(capped)} did not converge within the cap" if capped else ""
        note = (f"m = {c.chosen}: chosen from the data{stopped} (the smallest m within one paired SE of the best, "
                f"m = {c.best}{unfinished})")
        self._take_m(c.chosen, note)
        if self.select_m_dialog is not None:
            self.select_m_dialog.close()
        self.select_m_dialog = SelectMDialog(self, selected.chart, note)
        if not self._closing:
            self.select_m_dialog.show()

    def _on_session(self, event: str, value: Any) -> None:
        """Draw what the session says has changed (gui/session.py's events)."""
        if event == "state":
            self.status.set_state(value)
            self._update_controls()
        elif event == "data":
            self._show_data(value)
        elif event == "record":
            self.comparison.set_records(self.session.records)
            self.curves.end_live()
            self._set_overlay(value, value.checked)
        elif event == "selection":
            if value is not None:
                self.results_table.select_run(value)
            self._show_learned(self.session.record(value))
            self._update_controls()

    def _set_overlay(self, record: RunRecord, on: bool) -> None:
        """A run's curves in the training plots, its final held-out score (all held-out points) a star."""
        value = record.metrics.get("heldout_loglik")
        steps = record.metrics.get("steps", record.history.step[-1] if len(record.history.step) else None)
        final = (float(steps), float(value)) if isinstance(value, (int, float)) and steps is not None else None
        conv = record.metrics.get("convergence") or {}
        marks = (tuple(int(s) for s in conv.get("lr_cuts") or ()), conv.get("converged_at"))
        self.curves.set_overlay(record.run_id, record.history, record.colour, record.name, on, final,
                                record.objective_label, marks)

    def _show_learned(self, record: RunRecord | None) -> None:
        """The data view draws the g_θ of the run selected in the table (`Session.manifold_of`); while a run
        trains, that run's."""
        if self.session.live is not None:
            return
        view = None if record is None else self.session.manifold_of(record)
        self.data_view.set_learned(view)
        if view is not None and record is not None:
            self.data_view.set_learned_colour(record.colour, f"g_θ of {record.name}")

    @Slot(str, str)
    def _on_task_failed(self, message: str, details: str) -> None:
        kind = self.controller.kind
        title = f"{TASK_TITLES.get(kind, kind)} failed"
        if kind == "train":
            self.session.end_run()
            self.curves.end_live()
            self._fail(title, message, details)
        elif kind == "select_m":
            self._fail(title, message, details)
        elif kind == "warmup":
            self.statusBar().showMessage(f"{title}: {message}", 10000)
        else:
            self.show_error(title, message, details)

    def _fail(self, title: str, message: str, details: str) -> None:
        """A run failed: FAILED while the error is on screen, then IDLE."""
        self.session.move_to(RunState.FAILED)
        box = self.show_error(title, message, details)
        if box is None:
            self.session.move_to(RunState.IDLE)
        else:
            box.finished.connect(self._after_error)

    def show_error(self, title: str, message: str, details: str = "") -> QMessageBox | None:
        if self._closing:
            return None
        return dialogs.show_error(self, title, message, details)

    @Slot()
    def _after_error(self) -> None:
        if self.session.state == RunState.FAILED:
            self.session.move_to(RunState.IDLE)

    @Slot()
    def _warm_up(self) -> None:
        if not self.controller.busy:
            self.statusBar().showMessage("Starting torch…")
            self.controller.start("warmup", tasks.warm_up, self._on_warm)

    def _on_warm(self, result: None) -> None:
        settle_garbage_collector()
        self.statusBar().showMessage("Ready", 3000)

    # --------------------------------------------------------------------------------------- the data
    def _show_data(self, bundle: tasks.DataBundle) -> None:
        """New data in the session: every view shows them."""
        self.data_view.set_data(bundle)
        if self._saved_pair is not None and bundle.dataset.n >= 2:  # the last session's pair, if it is one here
            self.data_view.pairs.set_pair(*self._saved_pair)
            self._saved_pair = None
        self.samples_view.set_data(bundle)
        self.posterior_view.set_point_count(len(bundle.dataset))
        self.posterior_view.set_result(None)
        truth = bundle.dataset.truth
        self.curves.set_true_sigma(truth.noise_sigma if truth is not None and truth.sigma_identified else None)
        self._show_truth(bundle.truth_score)
        if self.session.live is None:
            self.latent_view.set_true(bundle.z_shown, "")
            self.data_view.set_learned(None)
        else:  # drawn by Start: its latents now, not the last data's until the run's first snapshot
            self.latent_view.set_true(bundle.z_shown, self.session.live.estimator)
            self.status.set_starting("building the model")
        self._on_edited()  # what the settings say about the data in use (their n, the split) and the label

    def _show_truth(self, score: tasks.TruthScore | None) -> None:
        """The true model's held-out log-likelihood: a line on the held-out curve and a number by the results."""
        self.curves.set_true_loglik(None if score is None else score.mean)
        if score is None:
            self.comparison.set_truth(None)
        else:
            self.comparison.set_truth(score.mean, score.se, score.points)
            self.statusBar().showMessage(f"True model: {score.mean:.3f} ± {score.se:.3f} nats/point on the "
                                         f"{score.points} held-out points the runs are scored on", 8000)

    @Slot()
    def _on_m_edited(self) -> None:
        """The user set m: Start fits it, whatever the data."""
        if self.session.m_auto:
            self.session.take_m(self.session.config.decoder.m)  # Start fits the m set
            self._show_warnings()

    @Slot()
    def generate(self) -> None:
        problem = self._simulation_problem()
        if problem:
            self.statusBar().showMessage(f"Cannot generate: {problem}", 8000)
            return
        if not self.controller.busy:
            self.controller.start("generate", tasks.generate(copy.deepcopy(self.session.config.simulation),
                                                             copy.deepcopy(self.session.config.training)),
                                  self.session.set_data)
            self._update_controls()

    # ----------------------------------------------------------------------------------- selected run
    @Slot(int)
    def _on_run_selected(self, run_id: int) -> None:
        if run_id != self.session.selected:
            self.session.select(run_id)

    @Slot(int, bool)
    def _on_overlay_toggled(self, run_id: int, on: bool) -> None:
        record = self.session.record(run_id)
        if record is not None:
            self._set_overlay(record, on)

    @Slot(int)
    def _on_point_clicked(self, index: int) -> None:
        self.posterior_view.set_index(index)
        self.side_tabs.setCurrentWidget(self.posterior_view)

    @Slot(str, int)
    def sample(self, source: str, count: int) -> None:
        if self.controller.busy:
            return
        seed = self.session.next_sample_seed()
        if source == "truth":
            if self.session.data is None or self.session.data.dataset.truth is None:
                return
            model, label = self.session.data.dataset.truth, "Samples from the true model"
            latent_map = None
        else:
            record = self.session.selected_record()
            if record is None:
                return
            model, label = record.decoder, f"Samples from run {record.name}"
            view = self.session.manifold_of(record)
            latent_map = view.latent_map if view is not None else None
        self.controller.start("sample", tasks.sample(model, count, seed, label, latent_map),
                              self.samples_view.set_samples)

    @Slot(int)
    def compute_posterior(self, index: int) -> None:
        record = self.session.selected_record()
        if record is None or self.session.data is None or self.controller.busy:
            return
        if not 0 <= index < len(self.session.data.dataset):
            self.show_error("Posterior", f"Point {index} does not exist: the data have points 0 to "
                                         f"{len(self.session.data.dataset) - 1}.")
            return
        if record.decoder.n != self.session.data.dataset.n:
            self.show_error("Posterior", f"Run {record.name} models n = {record.decoder.n} coordinates but the "
                                          f"data have n = {self.session.data.dataset.n}.")
            return
        x = self.session.data.dataset.x[index]
        self.data_view.set_selected(index)
        self.controller.start("posterior", tasks.posterior(record.decoder, record.encoder, record.config.estimator,
                                                           x, index, f"run {record.name}",
                                                           seed=record.config.training.seed),
                              self.posterior_view.set_result)

    # ------------------------------------------------------------------------------------------ files
    def apply_config(self, config: RunConfig) -> None:
        """Show another config in the panels (after a preset or a config file)."""
        self.session.set_config(config)
        self.model_panel.bind(config.simulation)
        self.estimator_panel.bind(config.estimator)
        self.training_panel.bind(config.decoder, config.training)
        self._on_edited()

    @Slot(str)
    def load_preset(self, path: str) -> None:
        config = self.files.read_config(path)
        if config is not None:
            self._preset = (Path(path).stem, copy.deepcopy(config))
            self.apply_config(config)
            self.statusBar().showMessage(f"{Path(path).stem} loaded", 5000)

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
            if self.session.state in (RunState.RUNNING, RunState.PAUSED, RunState.SCORING):
                self.session.move_to(RunState.STOPPING)
            self.controller.shutdown()
        QCoreApplication.processEvents()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._closing = True
        self.shutdown()
        self.clock.timer.stop()
        self.save_settings()
        super().closeEvent(event)
