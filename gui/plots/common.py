"""Shared plot plumbing: the redraw clock, dirty-flag views, growing series and polyline flattening.

Views cache the latest data they are given and mark themselves dirty; the `RedrawClock` (a 15 Hz
QTimer) asks every view to refresh, and only dirty views on screen call `setData`. Items are created
once; view ranges are set when the data change, not at every frame; static items are cached as pixmaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QSizeF, Qt, QTimer
from PySide6.QtGui import QPen
from PySide6.QtWidgets import QGraphicsItem, QSizePolicy, QWidget

LEGEND_BRUSH = pg.mkBrush(255, 255, 255, 210)
DATA_BRUSH = pg.mkBrush(90, 90, 90, 110)
TRUE_PEN = pg.mkPen("#222222", width=1.5)

pg.setConfigOptions(antialias=False, useOpenGL=False, background="w", foreground="#222222")


def polylines(lines: np.ndarray, cols: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(L, P, d) polylines -> x and y arrays of coordinates `cols`, lines separated by NaN, for
    `setData(x, y, connect="finite")`."""
    L, P, _ = lines.shape
    sel = np.full((L, P + 1, 2), np.nan)
    sel[:, :P, 0] = lines[:, :, cols[0]]
    sel[:, :P, 1] = lines[:, :, cols[1]] if len(cols) > 1 else 0.0
    flat = sel.reshape(-1, 2)
    return flat[:, 0], flat[:, 1]


def plane(points: np.ndarray) -> np.ndarray:
    """The first two columns of (N, d) points for a 2-D scatter (a zero second column when d = 1)."""
    if points.shape[1] >= 2:
        return points[:, :2]
    return np.column_stack([points[:, 0], np.zeros(points.shape[0])])


class GrowingSeries:
    """Appendable (x, y) with amortised O(1) appends: a buffer that doubles when full."""

    def __init__(self, capacity: int = 1024):
        self._buf = np.empty((capacity, 2))
        self._n = 0
        self.lo = self.hi = math.nan  # running range of the finite y values

    def append(self, x: float, y: float) -> None:
        if self._n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.empty_like(self._buf)])
        self._buf[self._n] = (x, y)
        self._n += 1
        if math.isfinite(y):
            self.lo = y if math.isnan(self.lo) else min(self.lo, y)
            self.hi = y if math.isnan(self.hi) else max(self.hi, y)

    def clear(self) -> None:
        self._n = 0
        self.lo = self.hi = math.nan

    def __len__(self) -> int:
        return self._n

    @property
    def x(self) -> np.ndarray:
        return self._buf[: self._n, 0]

    @property
    def y(self) -> np.ndarray:
        return self._buf[: self._n, 1]


class StreamingCurve:
    """The line of a series that only grows, drawn as frozen pieces and a short live tail.

    Qt repaints the whole bounding box of an item that changed, and every item that box overlaps: one
    item holding the whole curve would repaint the plot from the first step to the last (axes included)
    at every frame and rebuild its path from all points. Here a frame moves only the tail, which is
    frozen into a piece of its own once it spans `1/pieces` of the x range, so each frame's cost does not
    grow with the run. The piece items are made once and only their data change (adding an item to a
    view repaints the whole view). Consecutive pieces share their end point, so the line is unbroken;
    points beyond the x range stay in the tail. With `log_y` the points are drawn in the units of a log
    axis (`log10_positive`)."""

    def __init__(self, plot: pg.PlotItem, pieces: int = 16):
        # spans are measured from a piece's first point, so pieces + 1 of them cover the x range
        self.items = [pg.PlotCurveItem() for _ in range(pieces + 2)]
        for item in self.items:
            plot.addItem(item)
        self.pieces = pieces
        self.log_y = False
        self._frozen = 0  # items[:_frozen] are frozen pieces, items[_frozen] is the tail
        self._first = 0  # index of the tail's first point in the series
        self._span = math.inf  # x extent at which the tail is frozen

    @property
    def tail(self) -> pg.PlotCurveItem:
        return self.items[self._frozen]

    def reset(self, x_range: float | None = None, pen: QPen | None = None) -> None:
        """Forget the drawn points (the next `draw` starts from the series' first point); optionally a new
        x range (which sets the pieces' extent) and pen."""
        for item in self.items[: self._frozen + 1]:
            item.setData([], [])
        self._frozen = self._first = 0
        if x_range is not None:
            self.set_x_range(x_range)
        if pen is not None:
            for item in self.items:
                item.setPen(pen)

    def set_x_range(self, x_range: float) -> None:
        """A new x range for the pieces still to come (the drawn ones stay as they are)."""
        self._span = x_range / self.pieces if x_range > 0 else math.inf

    def draw(self, x: np.ndarray, y: np.ndarray) -> None:
        """Draw the series (x, y) (N,), of which the points drawn before are unchanged."""
        while (self._frozen + 1 < len(self.items) and len(x) - self._first > 2
               and x[-1] - x[self._first] > self._span):
            end = max(int(np.searchsorted(x, x[self._first] + self._span, side="right")), self._first + 2)
            self.tail.setData(x[self._first:end], self._y(y[self._first:end]))
            self._frozen += 1
            self._first = end - 1
        self.tail.setData(x[self._first:], self._y(y[self._first:]))

    def _y(self, y: np.ndarray) -> np.ndarray:
        return log10_positive(y) if self.log_y else y


