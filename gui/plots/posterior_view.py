"""The posterior p(z | x_i) of a chosen data point under the fitted decoder (exact on a grid over its mass,
m <= 2), and over it how the run's estimator approximates log p(x_i): its quadrature nodes or importance
draws (area ∝ weight), its MCMC chain's states, or its encoder's q(z | x_i). The record drawn
(`engine.integral.PointPosterior`) is the view's only state."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget

from engine.integral import EXACT_TOL, ChainStates, EncoderQ, ImportanceDraws, NodeRule, PointPosterior

from .common import LiveView, PlotTexts, legend_below

COLOURMAP = pg.colormap.get("viridis")
EXACT_PEN = pg.mkPen("#0072B2", width=2)
Q_PEN = pg.mkPen("#D55E00", width=2, style=Qt.PenStyle.DashLine)
Q_CONTOUR_PEN = pg.mkPen("#FF8C1A", width=2, style=Qt.PenStyle.DashLine)
CHAIN_COLOUR = "#009E73"
CHAIN_BRUSH = pg.mkBrush(0, 158, 115, 170)
MARK_BRUSH = pg.mkBrush(204, 121, 167, 190)  # nodes and draws (reddish purple)
MARK_PEN = pg.mkPen("#222222", width=1)
MAX_MARK = 20.0  # px, the diameter of the largest weight's mark (area ∝ weight)
MIN_MARK = 3.0


def mark_sizes(weights: np.ndarray) -> np.ndarray:
    """Mark diameters in pixels with area ∝ weight (the largest MAX_MARK, none below MIN_MARK)."""
    top = float(weights.max()) if len(weights) else 0.0
    if top <= 0:
        return np.full(len(weights), MIN_MARK)
    return np.maximum(MAX_MARK * np.sqrt(weights / top), MIN_MARK)


def marks_of(a: object) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str] | None:
    """The approximation's points (P, m), their weights (or None), the exact density at them, and their name."""
    if isinstance(a, NodeRule):
        name = f"{'adaptive ' if a.adaptive else ''}Gauss-Hermite nodes (area ∝ weight)"
        return a.nodes, a.weights, a.density, name
    if isinstance(a, ImportanceDraws):
        return a.draws, a.weights, a.density, f"draws from {PROPOSALS[a.proposal]} (area ∝ weight)"
    if isinstance(a, EncoderQ) and a.draws is not None:
        return a.draws, a.weights, a.density, "draws from q (area ∝ weight)"
    if isinstance(a, ChainStates):
        return a.states, None, a.density, "chain states"
    return None


PROPOSALS = {"prior": "the prior", "laplace": "the Laplace mixture"}


def _f(v: float) -> str:
    return f"{v:.3f}"


def summary(r: PointPosterior) -> str:
    """The info line: the estimator, its estimate beside the exact log p(x), the gap, ESS or acceptance."""
    point = ", ".join(f"{v:.3g}" for v in r.x[:4]) + (", …" if len(r.x) > 4 else "")
    head = f"{r.label}: x_{r.index} = ({point})\n"
    a = r.approximation
    if a is None:
        return head.strip()
    exact = f"exact {_f(r.log_px)}"
    if r.grid_change > EXACT_TOL:  # the integration grid reached its cap (or never settled)
        exact += f" ± {r.grid_change:.1g}"
    gap = f", gap {r.gap:.3g} nats" if r.gap is not None else ""
    if isinstance(a, NodeRule):
        return f"{head}{a.estimator}, {a.rule}: log p(x) ≈ {_f(a.estimate)} ({exact}{gap})"
    if isinstance(a, ImportanceDraws):
        K = len(a.weights)
        return (f"{head}{a.estimator}, K = {K} from {PROPOSALS[a.proposal]}: log p(x) ≈ {_f(a.estimate)} "
                f"({exact}{gap}); ESS {a.ess:.1f} of {K}")
    if isinstance(a, ChainStates):
        kind = "MALA" if a.sampler == "langevin" else "HMC"
        return (f"{head}{a.estimator}, {kind}, {len(a.states)} states: no log p(x) estimate of its own "
                f"({exact}); acceptance {a.acceptance:.2f}, step {a.step_size:.3g}")
    if isinstance(a, EncoderQ) and a.draws is not None:
        K = len(a.draws)
        return (f"{head}{a.estimator}, K = {K}: {a.estimate_name} = {_f(a.estimate)} from these draws "
                f"({exact}{gap}), {_f(a.iwae_bound)} on average over {a.iwae_sets} sets; ELBO {_f(a.elbo)}; "
                f"ESS {a.ess:.1f} of {K}")
    return f"{head}{a.estimator}: ELBO {_f(a.estimate)} ({exact}{gap})"


