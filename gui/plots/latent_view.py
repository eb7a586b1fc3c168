"""Latent space: the true latents z of the shown training points against the latents the estimator
infers for them (encoder means, posterior means or modes, or MCMC chain states), Procrustes-aligned to
the true z by the engine when both are known."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from engine.estimator_table import INFO

from .common import DATA_BRUSH, LiveView, PlotTexts, cache_static, fit_view, legend_below, plane


class LatentView(QWidget, LiveView):
    """m = 1 on both sides: inferred against true z, with the diagonal; otherwise both point clouds in
    the plane of the first two latent coordinates."""

    def __init__(self) -> None:
        super().__init__()
        self.widget = pg.PlotWidget()
        self.plot = self.widget.getPlotItem()
        self.texts = PlotTexts(self.plot)
        self.legend = legend_below(self.plot)
        self.true_scatter = pg.ScatterPlotItem(size=4, pen=None, brush=DATA_BRUSH, name="true z")
        self.inferred_scatter = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(0, 114, 178, 150),
                                                   name="inferred")
        self.diagonal = pg.InfiniteLine(angle=45, pen=pg.mkPen("#999999", style=pg.QtCore.Qt.PenStyle.DashLine))
        self.plot.addItem(self.true_scatter)
        self.plot.addItem(self.inferred_scatter)
        self.plot.addItem(self.diagonal)
        self.diagonal.setVisible(False)
        cache_static(self.true_scatter, self.diagonal)
        self.texts.set(title="Latents")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.widget)
        self.true_z: np.ndarray | None = None
        self.inferred: np.ndarray | None = None  # aligned to the true z where that is known
        self.inferred_raw: np.ndarray | None = None
        self.aligned = True  # draw the aligned latents (the window's View → Align fits to the truth)
        self.source = ""
        self._fit = False  # new true z: draw it and range the view at the next redraw that has points
        self._paired = False  # drawn as inferred-against-true (m = 1) rather than two clouds in a plane

    def set_true(self, z: np.ndarray | None, estimator: str) -> None:
        self.true_z = z
        self.inferred = self.inferred_raw = None
        self.source = INFO[estimator].latents if estimator in INFO else "inferred"
        self._fit = True
        self.mark_dirty()

    def set_inferred(self, latents: np.ndarray | None, raw: np.ndarray | None = None) -> None:
        """The inferred latents aligned to the true z (by the engine's Procrustes map), and as inferred."""
        self.inferred, self.inferred_raw = latents, raw
        self.mark_dirty()

    def set_aligned(self, aligned: bool) -> None:
        self.aligned = aligned
        self._fit = True
        self.mark_dirty()

    def _shown(self) -> tuple[np.ndarray | None, str]:
        """The latents to draw and how they were mapped."""
        if self.aligned or self.inferred_raw is None:
            mapped = self.true_z is not None and self.inferred is not None and self.inferred is not self.inferred_raw
            return self.inferred, "aligned" if mapped else ""
        return self.inferred_raw, "raw"

    def set_colour(self, colour: str) -> None:
        c = pg.mkColor(colour)
        c.setAlpha(150)
        self.inferred_scatter.setBrush(pg.mkBrush(c))
        self.legend.repaint_sample(self.inferred_scatter)

    def redraw(self) -> None:
        """The inferred latents at every frame; the true z and the labels only when they change."""
        z = self.true_z
        lat, how = self._shown()
        paired = z is not None and lat is not None and z.shape[1] == 1 and lat.shape[1] == 1
        what = self.source or "inferred latents"
        if paired != self._paired or self._fit:
            self._paired = paired
            self.diagonal.setVisible(paired)
            if paired:
                self.texts.set(title=f"Latents: {what} vs true z", bottom="true z₁",
                               left=f"{what} ẑ₁" + (f" ({how})" if how else ""))
                self.true_scatter.setData([], [])
            else:
                flat = all(p is None or p.shape[1] == 1 for p in (z, lat))
                self.texts.set(title=f"Latents: true z and {what}" + (f" ({how})" if how else ""), bottom="z₁",
                               left="" if flat else "z₂")
                _plane_scatter(self.true_scatter, z)
            self._fit = True
        if paired:
            self.inferred_scatter.setData(z[:, 0], lat[:, 0])
        else:
            _plane_scatter(self.inferred_scatter, lat)
        if self._fit and (z is not None or lat is not None):
            self._fit = False
            fit_view(self.plot)
            if not paired and all(p is None or p.shape[1] == 1 for p in (z, lat)):
                self.plot.setYRange(-1, 1)  # one latent dimension: a strip on the z₁ axis


def _plane_scatter(item: pg.ScatterPlotItem, points: np.ndarray | None) -> None:
    if points is None:
        item.setData([], [])
    else:
        xy = plane(points)
        item.setData(xy[:, 0], xy[:, 1])