def log10_positive(y: np.ndarray) -> np.ndarray:
    """log10(y) where y > 0, NaN (not drawn) elsewhere: values in the units of a log axis, as a
    PlotDataItem draws them."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, np.log10(y), np.nan)


def plain_axes(plot: pg.PlotItem) -> None:
    """Tick labels in the data's units: no "(x0.001)" SI scaling of an axis."""
    for name in ("left", "bottom"):
        plot.getAxis(name).enableAutoSIPrefix(False)


class ShrinkableTitle(pg.LabelItem):
    """A plot title that does not hold its plot at the title's width (pyqtgraph's sets its minimum width
    to the text's at every resize): a narrow plot cuts its title at the view's edge rather than its axes,
    and side-by-side plots share their row evenly whatever their titles."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._justify = self.opts["justify"]
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemClipsChildrenToShape)  # cut, never over a neighbour

    def resizeEvent(self, ev: object) -> None:
        """A title wider than the plot starts at its left and is cut at its end (centred, both ends went)."""
        own = getattr(self, "_justify", self.opts["justify"])  # (LabelItem's constructor lays it out first)
        self.opts["justify"] = "left" if self.item.boundingRect().width() > self.width() else own
        super().resizeEvent(ev)

    def updateMin(self) -> None:
        super().updateMin()
        self.setMinimumWidth(0)

    def sizeHint(self, which: Qt.SizeHint, constraint: QSizeF = QSizeF()) -> QSizeF:  # noqa: B008 - Qt's
        size = super().sizeHint(which, constraint)
        if which in (Qt.SizeHint.MinimumSize, Qt.SizeHint.PreferredSize):
            size.setWidth(0)
        return size


def shrinkable_title(plot: pg.PlotItem, title: str = "", size: str = "11pt", justify: str = "center") -> None:
    """Give the plot a `ShrinkableTitle` in place of its own (`justify` "left": a long one is cut at its end)."""
    plot.layout.removeItem(plot.titleLabel)
    plot.titleLabel.setParentItem(None)
    if plot.titleLabel.scene() is not None:
        plot.titleLabel.scene().removeItem(plot.titleLabel)
    plot.titleLabel = ShrinkableTitle("", size=size, parent=plot, justify=justify)
    plot.layout.addItem(plot.titleLabel, 0, 1)
    plot.setTitle(title or None)


class PlotTexts:
    """Title and axis labels of a PlotItem, set only when they change (each change lays the plot out again)."""

    def __init__(self, plot: pg.PlotItem):
        self.plot = plot
        self._shown: dict[str, str] = {}
        plain_axes(plot)
        shrinkable_title(plot)

    def set(self, title: str | None = None, bottom: str | None = None, left: str | None = None) -> None:
        for key, text in (("title", title), ("bottom", bottom), ("left", left)):
            if text is None or self._shown.get(key) == text:
                continue
            self._shown[key] = text
            if key == "title":
                self.plot.setTitle(text)
            else:
                self.plot.setLabel(key, text)


class SideLegend(pg.LegendItem):
    """A legend laid out in a graphics layout, beside or under the plots, never over the data. (pyqtgraph's
    own legend floats in the view box, which clips it: in a short plot it showed two entries of many.)"""

    def __init__(self, columns: int = 1):
        super().__init__(offset=None, colCount=columns, brush=LEGEND_BRUSH, frame=False)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations, False)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._room = math.inf  # the width to fill with columns of entries (legend_below)

    def addItem(self, item: QGraphicsItem, name: str) -> None:
        super().addItem(item, name)
        self.fit_columns()

    def _entry_width(self) -> float:
        return max(s.boundingRect().width() + label.item.boundingRect().width() for s, label in self.items) + 30

    def fit_columns(self, width: float | None = None) -> None:
        """As many columns as entries fit side by side in `width` (the last width given, by default)."""
        if width is not None:
            self._room = width
        if not self.items or not math.isfinite(self._room):
            return
        columns = max(1, min(len(self.items), int(self._room // self._entry_width())))
        if columns != self.columnCount:
            self.setColumnCount(columns)

    def sizeHint(self, which: Qt.SizeHint, constraint: QSizeF = QSizeF()) -> QSizeF:  # noqa: B008 - Qt's
        """Under a plot (`legend_below`): at least one entry wide, however many columns it has now, so that
        its width never holds the plot wider (the plot narrowing takes columns away)."""
        size = super().sizeHint(which, constraint)
        if which == Qt.SizeHint.MinimumSize and self.items and math.isfinite(self._room):
            size.setWidth(min(size.width(), self._entry_width()))
        return size

    def updateSize(self) -> None:
        """Entries changed: let the enclosing layout place and size the legend again (pyqtgraph's version
        moves a free-floating legend to its parent's origin)."""
        self.updateGeometry()

    def repaint_sample(self, item: QGraphicsItem) -> None:
        """Paint the sample of `item` again after its pen or brush changed (a sample is painted from the
        item's options, but nothing tells it when they change)."""
        for sample, _label in self.items:
            if sample.item is item:
                sample.update()

    def set_label(self, item: QGraphicsItem, text: str) -> None:
        label = self.getLabel(item)
        if label is not None and label.text != text:
            label.setText(text)
            self.fit_columns()  # a longer entry may need fewer columns, else it is cut off

    def show_entry(self, item: QGraphicsItem, name: str, shown: bool) -> None:
        """Add or remove `item`'s entry (e.g. "true f" for data without a true model)."""
        present = self.getLabel(item) is not None
        if shown and not present:
            self.addItem(item, name)
        elif present and not shown:
            self.removeItem(item)
            self.fit_columns()


def legend_below(plot: pg.PlotItem, columns: int = 4) -> SideLegend:
    """A legend under the plot's bottom axis, in one row where it fits; items added to the plot with a name
    join it."""
    legend = SideLegend(columns)
    plot.layout.addItem(legend, 4, 1)
    plot.legend = legend
    plot.geometryChanged.connect(lambda: legend.fit_columns(plot.width()))  # rows wrap when the plot narrows
    return legend


def cache_static(*items: QGraphicsItem) -> None:
    """Keep the rendering of items that rarely change (the data, the true manifold) as a pixmap, so the
    frames that move another item of the plot do not paint them again. A PlotDataItem paints nothing
    itself (its curve and symbol children do), so its children are cached."""
    for item in items:
        for painted in (item.curve, item.scatter) if isinstance(item, pg.PlotDataItem) else (item,):
            painted.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)


