"""GUI tests of the posterior view (issue 13, "See the integral"): the exact posterior on a grid over its
mass, the estimator's nodes, draws, chain or encoder q over it, a colour scale on the heatmap, the info line
with the estimate beside the exact log p(x). Offscreen; the views are fed records of small untrained
decoders, and one tiny run goes through the window."""

from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
import pytest
import torch
from PySide6.QtCore import QSettings
from qt_support import (
    no_dangling_qthreads,  # noqa: F401  (an autouse fixture: active in this module)
    tiny_config,
)

from engine.config import DecoderConfig, EstimatorConfig
from engine.integral import ChainStates, EncoderQ, ImportanceDraws, NodeRule, PointPosterior
from engine.networks import Encoder, build_decoder
from gui import tasks
from gui.main_window import MainWindow
from gui.plots.posterior_view import MAX_MARK, PosteriorView
from gui.settings import Settings

TIMEOUT_MS = 60_000


def record(name: str, m: int, n: int = 3, **est: Any) -> PointPosterior:
    """The posterior task's record for point 0 of random data under an untrained decoder (and encoder)."""
    torch.manual_seed(m)
    x = torch.randn(40, n)
    decoder = build_decoder(n, DecoderConfig(m=m, hidden=(8,)), x)
    encoder = Encoder(n, m, (8,), "tanh") if name in ("vae", "iwae") else None
    task = tasks.posterior(decoder, encoder, EstimatorConfig(name=name, **est), x[0].numpy(), 0, "run #1")
    return task(lambda info: None, lambda: False)


@pytest.fixture
def view(qtbot: Any) -> PosteriorView:
    v = PosteriorView()
    qtbot.addWidget(v)
    v.resize(760, 520)
    v.show()
    qtbot.waitExposed(v)
    return v


def shown(qtbot: Any, view: PosteriorView, r: PointPosterior) -> None:
    view.set_result(r)
    assert view.refresh()
    qtbot.wait(20)


def legend_texts(legend: Any) -> list[str]:
    return [label.text for _, label in legend.items]


def sizes(scatter: pg.ScatterPlotItem) -> np.ndarray:
    return np.array([p.size() for p in scatter.points()])


CASES = [("mle-adaptive", 1, {"nodes": 8}), ("mle-adaptive", 2, {"nodes": 5}),
         ("mle-importance", 1, {"samples": 32}), ("mle-importance", 2, {"samples": 32, "proposal": "prior"}),
         ("mle-quadrature", 2, {"nodes": 6})]


@pytest.mark.parametrize(("name", "m", "est"), CASES)
def test_nodes_and_draws_are_drawn_with_area_by_weight(qtbot: Any, view: PosteriorView, name: str, m: int,
                                                       est: dict[str, Any]) -> None:
    r = record(name, m, **est)
    a = r.approximation
    assert isinstance(a, NodeRule | ImportanceDraws)
    shown(qtbot, view, r)
    count = len(a.weights)
    if m == 1:
        assert view.stack.currentWidget() is view.line_widget
        assert len(view.exact_curve.getData()[0]) == len(r.axis)
        marks, legend = view.line_marks, view.line_legend
        np.testing.assert_allclose(marks.data["y"], a.density)  # on the exact curve
    else:
        assert view.stack.currentWidget() is view.image_widget
        marks, legend = view.image_marks, view.image_legend
    assert len(marks.points()) == count
    s = sizes(marks)
    assert s.max() == pytest.approx(MAX_MARK) and (s.min() < s.max() or count == 1)
    assert np.argmax(s) == np.argmax(a.weights)  # the largest mark is the largest weight
    kind = "nodes" if isinstance(a, NodeRule) else "draws"
    assert any(kind in t and "weight" in t for t in legend_texts(legend))
    text = view.info.text()
    assert name in text and "log p(x) ≈" in text and "exact" in text and "gap" in text
    if isinstance(a, ImportanceDraws):
        assert f"ESS {a.ess:.1f} of {count}" in text


