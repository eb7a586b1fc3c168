"""The File menu's actions: settings, data, runs, plots and the results table to and from files.

Each action has a dialog form (`import_data`) and a path form (`import_data_from`) that tests and scripts
call; files are written atomically (engine.storage), data and runs by the worker (gui/tasks.py), and every
failure is a message in the window, never an exception.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import pyqtgraph as pg
import pyqtgraph.exporters
from PySide6.QtCore import QObject, Slot
from PySide6.QtGui import QAction, QKeySequence, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QFileDialog, QStackedWidget, QWidget

from engine.config import ConfigError, RunConfig
from engine.storage import atomic_write_text

from . import tasks
from .settings import APPLICATION, LAST_DIR

if TYPE_CHECKING:
    from .main_window import MainWindow

def export_svg(widget: QWidget, path: str) -> None:
    """The widget as vector graphics. (pyqtgraph 0.14's SVGExporter cannot parse the paths Qt 6.12 writes.)"""
    generator = QSvgGenerator()
    generator.setFileName(path)
    generator.setSize(widget.size())
    generator.setViewBox(widget.rect())
    generator.setTitle(APPLICATION)
    painter = QPainter(generator)
    try:
        widget.render(painter)
    finally:
        painter.end()
    if not Path(path).exists():
        raise OSError("the SVG file was not written")


class FileActions(QObject):
    """The File menu of `window`: `actions` by name (the window enables them by state)."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.w = window
        self.actions: dict[str, QAction] = {
            "open_config": self._action("Open config…", self.open_config, QKeySequence.StandardKey.Open),
            "save_config": self._action("Save config…", self.save_config, QKeySequence.StandardKey.Save),
            "import_data": self._action("Import data (CSV/NPZ)…", self.import_data),
            "export_data": self._action("Export data (CSV/NPZ)…", self.export_data),
            "open_run": self._action("Open run…", self.open_run,
                                     tip="Open a run folder saved by NLICA Lab (run.json + safetensors)"),
            "save_run": self._action("Save run…", self.save_run, tip="Save the selected run as a folder"),
            "export_results": self._action("Export results table (CSV)…", self.export_results),
        }

    def _action(self, text: str, slot: object, shortcut: QKeySequence.StandardKey | None = None,
                tip: str = "") -> QAction:
        return self.w.make_action(text, slot, shortcut or "", tip)

    def _last_dir(self) -> str:
        return self.w.settings.get_str(LAST_DIR, str(Path.home()))

    def _remember_dir(self, path: str) -> None:
        p = Path(path)
        self.w.settings.set(LAST_DIR, str(p if p.is_dir() else p.parent))

    def read_config(self, path: str) -> RunConfig | None:
        try:
            return RunConfig.from_json(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            self.w.show_error("Cannot open the config", f"{path}: {exc}")
        except ConfigError as exc:
            self.w.show_error("Cannot open the config", f"{Path(path).name}: {exc}")
        return None

    @Slot()
    def import_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.w, "Import data", self._last_dir(),
                                              "Data files (*.csv *.npz);;All files (*)")
        if path:
            self.import_data_from(path)

    def import_data_from(self, path: str) -> None:
        if self.w.controller.busy:
            return
        self._remember_dir(path)
        self.w.controller.start("import", tasks.import_data(path, copy.deepcopy(self.w.session.config.training)),
                                lambda bundle: self.w.session.set_data(bundle, imported=True))

    @Slot()
    def export_data(self) -> None:
        if self.w.session.data is None:
            return
        path, chosen = QFileDialog.getSaveFileName(self.w, "Export data", str(Path(self._last_dir()) / "data.npz"),
                                                   "NumPy archive (*.npz);;CSV (*.csv)")
        if path:
            if Path(path).suffix.lower() not in (".npz", ".csv"):
                path += ".csv" if "csv" in chosen.lower() else ".npz"
            self.export_data_to(path)

    def export_data_to(self, path: str) -> None:
        if self.w.session.data is None or self.w.controller.busy:
            return
        self._remember_dir(path)
        self.w.controller.start("export_data", tasks.export_data(path, self.w.session.data.dataset),
                                lambda p: self.w.statusBar().showMessage(f"Data saved to {p}", 8000))

    @Slot()
    def open_config(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.w, "Open config", self._last_dir(), "Run config (*.json)")
        if path:
            self._remember_dir(path)
            self.w.load_preset(path)

    @Slot()
    def save_config(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.w, "Save config", str(Path(self._last_dir()) / "config.json"),
                                              "Run config (*.json)")
        if path:
            self.save_config_to(path if path.endswith(".json") else path + ".json")

    def save_config_to(self, path: str) -> None:
        self._remember_dir(path)
        try:
            atomic_write_text(path, self.w.session.config.to_json())
        except OSError as exc:
            self.w.show_error("Cannot save the config", f"{path}: {exc}")
            return
        self.w.statusBar().showMessage(f"Config saved to {path}", 6000)

    @Slot()
    def open_run(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.w, "Open run (run.json in a run folder)", self._last_dir(),
                                              "NLICA Lab run (run.json);;All files (*)")
        if path:
            self.open_run_from(path)

    def open_run_from(self, path: str) -> None:
        if self.w.controller.busy:
            return
        self._remember_dir(path)
        self.w.controller.start("open_run", tasks.open_run(path, self.w.session.data), self._on_run_opened)

    def _on_run_opened(self, opened: tasks.OpenedRun) -> None:
        record = self.w.session.add_opened(opened)
        self.w.statusBar().showMessage(f"Opened {opened.saved.path} as run #{record.run_id}", 8000)

    @Slot()
    def save_run(self) -> None:
        record = self.w.session.selected_record()
        if record is None or record.result is None:
            return
        default = Path(self._last_dir()) / f"run-{record.run_id}-{record.estimator}"
        path, _ = QFileDialog.getSaveFileName(self.w, "Save run as a folder", str(default), "Run folder (*)")
        if path:
            self.save_run_to(path)

    def save_run_to(self, path: str) -> None:
        record = self.w.session.selected_record()
        if record is None or record.result is None or self.w.controller.busy:
            return
        self._remember_dir(str(Path(path).parent))
        self.w.controller.start("save_run", tasks.save_trained_run(record.result, path),
                                lambda p: self.w.statusBar().showMessage(f"Run saved to {p}", 8000))

    def export_plot(self, widget: QWidget, title: str) -> None:
        name = title.lower().replace(" ", "-")
        path, chosen = QFileDialog.getSaveFileName(self.w, f"Export {title}", str(Path(self._last_dir()) / name),
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
            self.w.show_error("Cannot export the plot", f"{path}: {exc}")
            return
        self.w.statusBar().showMessage(f"Plot saved to {path}", 6000)

    @Slot()
    def export_results(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.w, "Export results", str(Path(self._last_dir()) / "results.csv"),
                                              "CSV (*.csv)")
        if path:
            self.export_results_to(path if path.endswith(".csv") else path + ".csv")

    def export_results_to(self, path: str) -> None:
        self._remember_dir(path)
        try:
            atomic_write_text(path, self.w.results.to_csv())
        except OSError as exc:
            self.w.show_error("Cannot export the results", f"{path}: {exc}")
            return
        self.w.statusBar().showMessage(f"Results saved to {path}", 6000)
