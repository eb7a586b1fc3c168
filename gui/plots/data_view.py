"""Data space: the data, the true manifold f and the learned manifold g_θ over the latent grid, and
samples drawn from a model against the data.

n = 1: x against the latent z (true z when known), the graphs of f and g_θ; n = 2: the plane;
n > 2: the pair of coordinates chosen in the two spin boxes.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from ..tasks import DataBundle, Samples
from .common import DATA_BRUSH, LEGEND_BRUSH, TRUE_PEN, LiveView, PlotTexts, cache_static, fit_view, polylines


def _graph(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(L, P, m) latents and (L, P, n) values -> (L, P, 2) points (z_1, x_1) of the graph of a map."""
    return np.concatenate([grid[..., :1], values[..., :1]], axis=-1)


class PairSelector(QWidget):
    """Two spin boxes choosing which data coordinates (x_i, x_j) a 2-D view shows."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.first, self.second = QSpinBox(), QSpinBox()
        for spin, tip in ((self.first, "i: horizontal axis shows x_i"), (self.second, "j: vertical axis x_j")):
            spin.setPrefix("x")
            spin.setToolTip(tip)
            spin.valueChanged.connect(self.changed)
        layout.addWidget(QLabel("coordinates"))
        layout.addWidget(self.first)
        layout.addWidget(QLabel("vs"))
        layout.addWidget(self.second)
        layout.addStretch(1)
        self.set_dimension(1)

    def set_dimension(self, n: int) -> None:
        for spin, default in ((self.first, 1), (self.second, min(2, n))):
            spin.blockSignals(True)
            spin.setRange(1, n)
            if spin.value() > n or n <= 2:
                spin.setValue(default)
            spin.blockSignals(False)
        self.setVisible(n > 2)

    def pair(self) -> tuple[int, int]:
        """0-based column indices."""
        return self.first.value() - 1, self.second.value() - 1

    def set_pair(self, i: int, j: int) -> None:
        self.first.setValue(i + 1)
        self.second.setValue(j + 1)


def _axes(texts: PlotTexts, n: int, pair: tuple[int, int]) -> None:
    if n == 1:
        texts.set(bottom="latent z₁", left="x₁")
    else:
        texts.set(bottom=f"x{pair[0] + 1}", left=f"x{pair[1] + 1}")


class DataView(QWidget, LiveView):
    """The data with the true manifold f and the live learned manifold g_θ."""

    point_clicked = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.pairs = PairSelector()
        self.pairs.changed.connect(self._refit)
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        self.texts = PlotTexts(self.plot)
        self.texts.set(title="Data, true f and learned g_θ")
        self.plot.addLegend(offset=(5, 5), brush=LEGEND_BRUSH)
        self.scatter = pg.ScatterPlotItem(size=4, pen=None, brush=DATA_BRUSH, name="data x")
        self.true_curve = pg.PlotDataItem(pen=TRUE_PEN, name="true f", connect="finite")
        # redrawn at every frame: a bare PlotCurveItem, without PlotDataItem's per-call bookkeeping
        self.learned_curve = pg.PlotCurveItem(pen=pg.mkPen("#D55E00", width=2), name="learned g_θ",
                                             connect="finite")
        self.learned_curve.setSegmentedLineMode("off")  # one stroked path: 30 % faster than line segments
        self.chosen = pg.ScatterPlotItem(size=14, symbol="o", pen=pg.mkPen("#c00000", width=2.5), brush=None)
        for item in (self.scatter, self.true_curve, self.learned_curve, self.chosen):
            self.plot.addItem(item)
        cache_static(self.scatter, self.true_curve)
        self.scatter.sigClicked.connect(self._on_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pairs)
        layout.addWidget(self.widget, 1)
        self.data: DataBundle | None = None
        self.learned: tuple[np.ndarray, np.ndarray] | None = None  # (grid (L,P,m), manifold (L,P,n))
        self.selected: int | None = None
        self._static = False  # new data or another pair: draw the data and f again, and range the view
        self._chosen = False  # another chosen point

    def set_data(self, data: DataBundle | None) -> None:
        self.data = data
        self.selected = None
        if data is not None:
            self.pairs.set_dimension(data.dataset.n)
        self._refit()

    def _refit(self) -> None:
        self._static = self._chosen = True
        self.mark_dirty()

    def set_learned(self, grid: np.ndarray | None, values: np.ndarray | None) -> None:
        self.learned = None if grid is None or values is None else (grid, values)
        self.mark_dirty()

    def set_selected(self, index: int | None) -> None:
        self.selected = index
        self._chosen = True
        self.mark_dirty()

    def set_learned_colour(self, colour: str) -> None:
        self.learned_curve.setPen(pg.mkPen(colour, width=2))

    def _on_clicked(self, item: pg.ScatterPlotItem, points: list, ev: object) -> None:
        if len(points):
            self.point_clicked.emit(int(points[0].index()))

    def redraw(self) -> None:
        """The learned manifold at every frame; the data, f and the chosen point only when they change."""
        data = self.data
        if data is None:
            for item in (self.scatter, self.true_curve, self.learned_curve, self.chosen):
                item.setData([], [])
            return
        n = data.dataset.n
        pair = self.pairs.pair()
        if self._static:
            _axes(self.texts, n, pair)
            _scatter(self.scatter, pair, data.x_shown, data.z_shown)
            self._set_lines(self.true_curve, n, pair, data.true_grid, data.true_manifold)
        grid, values = self.learned if self.learned is not None else (None, None)
        self._set_lines(self.learned_curve, n, pair, grid, values)
        if self._chosen:
            self._chosen = False
            self._draw_chosen(n, pair)
        if self._static:
            self._static = False
            fit_view(self.plot)

    def _draw_chosen(self, n: int, pair: tuple[int, int]) -> None:
        data = self.data
        if data is None or self.selected is None or self.selected >= len(data.dataset):
            self.chosen.setData([], [])
            return
        x = data.dataset.x[self.selected]
        if n == 1:
            z = data.dataset.z
            self.chosen.setData([z[self.selected, 0] if z is not None else 0.0], [x[0]])
        else:
            self.chosen.setData([x[pair[0]]], [x[pair[1]]])

    @staticmethod
    def _set_lines(item: pg.PlotDataItem | pg.PlotCurveItem, n: int, pair: tuple[int, int], grid: np.ndarray | None,
                   values: np.ndarray | None) -> None:
        if grid is None or values is None:
            item.setData([], [])
        elif n == 1:
            item.setData(*polylines(_graph(grid, values), (0, 1)))
        else:
            item.setData(*polylines(values, pair))


class SamplesView(QWidget, LiveView):
    """New draws from the fitted (or the true) model against the data, on demand."""

    sample_requested = Signal(str, int)  # "fit" or "truth", count

    def __init__(self, pairs: PairSelector):
        super().__init__()
        self.pairs = pairs
        pairs.changed.connect(self.mark_dirty)
        self.count = QSpinBox()
        self.count.setRange(10, 100_000)
        self.count.setValue(1000)
        self.count.setToolTip("How many points to draw: z ~ N(0, I_m), x = g(z) + σ ε")
        self.fit_button = QPushButton("Sample from fit")
        self.fit_button.setToolTip("Draw from the fitted model of the run selected in the results table")
        self.fit_button.clicked.connect(lambda: self.sample_requested.emit("fit", self.count.value()))
        self.truth_button = QPushButton("Sample from true model")
        self.truth_button.setToolTip("Draw new points from the true model f, σ of the simulation")
        self.truth_button.clicked.connect(lambda: self.sample_requested.emit("truth", self.count.value()))
        bar = QHBoxLayout()
        bar.addWidget(QLabel("points"))
        bar.addWidget(self.count)
        bar.addWidget(self.fit_button)
        bar.addWidget(self.truth_button)
        bar.addStretch(1)
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        self.texts = PlotTexts(self.plot)
        self.texts.set(title="Generated samples against the data")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.addLegend(offset=(5, 5), brush=LEGEND_BRUSH)
        self.data_scatter = pg.ScatterPlotItem(size=4, pen=None, brush=DATA_BRUSH, name="data")
        self.sample_scatter = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(213, 94, 0, 150),
                                                 name="samples")
        self.plot.addItem(self.data_scatter)
        self.plot.addItem(self.sample_scatter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.widget, 1)
        self.data: DataBundle | None = None
        self.samples: Samples | None = None

    def set_data(self, data: DataBundle | None) -> None:
        self.data = data
        self.samples = None
        self.mark_dirty()

    def set_samples(self, samples: Samples) -> None:
        self.samples = samples
        self.mark_dirty()

    def refresh(self) -> bool:
        drew = super().refresh()
        if drew:
            fit_view(self.plot)  # samples arrive on demand, rarely: range every redraw
        return drew

    def set_enabled(self, fit: bool, truth: bool) -> None:
        self.fit_button.setEnabled(fit)
        self.truth_button.setEnabled(truth)

    def redraw(self) -> None:
        pair = self.pairs.pair()
        data, samples = self.data, self.samples
        _scatter(self.data_scatter, pair, *((data.x_shown, data.z_shown) if data else (None, None)))
        _scatter(self.sample_scatter, pair, *((samples.x, samples.z) if samples else (None, None)))
        _axes(self.texts, data.dataset.n if data is not None else 2, pair)
        self.texts.set(title="Generated samples against the data" if samples is None
                       else f"{samples.label} against the data")


def _scatter(item: pg.ScatterPlotItem, pair: tuple[int, int], points: np.ndarray | None,
             latents: np.ndarray | None) -> None:
    """Points in the data view's axes: (z_1, x_1) for n = 1, else the chosen pair of coordinates."""
    if points is None:
        item.setData([], [])
    elif points.shape[1] == 1:
        item.setData(latents[:, 0] if latents is not None else np.zeros(len(points)), points[:, 0])
    else:
        item.setData(points[:, pair[0]], points[:, pair[1]])
