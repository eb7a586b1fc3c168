"""Training curves: the objective, the held-out log-likelihood (with the true model's value once known)
and σ (with the true σ), for the live run and for every run ticked in the results table."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QCheckBox, QGraphicsPathItem, QHBoxLayout, QVBoxLayout, QWidget

from ..session import History
from .common import (
    GrowingSeries,
    LiveView,
    SideLegend,
    StreamingCurve,
    cache_static,
    log10_positive,
    plain_axes,
    shrinkable_title,
)

REF_PEN = pg.mkPen("#222222", width=1.5, style=Qt.PenStyle.DashLine)
LIVE_Z = 10  # the live run's curves are drawn over the finished runs' ones
FINAL_SYMBOL = "star"  # a run's final held-out score (all held-out points), at its last step
LEGEND_ROWS = 12  # legend entries a column before the legend takes another column
OPEN_RANGE = 2000  # the first x range of a run until converged (it grows with the run)
CUT_STYLE = Qt.PenStyle.DotLine  # the plateau schedule's learning-rate cuts
CONVERGED_STYLE = Qt.PenStyle.DashLine  # where convergence was declared


def step_marks(cuts: tuple[int, ...] | list[int], converged_at: int | None, colour: str) -> list[pg.InfiniteLine]:
    """Vertical lines at the learning-rate cuts (dotted) and at convergence (dashed), in the run's colour."""
    marks = []
    for step, style, tip in [*((s, CUT_STYLE, f"step {s}: the learning rate halved (plateau schedule)") for s in cuts),
                             *(((converged_at, CONVERGED_STYLE, f"step {converged_at}: converged"),)
                               if converged_at is not None else ())]:
        mark = pg.InfiniteLine(pos=float(step), angle=90, movable=False, pen=pg.mkPen(colour, width=1, style=style))
        mark.setToolTip(tip)
        marks.append(mark)
    return marks