@pytest.mark.parametrize(("name", "m"), [("vae", 1), ("vae", 2), ("iwae", 2)])
def test_the_encoders_q_is_drawn_over_the_exact_posterior(qtbot: Any, view: PosteriorView, name: str, m: int) -> None:
    r = record(name, m, samples=8)
    a = r.approximation
    assert isinstance(a, EncoderQ) and r.encoder is not None
    shown(qtbot, view, r)
    text = view.info.text()
    assert "ELBO" in text and "gap" in text
    if m == 1:
        assert len(view.encoder_curve.getData()[0]) == len(r.axis)
        assert "encoder q(z | x)" in legend_texts(view.line_legend)
        return
    assert all(c.data is not None for c in view.contours)  # q's 1- and 2-sd contours over the heatmap
    assert any("q(z | x)" in t for t in legend_texts(view.image_legend))
    if name == "iwae":
        assert len(view.image_marks.points()) == 8 and "IWAE_8" in text and "ESS" in text
    else:
        assert len(view.image_marks.points()) == 0


def test_the_heatmap_has_a_colour_scale_of_the_exact_density(qtbot: Any, view: PosteriorView) -> None:
    r = record("mle-adaptive", 2, nodes=4)
    shown(qtbot, view, r)
    bar = view.colour_bar
    assert isinstance(bar, pg.ColorBarItem) and bar.scene() is view.image_widget.scene() and bar.isVisible()
    assert bar.levels() == pytest.approx((0.0, float(r.exact.max())))
    assert view.image.image.shape == r.exact.T.shape
    # the view's range is the record's grid
    (x0, x1), (y0, y1) = view.image_plot.viewRange()
    assert x0 <= r.axis[0] and r.axis[-1] <= x1 and y0 <= r.axis2[0] and r.axis2[-1] <= y1


def test_a_chain_is_drawn_as_its_states_with_the_acceptance_rate(qtbot: Any, view: PosteriorView) -> None:
    r = record("mle-mcem", 2, mcmc_steps=1)
    a = r.approximation
    assert isinstance(a, ChainStates)
    shown(qtbot, view, r)
    assert len(view.image_states.points()) == len(a.states) and len(view.path.getData()[0]) == len(a.states)
    text = view.info.text()
    assert "no log p(x) estimate" in text and f"acceptance {a.acceptance:.2f}" in text


class CubicLike:
    """g(z) = 0.3 z + 0.02 z^3, sigma 0.1: the point x = 6 has its mass near z = 5.9."""

    n, m = 1, 1

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return 0.3 * z + 0.02 * z**3

    def sigma(self) -> torch.Tensor:
        return torch.tensor(0.1, dtype=torch.float64)


def test_an_outliers_posterior_is_shown_where_its_mass_is(qtbot: Any, view: PosteriorView) -> None:
    task = tasks.posterior(CubicLike(), None, EstimatorConfig(name="mle-adaptive", nodes=8), np.array([6.0]), 3,
                           "an outlier")
    r = task(lambda info: None, lambda: False)
    shown(qtbot, view, r)
    x, p = view.exact_curve.getData()
    (lo, hi), (_, top) = view.line_plot.viewRange()
    peak = x[int(np.argmax(p))]
    assert peak > 4.5 and lo <= peak <= hi and top >= p.max()  # the old grid ended at 4.5
    assert p[0] < 1e-3 * p.max() and p[-1] < 1e-3 * p.max()  # its ends hold no mass
    assert lo <= r.approximation.nodes.min() and r.approximation.nodes.max() <= hi


def window_with_a_run(qtbot: Any, tmp_path: Path, estimator: str, steps: int, **est: Any) -> MainWindow:
    """A window that has trained one tiny run of `estimator`, its posterior tab on show."""
    w = MainWindow(Settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: w.controller.kind == "warmup" and not w.controller.busy, timeout=TIMEOUT_MS)
    cfg = tiny_config(steps=steps, eval_every=10)
    cfg.estimator.name = estimator
    for key, value in est.items():
        setattr(cfg.estimator, key, value)
    w.apply_config(cfg)
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.start_action.trigger()
    w.side_tabs.setCurrentWidget(w.posterior_view)
    return w