def fit_view(plot: pg.PlotItem) -> None:
    """Range the view to its items once, then keep it: auto-ranging on every update would re-lay out the
    axes at every frame (the "A" button or right-click "View all" ranges it again)."""
    plot.enableAutoRange()
    plot.autoRange()
    plot.disableAutoRange()


class LiveView:
    """Mixin: `mark_dirty()` when the cached data change; `refresh()` redraws only if dirty."""

    _dirty = False

    def mark_dirty(self) -> None:
        self._dirty = True

    def refresh(self) -> bool:
        """Redraw if the data changed and the view is on screen (a hidden tab waits until it is shown)."""
        if not self._dirty or (isinstance(self, QWidget) and not self.isVisible()):
            return False
        self._dirty = False
        self.redraw()
        return True

    def redraw(self) -> None:
        raise NotImplementedError


class RedrawClock(QObject):
    """Redraws the dirty views at most `hz` times a second; counts the frames that drew something."""

    def __init__(self, views: Sequence[LiveView], hz: float = 15.0, parent: QObject | None = None):
        super().__init__(parent)
        self.views = list(views)
        self.frames = 0
        self.timer = QTimer(self)
        self.timer.setInterval(round(1000 / hz))
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def tick(self) -> None:
        drew = False
        for view in self.views:
            drew = view.refresh() or drew
        if drew:
            self.frames += 1
