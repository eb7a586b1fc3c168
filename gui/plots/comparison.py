"""Comparisons at a glance: each run's held-out log-likelihood ± SE against the true model's (and PPCA's,
the best linear model, where the run has it), and the held-out log-likelihood against m of "Choose m from
the data" (drawn by `gui.figures.draw_chart`, the same figure as the command line's select_m.png)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QDialog, QLabel, QVBoxLayout, QWidget

from ..figures import draw_chart
from ..session import RunRecord
from .common import PlotTexts, legend_below
from .curves import REF_PEN

PPCA_BRUSH = pg.mkBrush("#ff7f0e")


def _value(metrics: dict[str, Any], key: str) -> float:
    v = metrics.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


class ComparisonChart(QWidget):
    """Each run's held-out log-likelihood ± SE (a dot in its colour, by run number), PPCA's (orange ×) and the
    true model's on the data in use (a line, with its value). Its items are made once and set again when a run
    is added or the data change."""

    def __init__(self) -> None:
        super().__init__()
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        self.texts = PlotTexts(self.plot)
        self.texts.set(title="Held-out log-lik by run", left="nats/point", bottom="run")
        self.plot.showGrid(x=False, y=True, alpha=0.2)
        self.legend = legend_below(self.plot)
        self.fits = pg.ScatterPlotItem(size=9, pen=None, name="fit ± SE")
        self.errors = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), height=np.zeros(0), beam=0.2,
                                      pen=pg.mkPen("#444444"))
        self.ppca = pg.ScatterPlotItem(size=10, symbol="x", pen=pg.mkPen("#ff7f0e", width=2), brush=PPCA_BRUSH,
                                       name="PPCA (linear)")
        self.truth = pg.InfiniteLine(angle=0, pen=REF_PEN,
                                     label="truth", movable=False,
                                     labelOpts={"position": 0.02, "color": "#222222", "anchors": [(0, 0), (0, 1)]})
        for item in (self.errors, self.fits, self.ppca):
            self.plot.addItem(item)
        self.plot.addItem(self.truth, ignoreBounds=False)
        self.truth.hide()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setToolTip("The true model's held-out log-likelihood, on the same held-out points the runs "
                                "are scored on (nats per point ± standard error)")
        layout = QVBoxLayout(self)  # `summary` is placed by the window (above the results table)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget, 1)
        self.truth_value: float | None = None
        self.set_truth(None)

    def set_truth(self, mean: float | None, se: float | None = None, points: int = 0) -> None:
        """The true model's held-out log-likelihood on the data in use (None: no true model)."""
        self.truth_value = mean if mean is not None and math.isfinite(mean) else None
        if self.truth_value is None:
            self.truth.hide()
            self.summary.setText("True model: unknown for these data")
            return
        self.truth.setValue(self.truth_value)
        self.truth.label.setFormat("truth {value:.3f}")
        self.truth.label.setText(f"truth {self.truth_value:.3f}")  # setFormat draws nothing while hidden
        self.truth.show()
        err = f" ± {se:.3f}" if se is not None and math.isfinite(se) else ""
        where = f" on the {points} held-out points" if points else ""
        self.summary.setText(f"True model: {self.truth_value:.3f}{err} nats/point{where}")

    def set_records(self, records: Sequence[RunRecord]) -> None:
        xs, ys, ses, brushes, px, py, ticks = [], [], [], [], [], [], []
        for i, r in enumerate(records, start=1):
            ticks.append((float(i), f"#{r.run_id}"))
            y = _value(r.metrics, "heldout_loglik")
            if math.isfinite(y):
                xs.append(float(i))
                ys.append(y)
                se = _value(r.metrics, "heldout_loglik_se")
                ses.append(se if math.isfinite(se) else 0.0)
                brushes.append(pg.mkBrush(r.colour))
            p = _value(r.metrics, "ppca_heldout_loglik")
            if math.isfinite(p):
                px.append(float(i) + 0.15)
                py.append(p)
        self.fits.setData(xs, ys, brush=brushes)
        self.errors.setData(x=np.array(xs), y=np.array(ys), height=2 * np.array(ses))
        self.ppca.setData(px, py)
        self.plot.getAxis("bottom").setTicks([ticks])
        if ticks:
            self.plot.setXRange(0.5, len(ticks) + 0.5, padding=0)
        self.plot.enableAutoRange(axis="y")


class SelectMDialog(QDialog):
    """The held-out log-likelihood ± SE against m, PPCA's beside it (and the truth's, if known), the chosen m
    marked: what "Choose m from the data" found."""

    def __init__(self, parent: QWidget | None, chart: dict[str, Any], text: str):
        super().__init__(parent)
        self.setWindowTitle("Choose m from the data")
        self.setModal(False)
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        draw_chart(self.plot, chart)
        self.label = QLabel(text)
        self.label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.widget, 1)
        layout.addWidget(self.label)
        self.resize(640, 440)
