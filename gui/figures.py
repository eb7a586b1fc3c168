"""Figures for the command line, drawn with pyqtgraph offscreen: the engine describes a chart as plain data
(`engine.selection.select_m_chart`), this module renders it to PNG bytes. main.py sets
`engine.cli.RENDER_PNG` to a call of `render_png`, so `engine/` itself never imports Qt."""

from __future__ import annotations

import os
from typing import Any


def render_png(chart: dict[str, Any], width: int = 720, height: int = 440) -> bytes:
    """A line chart with error bars as PNG bytes. chart: {"title", "x_label", "y_label", "x": [...],
    "series": [{"label", "y": [...], "err": [...] | None, "color": "#rrggbb"}], "mark_x": x | None}."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841  (kept alive while drawing)
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    widget = pg.PlotWidget(title=chart.get("title", ""))
    widget.resize(width, height)
    draw_chart(widget.getPlotItem(), chart)
    image = widget.grab().toImage()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    buf.close()
    widget.close()
    widget.deleteLater()
    QApplication.processEvents()
    return bytes(data.data())


def draw_chart(plot: Any, chart: dict[str, Any]) -> None:
    """Draw a chart description (see `render_png`) into a pyqtgraph PlotItem: the command line's PNG and the
    window's "Choose m from the data" dialog draw the same figure."""
    import numpy as np
    import pyqtgraph as pg
    from PySide6.QtCore import Qt

    plot.setTitle(chart.get("title", ""))
    plot.setLabel("bottom", chart.get("x_label", ""))
    plot.setLabel("left", chart.get("y_label", ""))
    plot.showGrid(x=True, y=True, alpha=0.3)
    plot.getAxis("left").enableAutoSIPrefix(False)
    plot.addLegend(offset=(-10, 10))
    xs = [float(v) for v in chart["x"]]
    plot.getAxis("bottom").setTicks([[(x, f"{x:g}") for x in xs]])
    for s in chart["series"]:
        pts = [(x, y) for x, y in zip(xs, s["y"], strict=True) if y is not None]
        if not pts:
            continue
        px, py = zip(*pts, strict=True)
        pen = pg.mkPen(s.get("color", "#1f77b4"), width=2)
        plot.plot(px, py, pen=pen, symbol="o", symbolBrush=s.get("color", "#1f77b4"), symbolSize=7,
                  name=s["label"])
        err = s.get("err")
        if err:
            e = [v for v, y in zip(err, s["y"], strict=True) if y is not None]
            plot.addItem(pg.ErrorBarItem(x=np.array(px), y=np.array(py), height=2 * np.array([v or 0.0 for v in e]),
                                         beam=0.15, pen=pen))
    if chart.get("mark_x") is not None:
        plot.addItem(pg.InfiniteLine(pos=float(chart["mark_x"]), angle=90,
                                     pen=pg.mkPen("#555555", style=Qt.PenStyle.DashLine),
                                     label=chart.get("mark_label", ""),
                                     labelOpts={"position": 0.9, "color": "#333333"}))