def test_the_window_computes_the_posterior_of_the_selected_run(qtbot: Any, tmp_path: Path) -> None:
    w = window_with_a_run(qtbot, tmp_path, "mle-adaptive", 20, nodes=6)
    w.posterior_view.set_index(7)
    with qtbot.waitSignal(w.controller.finished, timeout=TIMEOUT_MS):
        w.posterior_view.button.click()
    qtbot.waitUntil(lambda: len(w.posterior_view.line_marks.points()) == 6, timeout=5000)
    r = w.posterior_view.result
    assert r.index == 7 and isinstance(r.approximation, NodeRule) and r.approximation.adaptive
    np.testing.assert_allclose(r.x, w.session.data.dataset.x[7])
    assert "mle-adaptive, 6 nodes" in w.posterior_view.info.text()
    w.close()


def test_quit_during_the_posterior_stops_it(qtbot: Any, tmp_path: Path) -> None:
    """Closing the window while the posterior view computes (here a long MCMC chain) stops that task between
    two passes: the window closes, nothing fails and no posterior is shown."""
    w = window_with_a_run(qtbot, tmp_path, "mle-mcem", 5)
    w.session.selected_record().config.estimator.mcmc_steps = 100_000  # the view's chain: minutes, unstopped
    failures: list[tuple[str, str]] = []
    w.controller.failed.connect(lambda message, details: failures.append((message, details)))
    w.posterior_view.button.click()
    qtbot.waitUntil(lambda: w.controller.busy and w.controller.kind == "posterior", timeout=5000)
    qtbot.wait(300)  # well into the chain
    start = time.perf_counter()
    w.close()
    assert time.perf_counter() - start < 5.0  # within a part of the chain (100 transitions), not a visit's minute
    assert not w.controller.busy and not failures
    assert w.posterior_view.result is None


def test_q_contours_lie_where_q_is(qtbot: Any, view: PosteriorView) -> None:
    """An off-diagonal q with unequal scales: its 1-sd contour is centred on its mean, as wide as its scales
    (a transposed contour would be centred at (-0.5, 1) and twice as wide in z₂ as in z₁ the wrong way)."""
    z1, z2 = np.linspace(-3, 3, 121), np.linspace(-3, 3, 101)
    mean, scale = np.array([1.0, -0.5]), np.array([0.3, 0.6])
    g1, g2 = np.meshgrid(z1, z2, indexing="ij")  # the grid is indexed [z1, z2]
    q = np.exp(-0.5 * (((g1 - mean[0]) / scale[0]) ** 2 + ((g2 - mean[1]) / scale[1]) ** 2))
    q /= q.sum() * (z1[1] - z1[0]) * (z2[1] - z2[0])
    top = q.max()
    a = EncoderQ(estimator="vae", estimate=-1.0, estimate_name="ELBO", note="", mean=mean, scale=scale, elbo=-1.0,
                 levels=(top * np.exp(-0.5), top * np.exp(-2.0)))
    r = PointPosterior(0, np.zeros(3), z1, q, q, "run #1", axis2=z2, log_px=-0.9, approximation=a)
    shown(qtbot, view, r)
    contour = view.contours[0]
    box = contour.mapRectToItem(view.image_plot.vb.childGroup, contour.boundingRect())
    assert abs(box.center().x() - mean[0]) < 0.05 and abs(box.center().y() - mean[1]) < 0.05
    assert abs(box.width() - 2 * scale[0]) < 0.1 and abs(box.height() - 2 * scale[1]) < 0.1


def test_the_info_line_follows_the_record_not_the_window_being_busy(qtbot: Any, view: PosteriorView) -> None:
    r = record("mle-adaptive", 1)
    view.set_available(True, "")
    shown(qtbot, view, r)
    line = view.info.text()
    assert "log p(x)" in line and "gap" in line
    view.set_available(False, "")  # another task runs: Compute waits, the summary stays
    view.refresh()
    assert view.info.text() == line and not view.button.isEnabled()
    view.set_result(None)  # Reset, or new data: no summary of a posterior no longer shown
    view.set_available(False, "Train or open a run first")
    view.refresh()
    assert view.info.text() == "Train or open a run first"
