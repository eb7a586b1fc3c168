"""Data space: the data, the true manifold f and the learned manifold g_θ over the latent grid, and
samples drawn from a model against the data.

n = 1: x against the latent z (true z when known), the graphs of f and g_θ; n = 2: the plane;
n > 2: the pair of coordinates chosen in the two spin boxes.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Signal
from PySide6.QtGui import QResizeEvent, QValidator
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from engine.alignment import ManifoldView

from ..tasks import DataBundle, Samples
from .common import DATA_BRUSH, TRUE_PEN, LiveView, PlotTexts, cache_static, fit_view, legend_below, polylines


def _graph(grid: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(L, P, m) latents and (L, P, n) values -> (L, P, 2) points (z_1, x_1) of the graph of a map."""
    return np.concatenate([grid[..., :1], values[..., :1]], axis=-1)


class ColumnSpinBox(QSpinBox):
    """A spin box over coordinates 1..n that shows each by its column name (x1..xn, or a CSV header's)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: tuple[str, ...] = ()

    def set_names(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)
        self.lineEdit().setText(self.textFromValue(self.value()))
        self.updateGeometry()

    def textFromValue(self, value: int) -> str:
        return self.names[value - 1] if 1 <= value <= len(self.names) else f"x{value}"

    def valueFromText(self, text: str) -> int:
        text = text.strip()
        if text in self.names:
            return self.names.index(text) + 1
        digits = text[1:] if text[:1] in ("x", "X") else text
        return int(digits) if digits.isdigit() else self.value()

    def validate(self, text: str, pos: int) -> object:
        t = text.strip()
        numbered = t[:1] in ("x", "X") and t[1:].isdigit() and self.minimum() <= int(t[1:]) <= self.maximum()
        if t in self.names or numbered:
            return QValidator.State.Acceptable, text, pos
        if any(n.startswith(t) for n in self.names) or t in ("", "x", "X"):
            return QValidator.State.Intermediate, text, pos
        return super().validate(text, pos)


class PairSelector(QWidget):
    """Two spin boxes choosing which data coordinates (x_i, x_j) a 2-D view shows (n >= 2): always two
    different ones (choosing the other box's coordinate swaps the two)."""

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.first, self.second = ColumnSpinBox(), ColumnSpinBox()
        for spin, tip in ((self.first, "i: horizontal axis shows x_i (a CSV's column names)"),
                          (self.second, "j: vertical axis x_j")):
            spin.setToolTip(tip)
            spin.valueChanged.connect(self._on_changed)
        layout.addWidget(QLabel("coordinates"))
        layout.addWidget(self.first)
        layout.addWidget(QLabel("vs"))
        layout.addWidget(self.second)
        layout.addStretch(1)
        self._shown = (1, 1)  # the pair on show (1-based), to swap from
        self._last = (1, 2)  # the last pair of two coordinates shown (kept through n = 1 data)
        self.set_dimension(1)

    def _set(self, i: int, j: int) -> None:
        for spin, v in ((self.first, i), (self.second, j)):
            spin.blockSignals(True)
            spin.setValue(v)
            spin.blockSignals(False)
        self._shown = (self.first.value(), self.second.value())
        if self._shown[0] != self._shown[1]:
            self._last = self._shown

    def _on_changed(self) -> None:
        i, j = self.first.value(), self.second.value()
        if i == j and self.first.maximum() >= 2:  # the same coordinate twice: swap instead
            old_i, old_j = self._shown
            i, j = (i, old_i) if i != old_i else (old_j, j)
        self._set(i, j)
        self.changed.emit()

    def set_dimension(self, n: int, names: tuple[str, ...] = ()) -> None:
        """Coordinates of n-dimensional data (named `names`, else x1..xn): the pair on show if it is two of
        them, else the first two."""
        for spin in (self.first, self.second):
            spin.blockSignals(True)
            spin.setRange(1, n)
            spin.set_names(names if len(names) == n else ())
            spin.blockSignals(False)
        i, j = self._last
        if n == 1:
            self._set(1, 1)
        else:
            self._set(*((i, j) if i <= n and j <= n else (1, 2)))
        self.setVisible(n >= 2)

    def names(self) -> tuple[str, ...]:
        """The coordinates' names (x1..xn unless the data's file named them)."""
        n = self.first.maximum()
        return self.first.names if len(self.first.names) == n else tuple(f"x{j + 1}" for j in range(n))

    def pair(self) -> tuple[int, int]:
        """0-based column indices."""
        return self.first.value() - 1, self.second.value() - 1

    def last_pair(self) -> tuple[int, int]:
        """The last two coordinates shown (0-based), also while n = 1 data show none: what is saved."""
        return self._last[0] - 1, self._last[1] - 1

    def set_pair(self, i: int, j: int) -> bool:
        """Show coordinates i and j (0-based) if they are two different coordinates of the data."""
        n = self.first.maximum()
        if not (0 <= i < n and 0 <= j < n and i != j):
            return False
        self._set(i + 1, j + 1)
        self.changed.emit()
        return True


def _axes(texts: PlotTexts, n: int, pair: tuple[int, int], names: tuple[str, ...] = ()) -> None:
    """Axis titles: the coordinates' names (a CSV header's, else x1..xn)."""
    def name(j: int) -> str:
        return names[j] if j < len(names) else f"x{j + 1}"
    if n == 1:
        texts.set(bottom="latent z₁", left=names[0] if names and names[0] != "x1" else "x₁")
    else:
        texts.set(bottom=name(pair[0]), left=name(pair[1]))


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
        self.legend = legend_below(self.plot)
        self.scatter = pg.ScatterPlotItem(size=4, pen=None, brush=DATA_BRUSH, name="data x")
        self.true_curve = pg.PlotDataItem(pen=TRUE_PEN, name="true f", connect="finite")
        # redrawn at every frame: a bare PlotCurveItem, without PlotDataItem's per-call bookkeeping
        self.learned_curve = pg.PlotCurveItem(pen=pg.mkPen("#D55E00", width=2), name="learned g_θ",
                                             connect="finite")
        self.learned_curve.setSegmentedLineMode("off")  # one stroked path: faster to draw than line segments
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
        self.learned: ManifoldView | None = None
        self.aligned = True  # draw g_θ through its Procrustes map onto the true latents, where known
        self._learned_label = "learned g_θ"
        self._live = False
        self.selected: int | None = None
        self._static = False  # new data or another pair: draw the data and f again, and range the view
        self._chosen = False  # another chosen point

    def set_data(self, data: DataBundle | None) -> None:
        self.data = data
        self.selected = None
        if data is not None:
            self.pairs.set_dimension(data.dataset.n, data.names)
        self._refit()

    def _refit(self) -> None:
        self._static = self._chosen = True
        self.mark_dirty()

    def set_learned(self, view: ManifoldView | None, live: bool = False) -> None:
        """The g_θ to draw; `live`: a training run's snapshot, whose map still moves (the legend then names
        the method, not the map, and is not laid out again at every snapshot)."""
        self.learned = view
        self._live = live
        if view is None:  # no run's g_θ on show: the legend names none
            self._learned_label = "learned g_θ"
        self._label_learned()
        self.mark_dirty()

    def set_aligned(self, aligned: bool) -> None:
        self.aligned = aligned
        self._label_learned()
        self.mark_dirty()

    def _label_learned(self) -> None:
        """The legend's name of g_θ, with how it is drawn: aligned (and by which map) or raw."""
        label, view = self._learned_label, self.learned
        if view is not None and view.latent_map is not None:
            how = "Procrustes" if self._live else view.latent_map.describe()
            label += f", aligned ({how})" if self.aligned else ", raw"
        self.legend.set_label(self.learned_curve, label)

    def set_selected(self, index: int | None) -> None:
        self.selected = index
        self._chosen = True
        self.mark_dirty()

    def set_learned_colour(self, colour: str, label: str = "learned g_θ") -> None:
        """The pen of g_θ (its run's colour), in the legend too, where `label` names whose g_θ it is."""
        self.learned_curve.setPen(pg.mkPen(colour, width=2))
        self._learned_label = label
        self._label_learned()
        self.legend.repaint_sample(self.learned_curve)

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
            truth = data.true_manifold is not None
            self.legend.show_entry(self.true_curve, "true f", truth)
            self.texts.set(title="Data, true f and learned g_θ" if truth else "Data and learned g_θ")
            _axes(self.texts, n, pair, data.names)
            _scatter(self.scatter, pair, data.x_shown, data.z_shown)
            self._set_lines(self.true_curve, n, pair, data.true_grid, data.true_manifold)
        grid, values = self.learned.shown(self.aligned) if self.learned is not None else (None, None)
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
        self.bar = bar = QGridLayout()  # one row, or two where the view is narrow (`resizeEvent`)
        self._bar_widgets = (QLabel("points"), self.count, self.fit_button, self.truth_button)
        self._two_rows: bool | None = None
        self._arrange(False)
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        self.texts = PlotTexts(self.plot)
        self.texts.set(title="Generated samples against the data")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.legend = legend_below(self.plot)
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
        self.aligned = True  # a fit's latents through its run's Procrustes map (n = 1 draws x against z)

    def _arrange(self, two_rows: bool) -> None:
        """The controls in one row, or the buttons under the count: the view (and the tabs it is in) may
        then be narrower than the four controls side by side."""
        if two_rows == self._two_rows:
            return
        self._two_rows = two_rows
        for w in self._bar_widgets:
            self.bar.removeWidget(w)
        places = ((0, 0), (0, 1), (1, 0), (1, 1)) if two_rows else ((0, 0), (0, 1), (0, 2), (0, 3))
        for w, (row, col) in zip(self._bar_widgets, places, strict=True):
            self.bar.addWidget(w, row, col)
        self.bar.setColumnStretch(4, 1)

    def _one_row_width(self) -> int:
        hints = [w.sizeHint().width() for w in self._bar_widgets]
        return sum(hints) + self.bar.horizontalSpacing() * len(hints) + 4

    def minimumSizeHint(self) -> QSize:
        """As narrow as the two-row arrangement allows, whichever is on show."""
        hints = [w.sizeHint().width() for w in self._bar_widgets]
        width = max(hints[0] + hints[1], hints[2] + hints[3]) + 3 * self.bar.horizontalSpacing() + 4
        return QSize(width, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._arrange(self.width() < self._one_row_width())

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

    def set_aligned(self, aligned: bool) -> None:
        self.aligned = aligned
        self.mark_dirty()

    def set_enabled(self, fit: bool, truth: bool) -> None:
        self.fit_button.setEnabled(fit)
        self.truth_button.setEnabled(truth)

    def redraw(self) -> None:
        pair = self.pairs.pair()
        data, samples = self.data, self.samples
        _scatter(self.data_scatter, pair, *((data.x_shown, data.z_shown) if data else (None, None)))
        z = None if samples is None else samples.z
        mapped = samples is not None and samples.z_aligned is not None and samples.x.shape[1] == 1
        if mapped and self.aligned:
            z = samples.z_aligned
        _scatter(self.sample_scatter, pair, *((samples.x, z) if samples else (None, None)))
        _axes(self.texts, data.dataset.n if data is not None else 2, pair, data.names if data is not None else ())
        how = (" (z aligned to the truth)" if self.aligned else " (z raw)") if mapped else ""
        self.texts.set(title="Generated samples against the data" if samples is None
                       else f"{samples.label} against the data{how}")


def _scatter(item: pg.ScatterPlotItem, pair: tuple[int, int], points: np.ndarray | None,
             latents: np.ndarray | None) -> None:
    """Points in the data view's axes: (z_1, x_1) for n = 1, else the chosen pair of coordinates."""
    if points is None:
        item.setData([], [])
    elif points.shape[1] == 1:
        item.setData(latents[:, 0] if latents is not None else np.zeros(len(points)), points[:, 0])
    else:
        item.setData(points[:, pair[0]], points[:, pair[1]])
