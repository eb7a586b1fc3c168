"""The posterior p(z | x_i) of a chosen data point under the fitted decoder (exact on a grid, m <= 2),
beside the VAE encoder's q(z | x_i)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget

from ..tasks import PosteriorGrid
from .common import LiveView, legend_below, plain_axes

COLOURMAP = pg.colormap.get("viridis")


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
        self.button.setToolTip("p(z | x_i) ∝ p(x_i | z) p(z) under the selected run's decoder, normalised on "
                               "a grid over [-4.5, 4.5]^m (m ≤ 2); and the encoder's q(z | x_i) for a VAE")
        self.button.clicked.connect(lambda: self.compute_requested.emit(self.index.value()))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("point i"))
        bar.addWidget(self.index)
        bar.addWidget(self.button)
        bar.addWidget(self.info, 1)

        # m = 1: two curves in one plot
        self.line_widget = pg.PlotWidget()
        self.line_plot = self.line_widget.getPlotItem()
        self.line_plot.showGrid(x=True, y=True, alpha=0.2)
        legend_below(self.line_plot)
        self.line_plot.setLabel("bottom", "z")
        self.line_plot.setLabel("left", "density")
        plain_axes(self.line_plot)
        self.exact_curve = self.line_plot.plot(pen=pg.mkPen("#0072B2", width=2), name="exact p(z | x)")
        self.encoder_curve = self.line_plot.plot(pen=pg.mkPen("#D55E00", width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
                                                 name="encoder q(z | x)")
        # m = 2: two images side by side
        self.image_widget = pg.GraphicsLayoutWidget()
        self.image_plots, self.images = [], []
        for col, title in enumerate(("exact p(z | x)", "encoder q(z | x)")):
            plot = self.image_widget.addPlot(row=0, col=col, title=title)
            plot.setAspectLocked(True)
            plain_axes(plot)
            plot.setLabel("bottom", "z₁")
            plot.setLabel("left", "z₂")
            image = pg.ImageItem(axisOrder="row-major")
            image.setColorMap(COLOURMAP)
            plot.addItem(image)
            self.image_plots.append(plot)
            self.images.append(image)
        self.image_plots[1].setXLink(self.image_plots[0])
        self.image_plots[1].setYLink(self.image_plots[0])
        self.stack = QStackedWidget()
        self.stack.addWidget(self.line_widget)
        self.stack.addWidget(self.image_widget)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        self.result: PosteriorGrid | None = None

    def set_point_count(self, count: int) -> None:
        self.index.setRange(0, max(0, count - 1))

    def set_index(self, index: int) -> None:
        self.index.setValue(index)

    def set_result(self, result: PosteriorGrid | None) -> None:
        self.result = result
        self.mark_dirty()

    def set_available(self, ok: bool, reason: str) -> None:
        self.button.setEnabled(ok)
        if not ok:
            self.info.setText(reason)

    def redraw(self) -> None:
        r = self.result
        if r is None:
            self.exact_curve.setData([], [])
            self.encoder_curve.setData([], [])
            for image in self.images:
                image.clear()
            return
        point = ", ".join(f"{v:.3g}" for v in r.x[:4]) + (", …" if len(r.x) > 4 else "")
        self.info.setText(f"{r.label}: x_{r.index} = ({point})")
        if r.exact.ndim == 1:
            self.stack.setCurrentWidget(self.line_widget)
            self.exact_curve.setData(r.axis, r.exact)
            if r.encoder is None:
                self.encoder_curve.setData([], [])
            else:
                self.encoder_curve.setData(r.axis, r.encoder)
            return
        self.stack.setCurrentWidget(self.image_widget)
        lo, hi = float(r.axis[0]), float(r.axis[-1])
        rect = QRectF(lo, lo, hi - lo, hi - lo)
        top = float(max(r.exact.max(), 0.0 if r.encoder is None else r.encoder.max())) or 1.0
        for image, density in zip(self.images, (r.exact, r.encoder), strict=True):
            if density is None:
                image.clear()
                continue
            # row-major images are indexed [row = z2, column = z1]; the grid is indexed [z1, z2]
            image.setImage(np.ascontiguousarray(density.T, dtype=np.float32), levels=(0.0, top))
            image.setRect(rect)
        self.image_plots[1].setTitle("encoder q(z | x)" if r.encoder is not None else "encoder q(z | x): "
                                     "VAE runs only")