class CurvesView(QWidget, LiveView):
    """The objective, the held-out log-likelihood and σ side by side, each the full height of the view, and
    the legend of the runs shown beside them (inside a plot it covered the curves, and a short plot cut
    it to two entries)."""

    def __init__(self) -> None:
        super().__init__()
        self.glw = pg.GraphicsLayoutWidget()
        self.objective_plot = self.glw.addPlot(row=0, col=0)
        self.heldout_plot = self.glw.addPlot(row=0, col=1)
        self.sigma_plot = self.glw.addPlot(row=0, col=2)
        self.plots = (self.objective_plot, self.heldout_plot, self.sigma_plot)
        for col, (plot, title) in enumerate(zip(self.plots, ("Training objective", "Held-out log p(x) (★ final)",
                                                             "Noise σ"), strict=True)):
            plain_axes(plot)
            plot.setAutoVisible(y=True)
            shrinkable_title(plot, title, "10pt", "left")  # equal widths, whatever the titles' widths
            plot.setLabel("bottom", "step")
            self.glw.ci.layout.setColumnStretchFactor(col, 1)
            if plot is not self.objective_plot:
                plot.setXLink(self.objective_plot)
        self.heldout_plot.titleLabel.setToolTip("Held-out log-likelihood, nats/point: periodic estimates on a fixed "
                                                "subsample of the held-out points; ★ a run's final score, on all "
                                                "of them. Dotted lines: the plateau schedule halved the learning "
                                                "rate; dashed: the run converged there")
        self.legend = SideLegend()
        self.glw.addItem(self.legend, row=0, col=3)
        # the live run: the dense curves grow at every frame; the sparse held-out one has symbols
        self.streams = {"objective": StreamingCurve(self.objective_plot), "sigma": StreamingCurve(self.sigma_plot)}
        self.live_heldout = self.heldout_plot.plot(symbol="o", symbolSize=5)
        for item in (self.live_heldout, *self.streams["objective"].items, *self.streams["sigma"].items):
            item.setZValue(LIVE_Z)
        self._live_label: str | None = None  # the live run's objective, None when no run is live
        self._live_name = ""
        ref_label = {"position": 0.02, "color": "#222222", "anchors": [(0, 0), (0, 1)]}  # left-aligned, inside
        self.true_loglik = pg.InfiniteLine(angle=0, pen=REF_PEN, label="truth", movable=False, labelOpts=ref_label)
        self.true_sigma = pg.InfiniteLine(angle=0, pen=REF_PEN, label="true σ", movable=False, labelOpts=ref_label)
        self.heldout_plot.addItem(self.true_loglik, ignoreBounds=False)
        self.sigma_plot.addItem(self.true_sigma, ignoreBounds=False)
        self.true_loglik.hide()
        self.true_sigma.hide()
        cache_static(self.true_loglik, self.true_sigma)
        self.series = {k: GrowingSeries() for k in ("objective", "heldout", "sigma")}
        self.overlays: dict[int, Overlay] = {}
        self._shown: set[int] = set()
        self._ranged = False  # the live run's y ranges were set at least once
        self._drawn: dict[str, int] = {}  # points of each live series on screen
        self._steps = 0  # the live run's planned steps (0: until converged)
        self._x_range = 0.0  # the live run's x axis: 0 to this step
        self._live_marks: list[tuple[pg.PlotItem, pg.InfiniteLine]] = []  # the live run's cut and convergence lines
        self._marked = (0, False)  # cuts drawn, convergence drawn
        self._live_colour = "#222222"

        self.log_sigma = QCheckBox("log σ axis")
        self.log_sigma.setToolTip("Show σ on a log scale (useful when σ collapses towards 0)")
        self.log_sigma.toggled.connect(self._on_log_sigma)
        self._true_sigma: float | None = None
        bar = QHBoxLayout()
        bar.addStretch(1)
        bar.addWidget(self.log_sigma)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.glw, 1)

    # ------------------------------------------------------------------------------------ live run
    def start_live(self, colour: str, objective_label: str, steps: int | None, name: str = "") -> None:
        """A new run: x is fixed to its step cap (a run until converged: OPEN_RANGE, then as it grows,
        `expect_steps`) and y ranges only grow, so the axes are laid out again only when a curve leaves its
        range, not at every frame. When the run ends, the plots range to all. `name` labels it in the legend."""
        for s in self.series.values():
            s.clear()
        self._drawn.clear()
        self._clear_live_marks()
        self._live_colour = colour
        for plot in self.plots:
            plot.disableAutoRange()
        shown = steps if steps is not None else OPEN_RANGE
        self.objective_plot.setXRange(0, shown, padding=0.01)
        self._steps, self._x_range = steps or 0, float(shown)
        self._ranged = False
        pen = pg.mkPen(colour, width=1)
        for curve in self.streams.values():
            curve.reset(shown, pen)
        self.live_heldout.setData([], [])
        self.live_heldout.setPen(pen)
        self.live_heldout.setSymbolBrush(pg.mkBrush(colour))
        self.live_heldout.setSymbolPen(None)
        self.legend.removeItem(self.live_heldout)
        self._live_name = f"{name} (running)" if name else "running"
        self.legend.addItem(self.live_heldout, self._live_name)
        self._live_label = objective_label
        self._fit_legend()
        self._update_titles()
        self.mark_dirty()

    def expect_steps(self, total: float) -> None:
        """A time-limited run may end long before its planned steps: fit the x axis (and the extent of the
        curves' pieces) to the steps it is expected to reach (`step / fraction`, never below the steps done).
        The axis is laid out again only when the estimate passes its end or falls below half of it."""
        if not (math.isfinite(total) and total > 0) or 0.5 * self._x_range <= total <= self._x_range:
            return
        self._x_range = min(float(self._steps), 1.25 * total) if self._steps > 0 else 1.25 * total
        self.objective_plot.setXRange(0, self._x_range, padding=0.01)
        for curve in self.streams.values():
            curve.set_x_range(self._x_range)

    def set_marks(self, cuts: tuple[int, ...], converged_at: int | None) -> None:
        """The live run's learning-rate cuts and convergence so far, as vertical lines on the objective and
        held-out plots (only the new ones are added)."""
        new_cuts = cuts[self._marked[0]:]
        new_end = converged_at if not self._marked[1] else None
        if not new_cuts and new_end is None:
            return
        for plot in (self.objective_plot, self.heldout_plot):
            for mark in step_marks(new_cuts, new_end, self._live_colour):
                plot.addItem(mark)
                self._live_marks.append((plot, mark))
        self._marked = (len(cuts), self._marked[1] or new_end is not None)

    def _clear_live_marks(self) -> None:
        for plot, mark in self._live_marks:
            plot.removeItem(mark)
        self._live_marks, self._marked = [], (0, False)

    def set_objective_label(self, label: str) -> None:
        """What the live run's objective is (its first progress names it)."""
        if self._live_label is not None:
            self._live_label = label
            self._update_titles()

    def _update_titles(self) -> None:
        """The objective axis names what the curves on it are: one objective, or which run has which."""
        runs: dict[str, list[str]] = {}
        shown = [(o.label, o.name) for run_id, o in self.overlays.items() if run_id in self._shown]
        if self._live_label is not None:
            shown.append((self._live_label, self._live_name))
        for label, name in shown:
            runs.setdefault(label or "objective", []).append(name.split(" ")[0])
        if not runs:
            title = "Training objective"
        elif len(runs) == 1:
            title = f"Objective: {next(iter(runs))}"
        else:
            title = "Objective: " + " · ".join(f"{label} {' '.join(names)}" for label, names in runs.items())
        self.objective_plot.setTitle(title, size="10pt")

    def _fit_legend(self) -> None:
        columns = max(1, math.ceil(len(self.legend.items) / LEGEND_ROWS))
        if columns != self.legend.columnCount:
            self.legend.setColumnCount(columns)

    def add_rows(self, rows: list[dict[str, float]]) -> None:
        for row in rows:
            step = row["step"]
            self.series["objective"].append(step, row["objective"])
            self.series["sigma"].append(step, row["sigma"])
            if math.isfinite(row.get("heldout", math.nan)):
                self.series["heldout"].append(step, row["heldout"])
        if rows:
            self.mark_dirty()

    def end_live(self) -> None:
        """The run is over: its full history is shown as an overlay instead."""
        for s in self.series.values():
            s.clear()
        self._drawn.clear()
        for curve in self.streams.values():
            curve.reset()
        self.live_heldout.setData([], [])
        self.legend.removeItem(self.live_heldout)
        self._clear_live_marks()
        self._live_label = None
        self._fit_legend()
        self._update_titles()
        for plot in self.plots:
            plot.enableAutoRange()

    def set_true_sigma(self, sigma: float | None) -> None:
        self._true_sigma = sigma
        log = self.log_sigma.isChecked()
        self._set_line(self.true_sigma, math.log10(sigma) if log and sigma is not None and sigma > 0 else sigma)

    def _on_log_sigma(self, on: bool) -> None:
        """Log axis for σ: lines are placed in log10 units, and only decades are labelled (the plot is short)."""
        live = not any(self.sigma_plot.getViewBox().autoRangeEnabled())
        self.sigma_plot.setLogMode(y=on)
        if live:  # pyqtgraph turns auto-range on with the log mode; a live run keeps its own ranges
            self.sigma_plot.disableAutoRange()
        self.sigma_plot.getAxis("left").setStyle(maxTextLevel=0 if on else 2)
        self.set_true_sigma(self._true_sigma)
        for overlay in self.overlays.values():
            overlay.set_log_sigma(on)
        self.streams["sigma"].log_y = on  # the live σ is drawn again, in the new units, and so are the y ranges
        self.streams["sigma"].reset()
        self._ranged = False
        self._drawn.clear()
        self.mark_dirty()

    def set_true_loglik(self, value: float | None) -> None:
        """The true model's held-out log-likelihood as a line, labelled with its value."""
        self._set_line(self.true_loglik, value)
        if value is not None and math.isfinite(value):
            self.true_loglik.label.setFormat("truth {value:.3f}")
            self.true_loglik.label.setText(f"truth {value:.3f}")  # setFormat draws nothing while hidden

    def _set_line(self, line: pg.InfiniteLine, value: float | None) -> None:
        if value is None or not math.isfinite(value):
            line.hide()
        else:
            line.setValue(value)
            line.show()

    def redraw(self) -> None:
        """Draw only the series that grew (the sparse held-out one mostly has not)."""
        for key, plot in zip(("objective", "heldout", "sigma"), self.plots, strict=True):
            s = self.series[key]
            if len(s) == self._drawn.get(key):
                continue
            self._drawn[key] = len(s)
            if key == "heldout":
                self.live_heldout.setData(s.x, s.y)
            else:
                self.streams[key].draw(s.x, s.y)
            if len(s) and not plot.getViewBox().autoRangeEnabled()[1]:
                self._grow_y(plot, s.lo, s.hi)
        self._ranged = True

    def _grow_y(self, plot: pg.PlotItem, lo: float, hi: float) -> None:
        """Widen the y range to [lo, hi] (with a margin) if the data left it; the first frame sets it."""
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return
        if plot.getViewBox().state["logMode"][1]:
            if hi <= 0:
                return
            lo, hi = math.log10(max(lo, hi * 1e-12)), math.log10(hi)
        vlo, vhi = plot.viewRange()[1]
        if self._ranged and vlo <= lo and hi <= vhi:
            return
        if self._ranged:
            lo, hi = min(lo, vlo), max(hi, vhi)
        pad = 0.08 * (hi - lo) if hi > lo else 0.5 * max(abs(hi), 1e-3)
        plot.setYRange(lo - pad, hi + pad, padding=0)

    # ------------------------------------------------------------------------------------ overlays
    def set_overlay(self, run_id: int, history: History | None, colour: str, name: str, visible: bool,
                    final: tuple[float, float] | None = None, label: str = "",
                    marks: tuple[tuple[int, ...], int | None] = ((), None)) -> None:
        """Show or hide a finished run's curves; the items are made once per run, then toggled. `final`:
        (step, value) of its final held-out score; `label`: what its objective is; `marks`: its learning-rate
        cuts and the step where it converged."""
        overlay = self.overlays.get(run_id)
        if overlay is None:
            if not visible or history is None:
                return
            overlay = Overlay(history, colour, self.log_sigma.isChecked(), final, name, label, marks)
            self.objective_plot.addItem(overlay.objective)
            self.heldout_plot.addItem(overlay.heldout)
            self.heldout_plot.addItem(overlay.final)
            self.sigma_plot.addItem(overlay.sigma)
            for mark in overlay.marks:
                self.heldout_plot.addItem(mark)
            self.overlays[run_id] = overlay
        if visible == (run_id in self._shown):
            return
        for item in overlay.items:
            item.setVisible(visible)
        if visible:
            self._shown.add(run_id)
            self.legend.addItem(overlay.heldout, name)
        else:
            self._shown.discard(run_id)
            self.legend.removeItem(overlay.heldout)
        self._fit_legend()
        self._update_titles()


