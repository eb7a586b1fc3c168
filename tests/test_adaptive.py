"""Adaptive Gauss-Hermite's rules and per-point Gaussians (engine/likelihood/adaptive.py): the compact rules'
moments, the refinement's exactness for linear g, its fixed point against dense quadrature for a curved g,
a sharp posterior reached from a far start, and the training state's first visits, mode search and NaN
guard."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from engine.likelihood.adaptive import OTHER_MODE_RADIUS, WarmGrids, refined_gaussian
from engine.likelihood.quadrature import adaptive_rule, adaptive_terms, hermite_grid
from engine.likelihood.rules import (
    hexagon_rule_2d_degree5,
    rule_points,
    symmetric_rule_2d_degree7,
    symmetric_rule_degree5,
)
from engine.model import log_joint

F64 = torch.float64


def _double_factorial(k: int) -> int:
    return math.prod(range(k - 1, 0, -2))


@pytest.mark.parametrize(("rule", "points", "degree"), [(hexagon_rule_2d_degree5, 7, 5),
                                                        (symmetric_rule_2d_degree7, 12, 7)])
def test_2d_rule_is_exact_to_its_total_degree_and_not_beyond(rule, points: int, degree: int) -> None:
    u, lw = rule()
    w = np.exp(lw)
    assert u.shape == (points, 2) and np.all(w > 0)
    beyond = []
    for i in range(degree + 2):
        for j in range(degree + 2 - i):
            exact = 0 if i % 2 or j % 2 else _double_factorial(i) * _double_factorial(j)  # E z1^i z2^j
            got = float(w @ (u[:, 0] ** i * u[:, 1] ** j))
            if i + j <= degree:
                assert got == pytest.approx(exact, abs=1e-12), (i, j)
            else:
                beyond.append(abs(got - exact))
    assert max(beyond) > 1  # not exact one degree higher
    # the tensor grid it replaces, (degree + 1) / 2 nodes a dimension, has the same total degree
    ut, lwt = hermite_grid(2, (degree + 1) // 2)
    assert float(lwt.exp() @ ut[:, 0] ** (degree - 1)) == pytest.approx(_double_factorial(degree - 1), rel=1e-12)


@pytest.mark.parametrize("m", [3, 4, 5, 6, 7, 9])
def test_degree5_rule_is_exact_to_total_degree_5_with_positive_weights(m: int) -> None:
    u, lw = symmetric_rule_degree5(m)
    w = np.exp(lw)
    assert u.shape == (rule_points(m, 3, adaptive=True), m) and np.all(np.isfinite(lw))
    assert len(u) == 2 * m + 2**m + (m < 6)  # the centre's weight is 0 from m = 6
    for powers in itertools.product(range(7), repeat=3):  # symmetric in the axes: three of them suffice
        degree = sum(powers)
        if degree > 6:
            continue
        exact = 0 if any(p % 2 for p in powers) else math.prod(_double_factorial(p) for p in powers)
        got = float(w @ np.prod(u[:, :3] ** np.array(powers), axis=1))
        if degree <= 5:
            assert got == pytest.approx(exact, abs=1e-12), powers
        elif powers in ((6, 0, 0), (2, 2, 2)):
            assert abs(got - exact) > 0.1, powers  # degree 6: not exact, so the degree is 5


def test_adaptive_rule_uses_the_compact_rule_only_where_one_is_known() -> None:
    assert adaptive_rule(2, 4)[0].shape == (12, 2)
    assert adaptive_rule(2, 3)[0].shape == (7, 2)
    assert adaptive_rule(2, 5)[0].shape == (25, 2)
    assert adaptive_rule(1, 4)[0].shape == (4, 1)
    assert adaptive_rule(3, 3)[0].shape == (15, 3)
    assert adaptive_rule(4, 3)[0].shape == (25, 4)
    assert adaptive_rule(3, 2)[0].shape == (8, 3)
    assert adaptive_rule(3, 4)[0].shape == (64, 3)
    for m, nodes in [(1, 4), (2, 3), (2, 4), (2, 5), (3, 3), (3, 4), (4, 3), (6, 3)]:
        assert rule_points(m, nodes, adaptive=True) == len(adaptive_rule(m, nodes)[0])
        assert rule_points(m, nodes, adaptive=False) == nodes**m


class Linear(torch.nn.Module):
    """g(z) = A z + b with noise sigma: posterior N(H^-1 A^T (x - b) / s^2, H^-1), H = A^T A / s^2 + I."""

    def __init__(self, A: np.ndarray, b: np.ndarray, sigma: float):
        super().__init__()
        self.A, self.b, self.s = torch.as_tensor(A, dtype=F64), torch.as_tensor(b, dtype=F64), sigma
        self.n, self.m = A.shape

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + self.b

    def sigma(self) -> torch.Tensor:
        return torch.tensor(self.s, dtype=F64)


class Cubic(torch.nn.Module):
    """n = m = 1, g(z) = z + 0.4 z^3: a skewed posterior whose mean is not its mode."""

    n = m = 1

    def __init__(self, sigma: float):
        super().__init__()
        self.s = sigma

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return z + 0.4 * z**3

    def sigma(self) -> torch.Tensor:
        return torch.tensor(self.s, dtype=F64)


@pytest.mark.parametrize(("n", "m", "nodes"), [(3, 1, 4), (4, 2, 4), (5, 2, 3), (6, 3, 2), (6, 3, 3), (7, 4, 3)])
def test_refinement_is_exact_for_linear_g_from_a_wrong_start(n: int, m: int, nodes: int) -> None:
    rng = np.random.default_rng(n + m)
    A, b, sigma = rng.normal(size=(n, m)), rng.normal(size=n), 0.3
    model = Linear(A, b, sigma)
    x = torch.as_tensor(rng.normal(size=(5, n)) + b, dtype=F64)
    H = A.T @ A / sigma**2 + np.eye(m)
    post_cov = np.linalg.inv(H)
    post_mean = (post_cov @ A.T @ (x.numpy() - b).T / sigma**2).T  # (5, m)
    u, lw = adaptive_rule(m, nodes)
    centre = torch.as_tensor(post_mean + 0.7, dtype=F64)  # off by 0.7, too wide and sheared
    start = 3.0 * torch.eye(m, dtype=F64) + torch.tril(torch.ones(m, m, dtype=F64), -1)  # not symmetric: L^-1 != L^-T
    chol = start.expand(5, m, m).clone()
    _, mean, _ = adaptive_terms(model, x, centre, chol, u, lw)
    centre, chol = refined_gaussian(x, centre, chol, mean, u, lw, model.sigma())
    # the linearisation of a linear g is g itself: one refinement gives the posterior from any start
    np.testing.assert_allclose((chol @ chol.transpose(1, 2)).numpy(), np.broadcast_to(post_cov, (5, m, m)), atol=1e-12)
    np.testing.assert_allclose(centre.numpy(), post_mean, atol=1e-10)
    for _ in range(3):  # ... and it is a fixed point
        _, mean, _ = adaptive_terms(model, x, centre, chol, u, lw)
        centre, chol = refined_gaussian(x, centre, chol, mean, u, lw, model.sigma())
    np.testing.assert_allclose(centre.numpy(), post_mean, atol=1e-10)
    # ... where the rule gives the exact log p(x) = log N(x; b, A A^T + s^2 I)
    cov = A @ A.T + sigma**2 * np.eye(n)
    d = x.numpy() - b
    exact = -0.5 * (np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d) + np.linalg.slogdet(cov)[1]
                    + n * math.log(2 * math.pi))
    _, _, terms = adaptive_terms(model, x, centre, chol, u, lw)
    np.testing.assert_allclose(torch.logsumexp(terms, -1).numpy(), exact, atol=1e-10)


def test_refinement_converges_on_a_skewed_posterior_where_the_rule_is_exact() -> None:
    model = Cubic(0.3)
    x = torch.tensor([[1.7], [-0.4], [3.0]], dtype=F64)
    zd = torch.linspace(-8.0, 8.0, 40001, dtype=F64).unsqueeze(-1)  # dense reference: a Riemann sum
    lj = log_joint(model, x, zd.unsqueeze(0).expand(3, -1, -1)) + math.log(16.0 / 40000)  # (3, G)
    post = torch.softmax(lj, -1)
    exact_mean = (post @ zd)[:, 0]
    exact_sd = (post @ zd**2 - exact_mean.unsqueeze(-1) ** 2)[:, 0].sqrt()
    mode = zd[lj.argmax(-1), 0]
    exact_logpx = torch.logsumexp(lj, -1)
    u, lw = adaptive_rule(1, 16)
    centre, chol = torch.zeros(3, 1, dtype=F64), torch.ones(3, 1, 1, dtype=F64)
    for _ in range(40):
        _, mean, _ = adaptive_terms(model, x, centre, chol, u, lw)
        before = centre
        centre, chol = refined_gaussian(x, centre, chol, mean, u, lw, model.sigma())
    np.testing.assert_allclose(centre.numpy(), before.numpy(), atol=1e-10)  # a fixed point
    # the linearised posterior sits on the posterior: its centre between mode and mean, its width the posterior's
    c = centre[:, 0]
    assert bool(((c - mode) * (c - exact_mean) <= 1e-3).all()), (c, mode, exact_mean)
    np.testing.assert_allclose(chol[:, 0, 0].numpy(), exact_sd.numpy(), rtol=0.15)
    _, _, terms = adaptive_terms(model, x, centre, chol, u, lw)
    np.testing.assert_allclose(torch.logsumexp(terms, -1).numpy(), exact_logpx.numpy(), atol=1e-5)  # 16 nodes


def test_refinement_reaches_a_sharp_posterior_from_a_wide_start() -> None:
    # sigma = 0.05: the posterior's sd is about 0.05 / |g'|, twenty times narrower than the prior start
    model = Cubic(0.05)
    x = torch.tensor([[1.7], [-0.4], [3.0]], dtype=F64)
    zd = torch.linspace(-4.0, 4.0, 80001, dtype=F64).unsqueeze(-1)
    lj = log_joint(model, x, zd.unsqueeze(0).expand(3, -1, -1)) + math.log(8.0 / 80000)
    u, lw = adaptive_rule(1, 8)
    centre, chol = torch.full((3, 1), -1.0, dtype=F64), torch.ones(3, 1, 1, dtype=F64)
    for _ in range(15):
        _, mean, _ = adaptive_terms(model, x, centre, chol, u, lw)
        centre, chol = refined_gaussian(x, centre, chol, mean, u, lw, model.sigma())
    _, _, terms = adaptive_terms(model, x, centre, chol, u, lw)
    np.testing.assert_allclose(torch.logsumexp(terms, -1).numpy(), torch.logsumexp(lj, -1).numpy(), atol=1e-5)


def test_first_visit_is_a_laplace_fit_then_the_stored_gaussian_is_used() -> None:
    rng = np.random.default_rng(0)
    A, b, sigma = rng.normal(size=(4, 2)), rng.normal(size=4), 0.2
    model = Linear(A, b, sigma)
    x = torch.as_tensor(rng.normal(size=(6, 4)) + b, dtype=F64)
    grids = WarmGrids(6, 2).double()
    idx = torch.arange(6)
    centre, chol = grids.locate(model, x, idx, search=False)
    H = A.T @ A / sigma**2 + np.eye(2)
    post_mean = (np.linalg.solve(H, A.T @ (x.numpy() - b).T) / sigma**2).T
    np.testing.assert_allclose(centre.numpy(), post_mean, atol=1e-9)  # Gauss-Newton reaches a linear mode
    assert bool(grids.seen.all())
    grids.store(idx, centre + 1.0, chol)
    again, _ = grids.locate(model, x, idx, search=False)
    np.testing.assert_allclose(again.numpy(), centre.numpy() + 1.0)  # no search: the stored one, as it is


def test_search_moves_a_point_to_a_higher_mode_outside_its_gaussian_only() -> None:
    class TwoModes(torch.nn.Module):
        """n = m = 1, g(z) = z^2: x = 4 has modes near z = +-2 of equal height; a shift tilts them."""

        n = m = 1

        def __init__(self, tilt: float):
            super().__init__()
            self.tilt = tilt

        def mean(self, z: torch.Tensor) -> torch.Tensor:
            return z**2 + self.tilt * z

        def sigma(self) -> torch.Tensor:
            return torch.tensor(0.3, dtype=F64)

    x = torch.tensor([[4.0]], dtype=F64)
    grids = WarmGrids(1, 1).double()
    idx = torch.tensor([0])
    grids.locate(TwoModes(0.0), x, idx, search=False)
    grids.store(idx, torch.tensor([[-2.0]], dtype=F64), torch.tensor([[[0.05]]], dtype=F64))  # at the left mode
    tilted = TwoModes(0.5)  # now the right mode (g = z^2 + z/2 reaches 4 at z ~ 1.77 with less prior cost) is higher
    stay, _ = grids.locate(tilted, x, idx, search=False)
    assert float(stay) == -2.0
    moved, _ = grids.locate(tilted, x, idx, search=True)
    assert float(moved) > 1.0 and float(log_joint(tilted, x, moved.unsqueeze(1))) > \
        float(log_joint(tilted, x, torch.tensor([[[-2.0]]], dtype=F64)))
    # a wide Gaussian holds the better candidate inside it: the same mode seen from its side, not moved
    grids.store(idx, torch.tensor([[-2.0]], dtype=F64), torch.tensor([[[2.0]]], dtype=F64))
    assert OTHER_MODE_RADIUS > 4.0 / 2.0  # the candidate near 2 is within q's radius
    kept, _ = grids.locate(tilted, x, idx, search=True)
    assert float(kept) == -2.0


def test_store_keeps_the_old_gaussian_of_a_non_finite_row() -> None:
    grids = WarmGrids(3, 2)
    idx = torch.arange(3)
    centre = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0]])
    chol = torch.eye(2).expand(3, 2, 2).clone() * 0.5
    chol[2, 1, 1] = float("inf")
    grids.store(idx, centre, chol)
    np.testing.assert_array_equal(grids.centres.numpy(), [[1.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(grids.chols[1].numpy(), np.eye(2))
    np.testing.assert_array_equal(grids.chols[0].numpy(), 0.5 * np.eye(2))


def test_search_keeps_a_point_already_at_its_highest_mode() -> None:
    x = torch.tensor([[4.0]], dtype=F64)
    model = Cubic(0.3)  # monotone: one mode; every candidate start is lower than a centre at it
    grids = WarmGrids(1, 1).double()
    idx = torch.tensor([0])
    centre, chol = grids.locate(model, x, idx, search=False)  # the Laplace fit at the mode
    grids.store(idx, centre, 0.01 * chol)  # narrow: every candidate is far outside q
    kept, kept_chol = grids.locate(model, x, idx, search=True)
    assert torch.equal(kept, centre) and torch.equal(kept_chol, 0.01 * chol)


def test_a_batch_of_first_and_later_visits_and_the_estimator_stores_the_refinement() -> None:
    from engine.config import DecoderConfig, EstimatorConfig
    from engine.estimators import build_estimator
    from engine.networks import Decoder

    torch.manual_seed(0)
    dec = Decoder(3, DecoderConfig(m=2, hidden=(8,)), 0.3, 0.0).double()
    est = build_estimator(EstimatorConfig(name="mle-adaptive", nodes=4), dec, 10, torch.Generator()).double()
    assert est.u.shape == (12, 2)  # the compact rule
    x = torch.randn(10, 3, dtype=F64)
    first = torch.tensor([0, 1, 2, 3])
    est.objective(x[first], first, 1)
    stored = est.grids.centres.clone(), est.grids.chols.clone()
    mixed = torch.tensor([2, 3, 4, 5])  # two seen, two new
    centre, chol = est.grids.locate(dec, x[mixed], mixed, search=False)
    est.grids.seen[torch.tensor([4, 5])] = False  # locate marked them; the objective must see them as new
    np.testing.assert_array_equal(centre[:2].numpy(), stored[0][2:4].numpy())  # seen rows: their stored q
    np.testing.assert_array_equal(chol[:2].numpy(), stored[1][2:4].numpy())
    est.objective(x[mixed], mixed, 1)
    # what the objective stored is the refinement of the nodes it evaluated, for every row
    _, mean, _ = adaptive_terms(dec, x[mixed], centre, chol, est.u, est.logw)
    want_c, want_l = refined_gaussian(x[mixed], centre, chol, mean, est.u, est.logw, dec.sigma())
    np.testing.assert_allclose(est.grids.centres[mixed].numpy(), want_c.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(est.grids.chols[mixed].numpy(), want_l.detach().numpy(), atol=1e-12)
    assert bool(est.grids.seen[:6].all()) and not bool(est.grids.seen[6:].any())
    # the value is the adaptive quadrature on the Gaussians the visit located
    with torch.no_grad():
        again = float(torch.logsumexp(adaptive_terms(dec, x[mixed], want_c, want_l, est.u, est.logw)[2], -1).mean())
    np.testing.assert_allclose(est.objective(x[mixed], mixed, 2).value, again, atol=1e-12)