class PosteriorView(QWidget, LiveView):
    compute_requested = Signal(int)
    index_changed = Signal(int)

    def __init__(self) -> None:
        super().__init__()
        self.index = QSpinBox()
        self.index.setRange(0, 0)
        self.index.setToolTip("i: the data point x_i whose posterior p(z | x_i) is shown (or click a point "
                              "in the data view)")
        self.index.valueChanged.connect(self.index_changed)
        self.button = QPushButton("Compute posterior")
        self.button.setToolTip("p(z | x_i) ∝ p(x_i | z) p(z) under the selected run's decoder, normalised on a "
                               "grid over its mass (m ≤ 2), and how the run's estimator approximates log p(x_i): "
                               "its nodes, draws, chain or encoder q")
        self.button.clicked.connect(lambda: self.compute_requested.emit(self.index.value()))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("point i"))
        bar.addWidget(self.index)
        bar.addWidget(self.button)
        bar.addWidget(self.info, 1)

        # m = 1: the exact curve, q, the chain's histogram and the marks on the curve
        self.line_widget = pg.PlotWidget()
        self.line_plot = self.line_widget.getPlotItem()
        self.line_plot.showGrid(x=True, y=True, alpha=0.2)
        self.line_texts = PlotTexts(self.line_plot)
        self.line_texts.set(bottom="z", left="density")
        self.line_legend = legend_below(self.line_plot, columns=2)
        self.exact_curve = self.line_plot.plot(pen=EXACT_PEN)
        self.encoder_curve = self.line_plot.plot(pen=Q_PEN)
        self.hist_curve = pg.PlotDataItem(stepMode="center", pen=pg.mkPen(CHAIN_COLOUR, width=1.5),
                                          fillLevel=0, brush=pg.mkBrush(0, 158, 115, 40))
        self.line_plot.addItem(self.hist_curve)
        self.line_marks = pg.ScatterPlotItem(size=12, pen=MARK_PEN, brush=MARK_BRUSH, symbol="o")
        self.line_states = pg.ScatterPlotItem(size=6, pen=pg.mkPen("w"), brush=CHAIN_BRUSH, symbol="o")
        for item in (self.line_states, self.line_marks):
            self.line_plot.addItem(item)

        # m = 2: the exact density as a heatmap with its colour scale; the marks, the chain's path, q's contours
        self.image_widget = pg.GraphicsLayoutWidget()
        self.image_plot = self.image_widget.addPlot(row=0, col=0)
        self.image_texts = PlotTexts(self.image_plot)
        self.image_texts.set(bottom="z₁", left="z₂")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setColorMap(COLOURMAP)
        self.image_plot.addItem(self.image)
        self.colour_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=COLOURMAP, interactive=False,
                                          label="exact p(z | x)", width=14)
        self.colour_bar.setImageItem(self.image, insert_in=self.image_plot)
        self.path = pg.PlotCurveItem(pen=pg.mkPen(255, 255, 255, 150, width=1))
        self.image_plot.addItem(self.path)
        self.contours = [pg.IsocurveItem(pen=Q_CONTOUR_PEN, axisOrder="row-major") for _ in range(2)]
        for contour in self.contours:
            contour.setParentItem(self.image)  # in the image's (row, column) coordinates, moved with its rect
        self.image_marks = pg.ScatterPlotItem(size=12, pen=pg.mkPen("w", width=1), brush=MARK_BRUSH, symbol="o")
        self.image_states = pg.ScatterPlotItem(size=5, pen=pg.mkPen("w", width=0.5), brush=CHAIN_BRUSH, symbol="o")
        for item in (self.image_states, self.image_marks):
            self.image_plot.addItem(item)
        self.image_legend = legend_below(self.image_plot, columns=2)
        # legend samples of what the heatmap draws (items that are not curves of their own)
        self.q_sample = pg.PlotDataItem(pen=Q_CONTOUR_PEN)
        self.chain_sample = pg.PlotDataItem(pen=pg.mkPen(150, 150, 150, width=1), symbol="o", symbolSize=6,
                                            symbolBrush=CHAIN_BRUSH, symbolPen=pg.mkPen("w"))
        self.stack = QStackedWidget()
        self.stack.addWidget(self.line_widget)
        self.stack.addWidget(self.image_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self.result: PointPosterior | None = None
        self.reason = ""  # why Compute is not available ('' when it is)

    def set_point_count(self, count: int) -> None:
        self.index.setRange(0, max(0, count - 1))

    def set_index(self, index: int) -> None:
        self.index.setValue(index)

    def set_result(self, result: PointPosterior | None) -> None:
        self.result = result
        self.mark_dirty()

    def set_available(self, ok: bool, reason: str) -> None:
        """Whether Compute can run now; `reason` (why not) shows while no posterior is on show."""
        self.button.setEnabled(ok)
        if reason != self.reason:
            self.reason = reason
            self.mark_dirty()

    # ------------------------------------------------------------------------------------------- drawing
    def redraw(self) -> None:
        r = self.result
        self.info.setText(summary(r) if r is not None else self.reason)
        note = r.approximation.note if r is not None and r.approximation is not None else ""
        self.info.setToolTip(note)
        if r is None:
            for item in (self.exact_curve, self.encoder_curve, self.hist_curve):
                item.setData([], [])
            for scatter in (self.line_marks, self.line_states, self.image_marks, self.image_states):
                scatter.setData([], [])
            self.path.setData([], [])
            self.image.clear()
            for contour in self.contours:
                contour.setData(None)
            self.line_legend.clear()
            self.image_legend.clear()
            for texts in (self.line_texts, self.image_texts):
                texts.set(title="Compute posterior: p(z | x_i) of the chosen point")
            self.colour_bar.setLevels((0.0, 1.0))
            return
        if r.exact.ndim == 1:
            self.stack.setCurrentWidget(self.line_widget)
            self._draw_line(r)
        else:
            self.stack.setCurrentWidget(self.image_widget)
            self._draw_image(r)

    def _title(self, r: PointPosterior) -> str:
        a = r.approximation
        what = {NodeRule: "nodes", ImportanceDraws: "draws", ChainStates: "chain", EncoderQ: "q(z | x)"}
        return f"p(z | x_{r.index}) and the {a.estimator} {what[type(a)]}" if a is not None else \
            f"exact p(z | x_{r.index})"

    def _draw_line(self, r: PointPosterior) -> None:
        a = r.approximation
        legend = self.line_legend
        legend.clear()
        self.line_texts.set(title=self._title(r))
        self.exact_curve.setData(r.axis, r.exact)
        legend.addItem(self.exact_curve, "exact p(z | x)")
        top = float(r.exact.max())
        if r.encoder is not None:
            self.encoder_curve.setData(r.axis, r.encoder)
            legend.addItem(self.encoder_curve, "encoder q(z | x)")
            top = max(top, float(r.encoder.max()))
        else:
            self.encoder_curve.setData([], [])
        if isinstance(a, ChainStates) and a.histogram is not None:
            edges, dens = a.histogram
            self.hist_curve.setData(edges, dens)
            legend.addItem(self.hist_curve, "histogram of the chain states")
            top = max(top, float(dens.max()))
        else:
            self.hist_curve.setData([], [])
        self.line_marks.setData([], [])
        self.line_states.setData([], [])
        marks = marks_of(a)
        if marks is not None:
            points, weights, density, name = marks
            if weights is None:
                self.line_states.setData(points[:, 0], density)
                legend.addItem(self.line_states, f"{name}, on the curve")
            else:
                self.line_marks.setData(points[:, 0], density, size=mark_sizes(weights))
                legend.addItem(self.line_marks, f"{name}, on the curve")
        self.line_plot.setXRange(float(r.axis[0]), float(r.axis[-1]), padding=0)
        self.line_plot.setYRange(0.0, 1.08 * top, padding=0)

    def _draw_image(self, r: PointPosterior) -> None:
        a = r.approximation
        legend = self.image_legend
        legend.clear()
        self.image_texts.set(title=self._title(r))
        x_axis, y_axis = r.axis, r.axis2 if r.axis2 is not None else r.axis
        dx, dy = x_axis[1] - x_axis[0], y_axis[1] - y_axis[0]
        rect = QRectF(x_axis[0] - dx / 2, y_axis[0] - dy / 2, x_axis[-1] - x_axis[0] + dx, y_axis[-1] - y_axis[0] + dy)
        top = float(r.exact.max()) or 1.0
        # row-major images are indexed [row = z2, column = z1]; the grid is indexed [z1, z2]
        self.image.setImage(np.ascontiguousarray(r.exact.T, dtype=np.float32), levels=(0.0, top))
        self.image.setRect(rect)
        self.colour_bar.setLevels((0.0, top))
        if isinstance(a, EncoderQ) and r.encoder is not None:
            q = np.ascontiguousarray(r.encoder.T, dtype=np.float32)
            for contour, level in zip(self.contours, a.levels, strict=True):
                contour.setData(q, level)
            legend.addItem(self.q_sample, "encoder q(z | x): 1 and 2 sd contours")
        else:
            for contour in self.contours:
                contour.setData(None)
        for item in (self.image_marks, self.image_states, self.path):
            item.setData([], [])
        marks = marks_of(a)
        if marks is not None:
            points, weights, _, name = marks
            if weights is None:  # the chain: its states and the path between them
                self.path.setData(points[:, 0], points[:, 1])
                self.image_states.setData(points[:, 0], points[:, 1])
                legend.addItem(self.chain_sample, "chain states and their path")
            else:
                self.image_marks.setData(points[:, 0], points[:, 1], size=mark_sizes(weights))
                legend.addItem(self.image_marks, name)
        self.image_plot.setXRange(rect.left(), rect.right(), padding=0)
        self.image_plot.setYRange(rect.top(), rect.bottom(), padding=0)