class Overlay:
    """A finished run's curves, which do not change. The dense objective and σ curves are Qt path items:
    Qt draws and bounds them without calling Python, so the frames of a live run, which repaint the
    region its newest points cover, cost less with runs overlaid (as PlotDataItems each overlay cost
    Python calls at every such repaint, and a re-clip at every change of the view's range). The sparse
    held-out points are a PlotDataItem with symbols, which the legend shows, and the final score (on all
    held-out points, at the last step) a star. All are cached as pixmaps."""

    def __init__(self, history: History, colour: str, log_sigma: bool, final: tuple[float, float] | None = None,
                 name: str = "", label: str = "", marks: tuple[tuple[int, ...], int | None] = ((), None)):
        self.history = history
        self.name, self.label = name, label
        pen = QPen(QColor(colour), 0)  # a one-pixel line; width 0 also keeps the item's bounds exact
        pen.setCosmetic(True)
        self.objective = QGraphicsPathItem(_path(history.step, history.objective))
        self.sigma = QGraphicsPathItem()
        for item in (self.objective, self.sigma):
            item.setPen(pen)
        self.set_log_sigma(log_sigma)
        self.heldout = pg.PlotDataItem(history.heldout_step, history.heldout, pen=pg.mkPen(colour, width=1),
                                       symbol="o", symbolSize=5, symbolBrush=pg.mkBrush(colour), symbolPen=None)
        ok = final is not None and all(math.isfinite(v) for v in final)
        self.final = pg.ScatterPlotItem([final[0]] if ok else [], [final[1]] if ok else [], symbol=FINAL_SYMBOL,
                                        size=13, brush=pg.mkBrush(colour), pen=pg.mkPen("#222222", width=1))
        self.marks = step_marks(marks[0], marks[1], colour)  # on the held-out plot
        self.items = (self.objective, self.heldout, self.final, self.sigma, *self.marks)
        cache_static(self.objective, self.heldout, self.final, self.sigma)

    def set_log_sigma(self, on: bool) -> None:
        """σ in the units of the σ axis."""
        sigma = self.history.sigma
        self.sigma.setPath(_path(self.history.step, log10_positive(sigma) if on else sigma))


def _path(x: np.ndarray, y: np.ndarray) -> QPainterPath:
    """The polyline through the finite points (x, y), broken where a value is not finite."""
    return pg.arrayToQPath(x, y, connect="finite") if len(x) else QPainterPath()
