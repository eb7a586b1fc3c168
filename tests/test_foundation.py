"""Foundation: the evaluator against closed forms, quadrature rules, Laplace, the simulator, PPCA, latent
scores, importance-sampling diagnostics, sigma identifiability, config validation (incl. fuzzing) and a
Qt-free engine.

Every reference here is independent of the code under test: the linear model's marginal is the Gaussian
N(b, A A^T + sigma^2 I), the posterior is N(M^-1 A^T (x - b), sigma^2 M^-1) with M = A^T A + sigma^2 I,
Gauss-Hermite moments are the double factorials, and the Pareto tail shapes are known by construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import (
    MIXINGS,
    ConfigError,
    DecoderConfig,
    EstimatorConfig,
    RunConfig,
    SimulationConfig,
    TrainingConfig,
)
from engine.evaluate import dense_quadrature, heldout_loglik, latent_scores, sigma_report
from engine.latents import mean_corr_coef, procrustes_r2
from engine.likelihood.diagnostics import effective_sample_size, pareto_khat
from engine.likelihood.laplace import laplace
from engine.likelihood.quadrature import adaptive_terms, hermite_grid, log_marginal_dense, uniform_grid
from engine.ppca import gaussian_loglik, ppca_mle
from engine.simulate import TrueModel, simulate

REPO = Path(__file__).resolve().parent.parent
F64 = torch.float64


# ------------------------------------------------------------------------------------------- helpers






def _linear(n: int, m: int, sigma: float, samples: int, seed: int):
    """Simulated linear data, its A and b, and the exact per-point log-density log N(x; b, A A^T + s^2 I)."""
    d = simulate(SimulationConfig(mixing="linear", n=n, m=m, sigma=sigma, samples=samples, seed=seed))
    A = d.truth.mixing.params["A"].numpy()
    b = d.truth.mixing.params["b"].numpy()
    exact = gaussian_loglik(d.x, b, A @ A.T + sigma**2 * np.eye(n))
    return d, A, b, exact


def _double_factorial_moment(k: int) -> float:
    """E[z^k] for z ~ N(0, 1): 0 for odd k, (k - 1)!! for even k."""
    return 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))


# ------------------------------------------------------------------- the evaluator vs the closed form


@pytest.mark.parametrize(("m", "n"), [(1, 1), (1, 3), (2, 2), (2, 4)])
def test_heldout_loglik_quadrature_matches_closed_form(m: int, n: int) -> None:
    d, _, _, exact = _linear(n, m, 0.2, 300, seed=10 * m + n)
    est = heldout_loglik(d.truth, d.x)
    assert est.method == "quadrature"
    assert est.details["converged"] is True
    assert est.per_point.shape == (300,)
    assert abs(est.mean - exact.mean()) < 1e-4
    assert np.abs(est.per_point - exact).max() < 1e-4
    assert est.se == pytest.approx(exact.std(ddof=1) / math.sqrt(300), rel=1e-3)
    assert est.warnings == []
    js = est.to_json()
    assert js["loglik"] == est.mean and js["n_points"] == 300 and js["method"] == "quadrature"


@pytest.mark.parametrize("n", [2, 5])
def test_heldout_loglik_importance_matches_closed_form_m3(n: int) -> None:
    N = 300
    d, _, _, exact = _linear(n, 3, 0.2, N, seed=30 + n)
    est = heldout_loglik(d.truth, d.x, seed=1)
    assert est.method == "importance"
    # the stated standard error (sampling variability of the data) covers the estimate
    assert abs(est.mean - exact.mean()) < 3 * est.se
    # much tighter: the Monte Carlo error itself, paired point by point (IS bias ~ Var(w) / 2K is ~1e-5 here)
    diff = est.per_point - exact
    mc_se = diff.std(ddof=1) / math.sqrt(N)
    assert abs(diff.mean()) < 4 * mc_se + 2e-4
    assert np.abs(diff).max() < 0.1
    # diagnostics are present and sensible: the Laplace proposal is exact for linear f
    det = est.details
    assert det["samples"] == 2000
    assert 0.5 * 2000 < det["ess_min"] <= det["ess_median"] <= 2000
    assert det["khat_max"] is not None and det["khat_max"] < 0.7
    assert det["khat_share_above_0.7"] == 0.0
    assert est.warnings == []


def test_heldout_loglik_rejects_quadrature_above_m3() -> None:
    d, _, _, _ = _linear(5, 4, 0.2, 10, seed=0)
    with pytest.raises(ValueError, match="m <= 3"):
        heldout_loglik(d.truth, d.x, method="quadrature")


def test_dense_quadrature_narrow_posterior_converges_to_closed_form() -> None:
    d, _, _, exact = _linear(2, 1, 0.05, 60, seed=3)
    vals, info = dense_quadrature(d.truth, torch.as_tensor(d.x, dtype=F64), tol=1e-6)
    assert info["converged"] is True
    assert np.abs(vals - exact).max() < 1e-6


# -------------------------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize(("m", "node_list"), [(1, [16, 32, 64, 128, 256, 512, 1024]),
                                              (2, [8, 16, 32, 64, 128, 256])])
def test_uniform_grid_converges_and_beats_hermite_on_narrow_posterior(m: int, node_list: list[int]) -> None:
    d, _, _, exact = _linear(2, m, 0.05, 40, seed=3)
    x = torch.as_tensor(d.x, dtype=F64)
    err_u, err_h = [], []
    for nodes in node_list:
        u, lw = uniform_grid(m, nodes)
        assert u.shape == (nodes**m, m)
        err_u.append(float(np.abs(log_marginal_dense(d.truth, x, u, lw).numpy() - exact).mean()))
        u, lw = hermite_grid(m, nodes)
        err_h.append(float(np.abs(log_marginal_dense(d.truth, x, u, lw).numpy() - exact).mean()))
    # doubling the uniform grid: the error falls every time (or has reached round-off)
    for a, b in itertools.pairwise(err_u):
        assert b < a or b < 1e-10, err_u
    assert err_u[-1] < 1e-10
    # the documented fact: at the sizes where the uniform grid has converged, Gauss-Hermite of the same
    # size still misses the narrow posterior by orders of magnitude
    converged = [(nodes, eu, eh) for nodes, eu, eh in zip(node_list, err_u, err_h, strict=True) if eu < 1e-4]
    assert converged
    for nodes, eu, eh in converged:
        assert eh > 1e-4 and eh > 100 * eu, (nodes, eu, eh)
    assert converged[0][2] > 1e-2  # where the uniform grid first converges, Hermite is off by > 0.01 nats


@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 10, 20])
def test_hermite_grid_1d_is_exact_to_degree_2n_minus_1(nodes: int) -> None:
    u, lw = hermite_grid(1, nodes)
    assert u.shape == (nodes, 1) and lw.shape == (nodes,)
    u, w = u[:, 0].numpy(), lw.exp().numpy()
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    for k in range(2 * nodes):
        scale = (w * np.abs(u) ** k).sum()
        assert abs((w * u**k).sum() - _double_factorial_moment(k)) <= 1e-12 * max(scale, 1.0), (nodes, k)
    # ... and not beyond (a rule of the stated size, not a bigger one)
    k = 2 * nodes
    assert abs((w * u**k).sum() - _double_factorial_moment(k)) > 1e-6 * _double_factorial_moment(k)


def test_hermite_grid_moments() -> None:
    u, lw = hermite_grid(1, 10)
    z, w = u[:, 0].numpy(), lw.exp().numpy()
    assert (w * z**2).sum() == pytest.approx(1.0, abs=1e-13)
    assert (w * z**4).sum() == pytest.approx(3.0, abs=1e-12)
    u, lw = hermite_grid(2, 6)
    assert u.shape == (36, 2)
    z1, z2, w = u[:, 0].numpy(), u[:, 1].numpy(), lw.exp().numpy()
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert (w * z1**2 * z2**2).sum() == pytest.approx(1.0, abs=1e-12)
    assert (w * z1**4 * z2**2).sum() == pytest.approx(3.0, abs=1e-12)
    assert (w * z1 * z2).sum() == pytest.approx(0.0, abs=1e-13)
    assert (w * z1**2).sum() == pytest.approx(1.0, abs=1e-13)
    u, lw = hermite_grid(3, 4)
    assert u.shape == (64, 3)
    w = lw.exp().numpy()
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert (w * (u.numpy() ** 2).prod(1)).sum() == pytest.approx(1.0, abs=1e-12)


def test_uniform_grid_weights_integrate_the_prior() -> None:
    for m, nodes in ((1, 401), (2, 101)):
        u, lw = uniform_grid(m, nodes)
        w = lw.exp().numpy()
        assert w.sum() == pytest.approx(1.0, abs=1e-10)
        assert (w * (u.numpy() ** 2).sum(1)).sum() == pytest.approx(m, abs=1e-10)


# -------------------------------------------------------------------------- Laplace and adaptive quadrature


@pytest.mark.parametrize(("m", "n", "sigma"), [(1, 1, 0.05), (1, 3, 0.3), (2, 3, 0.05), (3, 2, 0.3),
                                               (3, 5, 0.05)])
def test_laplace_is_exact_posterior_and_adaptive_gh_exact_for_linear(m: int, n: int, sigma: float) -> None:
    B = 40
    d, A, b, exact = _linear(n, m, sigma, B, seed=5)
    x = torch.as_tensor(d.x, dtype=F64)
    mode, chol = laplace(d.truth, x, torch.zeros(B, m, dtype=F64))
    M = A.T @ A + sigma**2 * np.eye(m)
    post_mean = np.linalg.solve(M, A.T @ (d.x - b).T).T  # (B, m)
    post_cov = sigma**2 * np.linalg.inv(M)
    np.testing.assert_allclose(mode.numpy(), post_mean, atol=1e-8, rtol=0)
    np.testing.assert_allclose((chol @ chol.transpose(1, 2)).numpy(), np.broadcast_to(post_cov, (B, m, m)),
                               atol=1e-10, rtol=1e-8)
    assert torch.all(torch.diagonal(chol, dim1=-2, dim2=-1) > 0)
    u, lw = hermite_grid(m, 3)
    est = torch.logsumexp(adaptive_terms(d.truth, x, mode, chol, u, lw)[2], -1).numpy()  # log sum_g e^t_g
    np.testing.assert_allclose(est, exact, atol=1e-8, rtol=0)


def test_laplace_from_far_start_finds_the_mode() -> None:
    d, A, b, _ = _linear(3, 2, 0.1, 20, seed=8)
    x = torch.as_tensor(d.x, dtype=F64)
    mode, _ = laplace(d.truth, x, torch.full((20, 2), 5.0, dtype=F64), iters=10)
    M = A.T @ A + 0.01 * np.eye(2)
    np.testing.assert_allclose(mode.numpy(), np.linalg.solve(M, A.T @ (d.x - b).T).T, atol=1e-8)


# --------------------------------------------------------------------------------------------- simulator


def test_linear_sample_covariance_matches_model() -> None:
    N, n, m, sigma = 20000, 3, 2, 0.3
    d = simulate(SimulationConfig(mixing="linear", n=n, m=m, sigma=sigma, samples=N, seed=11))
    A = d.truth.mixing.params["A"].numpy()
    b = d.truth.mixing.params["b"].numpy()
    C = A @ A.T + sigma**2 * np.eye(n)
    S = np.cov(d.x.T)
    # sd of a Gaussian sample covariance entry: sqrt((C_ii C_jj + C_ij^2) / N)
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C**2) / N)
    assert np.all(np.abs(S - C) < 4 * se), (S - C) / se
    assert np.all(np.abs(d.x.mean(0) - b) < 4 * np.sqrt(np.diag(C) / N))
    # a wrong noise level (sigma instead of sigma^2 on the diagonal) would be far outside
    C_wrong = A @ A.T + sigma * np.eye(n)
    assert np.any(np.abs(S - C_wrong) > 10 * se)


@pytest.mark.parametrize("mixing", MIXINGS)
def test_simulate_noise_and_latents_are_standard_normal(mixing: str) -> None:
    N, sigma = 5000, 0.2
    d = simulate(SimulationConfig(mixing=mixing, n=3, m=2, sigma=sigma, samples=N, seed=4))
    assert d.x.shape == (N, 3) and d.z.shape == (N, 2) and len(d) == N and d.n == 3
    assert d.x.dtype == np.float64 and np.isfinite(d.x).all()
    z = d.z
    assert np.all(np.abs(z.mean(0)) < 4 / math.sqrt(N))
    assert np.all(np.abs(z.var(0) - 1) < 4 * math.sqrt(2 / N))
    eps = (d.x - d.truth.mixing(torch.as_tensor(z)).numpy()) / sigma
    assert np.all(np.abs(eps.mean(0)) < 4 / math.sqrt(N))
    assert np.all(np.abs(eps.var(0) - 1) < 4 * math.sqrt(2 / N))
    # noise independent of z
    assert np.all(np.abs(np.corrcoef(eps.T, z.T)[:3, 3:]) < 4 / math.sqrt(N))
    assert d.truth.noise_sigma == sigma and float(d.truth.sigma()) == sigma


@pytest.mark.parametrize("mixing", MIXINGS)
def test_same_seed_same_data_other_seed_other_data(mixing: str) -> None:
    cfg = SimulationConfig(mixing=mixing, n=3, m=2, samples=200, seed=123)
    a, b = simulate(cfg), simulate(dataclasses.replace(cfg))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.z, b.z)
    assert a.x.tobytes() == b.x.tobytes()
    pa, pb = a.truth.mixing.to_arrays(), b.truth.mixing.to_arrays()
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)
    c = simulate(dataclasses.replace(cfg, seed=124))
    assert np.mean(a.x != c.x) > 0.99 and np.mean(a.z != c.z) > 0.99
    assert any(not np.array_equal(pa[k], v) for k, v in c.truth.mixing.to_arrays().items() if pa[k].any())


@pytest.mark.parametrize("mixing", MIXINGS)
@pytest.mark.parametrize(("n", "m"), [(1, 1), (4, 2), (2, 3)])
def test_every_family_shape_and_finite(mixing: str, n: int, m: int) -> None:
    d = simulate(SimulationConfig(mixing=mixing, n=n, m=m, samples=50, seed=1))
    assert d.x.shape == (50, n) and d.z.shape == (50, m)
    assert np.isfinite(d.x).all()
    assert d.truth.n == n and d.truth.m == m
    for name, shape in d.truth.mixing.expected_shapes().items():
        assert tuple(d.truth.mixing.params[name].shape) == shape


def test_linear_mixing_is_az_plus_b() -> None:
    d = simulate(SimulationConfig(mixing="linear", n=4, m=2, samples=30, seed=2))
    p = d.truth.mixing.to_arrays()
    fz = d.truth.mixing(torch.as_tensor(d.z)).numpy()
    np.testing.assert_allclose(fz, d.z @ p["A"].T + p["b"], atol=1e-13)


def test_polynomial_degree_1_is_affine_and_degree_3_matches_formula() -> None:
    d = simulate(SimulationConfig(mixing="polynomial", degree=1, n=3, m=2, samples=100, seed=2))
    mix = d.truth.mixing
    p = mix.to_arrays()
    assert set(p) == {"b", "C1"}
    z1 = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    z2 = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    lam = 0.3
    lhs = mix(lam * z1 + (1 - lam) * z2)
    rhs = lam * mix(z1) + (1 - lam) * mix(z2)
    torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)
    np.testing.assert_allclose(mix(z1).numpy(), p["b"] + z1.numpy() @ p["C1"].T, atol=1e-13)
    d3 = simulate(SimulationConfig(mixing="polynomial", degree=3, n=3, m=2, samples=100, seed=2))
    p3 = d3.truth.mixing.to_arrays()
    z = d3.z
    ref = p3["b"] + z @ p3["C1"].T + z**2 @ p3["C2"].T + z**3 @ p3["C3"].T
    np.testing.assert_allclose(d3.truth.mixing(torch.as_tensor(z)).numpy(), ref, atol=1e-12)
    # degree 3 is not affine
    bent = d3.truth.mixing(lam * z1 + (1 - lam) * z2) - (lam * d3.truth.mixing(z1) + (1 - lam) * d3.truth.mixing(z2))
    assert bent.abs().max() > 1e-2


@pytest.mark.parametrize(("kind", "lo", "hi"), [("logistic", 0.0, 1.0), ("tanh", -1.0, 1.0)])
def test_sigmoid_outputs_in_range_before_noise(kind: str, lo: float, hi: float) -> None:
    d = simulate(SimulationConfig(mixing="sigmoid", sigmoid_kind=kind, n=4, m=2, samples=2000, seed=6))
    p = d.truth.mixing.to_arrays()
    fz = d.truth.mixing(torch.as_tensor(d.z)).numpy()
    assert np.all(fz > lo) and np.all(fz < hi)
    u = d.z @ p["A"].T + p["b"]
    ref = 1 / (1 + np.exp(-u)) if kind == "logistic" else np.tanh(u)
    np.testing.assert_allclose(fz, ref, atol=1e-13)
    # visibly curved: not saturated everywhere, and spread over the range
    assert fz.std() > 0.1 * (hi - lo)


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh", "relu"])
def test_mlp_n_greater_than_m_greater_than_1(activation: str) -> None:
    n, m, depth, width = 5, 3, 2, 7
    cfg = SimulationConfig(mixing="mlp", n=n, m=m, mlp_depth=depth, mlp_width=width, mlp_activation=activation,
                           samples=300, seed=9)
    d = simulate(cfg)
    mix = d.truth.mixing
    p = mix.to_arrays()
    assert p["W0"].shape == (width, m) and p["W1"].shape == (width, width) and p["W2"].shape == (n, width)
    act = {"leaky_relu": lambda v: np.where(v > 0, v, 0.2 * v), "tanh": np.tanh,
           "relu": lambda v: np.maximum(v, 0)}[activation]
    h = d.z
    for i in range(depth + 1):
        h = h @ p[f"W{i}"].T + p[f"b{i}"]
        if i < depth:
            h = act(h)
    np.testing.assert_allclose(mix(torch.as_tensor(d.z)).numpy(), h, atol=1e-12)
    assert d.x.shape == (300, n) and np.isfinite(d.x).all()
    # nonlinear: the midpoint of two latents does not map to the midpoint of their images
    z1, z2 = torch.as_tensor(d.z[:150]), torch.as_tensor(d.z[150:])
    assert (mix((z1 + z2) / 2) - (mix(z1) + mix(z2)) / 2).abs().max() > 1e-2


# -------------------------------------------------------------------------------------------------- PPCA


def test_ppca_closed_form_loglik_is_the_maximum() -> None:
    n, m, N = 5, 2, 2000
    d, _, _, exact = _linear(n, m, 0.3, N, seed=21)
    fit = ppca_mle(d.x, m)
    assert fit.W.shape == (n, m) and fit.mean.shape == (n,)
    direct = gaussian_loglik(d.x, fit.mean, fit.covariance()).mean()
    assert abs(fit.loglik_per_point - direct) < 1e-10
    # invariant under W -> W R for orthogonal R
    R, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(m, m)))
    C_rot = fit.W @ R @ R.T @ fit.W.T + fit.sigma2 * np.eye(n)
    assert abs(gaussian_loglik(d.x, fit.mean, C_rot).mean() - fit.loglik_per_point) < 1e-10
    # at least as good as the true parameters on the same data
    assert fit.loglik_per_point >= exact.mean()
    # a stationary maximum: every small perturbation of (mean, W, sigma^2) lowers it
    rng = np.random.default_rng(1)
    for _ in range(20):
        dW = rng.normal(size=(n, m)) * 0.02
        ds = rng.normal() * 0.005
        dm = rng.normal(size=n) * 0.01
        C = (fit.W + dW) @ (fit.W + dW).T + (fit.sigma2 + ds) * np.eye(n)
        assert gaussian_loglik(d.x, fit.mean + dm, C).mean() < fit.loglik_per_point
    # sigma^2 close to the truth for a large sample
    assert fit.sigma2 == pytest.approx(0.09, rel=0.1)


def test_ppca_rejects_m_at_least_n() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    for m in (0, 3, 4):
        with pytest.raises(ValueError, match="m"):
            ppca_mle(x, m)


def test_gaussian_loglik_matches_scipy() -> None:
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(3)
    L = rng.normal(size=(3, 3))
    C = L @ L.T + 0.5 * np.eye(3)
    mu = rng.normal(size=3)
    x = rng.normal(size=(20, 3))
    np.testing.assert_allclose(gaussian_loglik(x, mu, C), multivariate_normal(mu, C).logpdf(x), atol=1e-12)


# ----------------------------------------------------------------------------------------- latent scores


def test_latent_scores_perfect_for_rotation_and_permutation() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 3))
    Q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert procrustes_r2(z, z @ Q) == pytest.approx(1.0, abs=1e-10)
    assert procrustes_r2(z, z @ Q + 5.0) == pytest.approx(1.0, abs=1e-10)  # centred first
    flipped = z[:, [2, 0, 1]] * np.array([-1.0, 1.0, -1.0])
    assert mean_corr_coef(z, flipped) == pytest.approx(1.0, abs=1e-12)
    assert procrustes_r2(z, flipped) == pytest.approx(1.0, abs=1e-10)
    s = latent_scores(z, flipped)
    assert s["mcc"] == pytest.approx(1.0, abs=1e-12) and s["procrustes_r2"] == pytest.approx(1.0, abs=1e-10)
    # a rotation mixes coordinates: MCC drops below 1 while Procrustes stays 1
    assert mean_corr_coef(z, z @ Q) < 0.99


def test_latent_scores_low_for_independent_noise() -> None:
    rng = np.random.default_rng(1)
    z, noise = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    s = latent_scores(z, noise)
    assert s["procrustes_r2"] < 0.2
    assert s["mcc"] < 0.2
    # partially informative latents score in between: z_hat = z + 0.7 e gives corr 1/sqrt(1.49) and, with no
    # scaling in the Procrustes map, R^2 = 1 - 0.49
    mid = latent_scores(z, z + 0.7 * noise)
    assert mid["mcc"] == pytest.approx(1 / math.sqrt(1.49), abs=0.03)
    assert mid["procrustes_r2"] == pytest.approx(0.51, abs=0.05)


# ------------------------------------------------------------------------------------------- diagnostics


def test_effective_sample_size() -> None:
    K = 1000
    assert effective_sample_size(np.zeros((3, K))) == pytest.approx(np.full(3, K))
    assert effective_sample_size(np.full((1, K), -750.0))[0] == pytest.approx(K)  # stable under shifts
    one = np.full((1, K), -np.inf)
    one[0, 7] = 0.0
    assert effective_sample_size(one)[0] == pytest.approx(1.0)
    half = np.where(np.arange(K) < K // 2, 0.0, -np.inf)[None]
    assert effective_sample_size(half)[0] == pytest.approx(K / 2)
    w = np.random.default_rng(0).exponential(size=(1, K))
    assert effective_sample_size(np.log(w))[0] == pytest.approx(w.sum() ** 2 / (w**2).sum())


@pytest.mark.parametrize("k", [0.3, 0.5, 0.8, 1.2])
def test_pareto_khat_recovers_known_tail(k: float) -> None:
    rng = np.random.default_rng(42)
    U = rng.uniform(size=(30, 10000))
    lw = -k * np.log(U)  # w = U^-k: a Pareto tail of shape k
    kh = pareto_khat(lw)
    assert kh.shape == (30,)
    assert abs(np.median(kh) - k) < 0.1
    assert abs(np.mean(kh) - k) < 0.1
    gpd = (U ** (-k) - 1) / k  # generalised Pareto quantile function, shape k
    kg = pareto_khat(np.log(gpd))
    assert abs(np.median(kg) - k) < 0.1
    assert np.all(np.abs(kg - k) < 0.4)


def test_pareto_khat_light_tail_and_degenerate() -> None:
    rng = np.random.default_rng(7)
    assert np.all(pareto_khat(rng.normal(0, 0.1, size=(10, 10000))) < 0.5)
    assert np.all(pareto_khat(rng.normal(0, 0.3, size=(10, 2000))) < 0.5)
    assert np.all(np.isnan(pareto_khat(np.zeros((2, 20)))))  # too few draws for a tail fit
    assert np.all(pareto_khat(np.zeros((2, 1000))) == -np.inf)  # equal weights: no tail at all


# ---------------------------------------------------------------------------------- sigma identifiability


@pytest.mark.parametrize(("mixing", "n", "m", "identified"), [
    ("linear", 1, 1, False), ("linear", 2, 2, False), ("linear", 2, 3, False), ("linear", 1, 4, False),
    ("linear", 2, 1, True), ("linear", 5, 3, True),
    ("polynomial", 1, 1, True), ("polynomial", 1, 2, True), ("sigmoid", 2, 2, True), ("mlp", 1, 3, True),
])
def test_sigma_identified(mixing: str, n: int, m: int, identified: bool) -> None:
    d = simulate(SimulationConfig(mixing=mixing, n=n, m=m, sigma=0.25, samples=5, seed=0))
    truth = d.truth
    assert isinstance(truth, TrueModel)
    assert truth.sigma_identified is identified
    rep = sigma_report(truth)
    assert rep["sigma_identified"] is identified
    if identified:
        assert rep["sigma"] == pytest.approx(0.25) and "sigma_note" not in rep
    else:
        assert rep["sigma"] is None
        assert "not identified" in rep["sigma_note"] and "0.25" in rep["sigma_note"]
    json.dumps(rep)


# ------------------------------------------------------------------------------------ config validation

SECTIONS = {"simulation": SimulationConfig, "decoder": DecoderConfig, "estimator": EstimatorConfig,
            "training": TrainingConfig}

NAN, INF = float("nan"), float("inf")
INT_BAD = [True, 1.0, "3", None, NAN, [1]]
REAL_BAD = [NAN, INF, -INF, True, "0.1", None, [0.1]]

# (section, field, bad values, text that the message must contain: the allowed range)
BAD_VALUES: list[tuple[str, str, list[Any], str]] = [
    ("simulation", "mixing", ["foo", 1, None, "Linear"], "expected one of linear, polynomial, sigmoid, mlp"),
    ("simulation", "n", [0, 1001, -1, *INT_BAD], "integer from 1 to 1000"),
    ("simulation", "m", [0, 101, *INT_BAD], "integer from 1 to 100"),
    ("simulation", "sigma", [0, 0.0, -1, 1000.5, *REAL_BAD], "number in (0, 1000]"),
    ("simulation", "samples", [0, 1, 10_000_001, *INT_BAD], "integer from 2 to 10000000"),
    ("simulation", "seed", [-1, 2**63, *INT_BAD], "integer from 0 to 9223372036854775807"),
    ("simulation", "degree", [0, 10, *INT_BAD], "integer from 1 to 9"),
    ("simulation", "sigmoid_kind", ["relu", None, 0], "expected one of logistic, tanh"),
    ("simulation", "mlp_depth", [0, 9, *INT_BAD], "integer from 1 to 8"),
    ("simulation", "mlp_width", [0, 1025, *INT_BAD], "integer from 1 to 1024"),
    ("simulation", "mlp_activation", ["gelu", None], "expected one of tanh, relu, leaky_relu, elu, softplus, sigmoid"),
    ("simulation", "scale", [0, -1, 1001, *REAL_BAD], "number in (0, 1000]"),
    ("decoder", "m", [0, 101, *INT_BAD], "integer from 1 to 100"),
    ("decoder", "hidden", [[0], [4097], [1.5], [True], "64", 64, [None], [1] * 9, [[8]]],
     "at most 8 layer widths, each an integer from 1 to 4096"),
    ("decoder", "activation", ["gelu", 1], "expected one of tanh, relu"),
    ("decoder", "sigma_mode", ["diag", None], "expected one of shared, per_dim"),
    ("decoder", "learn_sigma", [1, 0, "true", None, NAN], "expected true or false"),
    ("decoder", "sigma_init", [0, -1, 1001, NAN, INF, True, "1"], "number in (0, 1000]"),
    ("decoder", "sigma_min", [-0.1, 1001, NAN, INF, True, "0"], "number in [0, 1000]"),
    ("decoder", "preprocess", ["zscore", None, 1], "expected one of none, center, standardize"),
    ("decoder", "init", ["zeros", "PPCA", None, 1], "expected one of ppca, random"),
    ("estimator", "name", ["mle", "VAE", None, 1], "expected one of mle-quadrature, mle-adaptive"),
    ("estimator", "nodes", [0, 1, 201, *(v for v in INT_BAD if v is not None)], "integer from 2 to 200"),
    ("estimator", "samples", [0, 100_001, *INT_BAD], "integer from 1 to 100000"),
    ("estimator", "proposal", ["posterior", None], "expected one of prior, laplace"),
    ("estimator", "sampler", ["nuts", None], "expected one of langevin, hmc"),
    ("estimator", "mcmc_steps", [0, 1001, *INT_BAD], "integer from 1 to 1000"),
    ("estimator", "leapfrog_steps", [0, 101, *INT_BAD], "integer from 1 to 100"),
    ("estimator", "target_accept", [0.01, 0.995, 1, *REAL_BAD], "number in [0.05, 0.99]"),
    ("estimator", "encoder_hidden", [[0], [5000], "x", [1.0]], "at most 8 layer widths"),
    ("estimator", "beta", [-0.1, 100.5, *REAL_BAD], "number in [0, 100]"),
    ("estimator", "warmup_steps", [-1, 10_000_001, *INT_BAD], "integer from 0 to 10000000"),
    ("estimator", "dreg", [0, 1, "false", None], "expected true or false"),
    ("estimator", "vae_sigma", ["fixed", None], "expected one of learned, closed_form"),
    ("training", "steps", [0, 10_000_001, *(v for v in INT_BAD if v is not None)], "integer from 1 to 10000000"),
    ("training", "batch_size", [0, 1_000_001, *INT_BAD], "integer from 1 to 1000000"),
    ("training", "lr", [0, -1e-3, 10.5, *REAL_BAD], "number in (0, 10]"),
    ("training", "schedule", ["linear", None], "expected one of plateau, cosine, constant"),
    ("training", "tol", [-1e-3, 1000.5, *REAL_BAD], "number in [0, 1000]"),
    ("training", "val_fraction", [-0.1, 0.95, 1, *REAL_BAD], "number in [0, 0.9]"),
    ("training", "eval_every", [0, *INT_BAD], "integer from 1 to 10000000"),
    ("training", "patience", [-1, 100_001, *INT_BAD], "integer from 0 to 100000"),
    ("training", "snapshot_every", [0, *INT_BAD], "integer from 1 to 10000000"),
    ("training", "time_limit", [0, -1, 1e7 + 1, *(v for v in REAL_BAD if v is not None)], "number in (0, 1e+07]"),
    ("training", "threads", [-1, 1025, *INT_BAD], "integer from 0 to 1024"),
    ("training", "device", ["tpu", "CUDA", None], "expected one of auto, cpu, cuda"),
    ("training", "seed", [-1, 2**63, *INT_BAD], "integer from 0 to 9223372036854775807"),
]


def test_bad_value_table_covers_every_field() -> None:
    covered = {(s, f) for s, f, _, _ in BAD_VALUES}
    every = {(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    assert covered == every, every ^ covered


@pytest.mark.parametrize(("section", "name", "values", "allowed"), BAD_VALUES,
                         ids=[f"{s}.{f}" for s, f, _, _ in BAD_VALUES])
def test_bad_value_raises_config_error_naming_field(section: str, name: str, values: list[Any],
                                                    allowed: str) -> None:
    for v in values:
        # through the JSON-facing constructor
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict({section: {name: v}})
        e = info.value
        assert e.field == f"{section}.{name}", (v, str(e))
        assert allowed in str(e) and allowed in e.allowed, (v, str(e))
        assert str(e).startswith(f"{section}.{name}: got ")
        # and by validating the dataclass directly (a custom prefix is used as given)
        obj = SECTIONS[section](**{name: v})
        with pytest.raises(ConfigError) as info2:
            obj.validate()
        assert info2.value.field == f"{section}.{name}"
        with pytest.raises(ConfigError) as info3:
            obj.validate("panel")
        assert info3.value.field == f"panel.{name}"


GOOD_EDGES: list[tuple[str, str, list[Any]]] = [
    ("simulation", "n", [1, 1000]), ("simulation", "m", [1, 100]), ("simulation", "sigma", [1e-9, 1000, 1000.0]),
    ("simulation", "samples", [2, 10_000_000]), ("simulation", "seed", [0, 2**63 - 1]),
    ("simulation", "degree", [1, 9]), ("simulation", "mlp_depth", [1, 8]), ("simulation", "mlp_width", [1, 1024]),
    ("simulation", "scale", [1e-6, 1000]),
    ("decoder", "hidden", [[], [1], [4096], [1] * 8]), ("decoder", "sigma_min", [0, 0.0, 999]),
    ("decoder", "sigma_init", [1e-9, 1000]), ("decoder", "learn_sigma", [False]),
    ("estimator", "nodes", [2, 20]), ("estimator", "samples", [1, 100_000]),
    ("estimator", "target_accept", [0.05, 0.99]),
    ("estimator", "beta", [0, 100]), ("estimator", "encoder_hidden", [[]]), ("estimator", "dreg", [True]),
    ("training", "val_fraction", [0, 0.9]), ("training", "lr", [1e-12, 10]), ("training", "patience", [0]),
    ("training", "steps", [None, 1]), ("training", "tol", [0, 1000]), ("decoder", "init", ["random"]),
    ("training", "batch_size", [1, 1_000_000]), ("training", "seed", [2**63 - 1]),
]


@pytest.mark.parametrize(("section", "name", "values"), GOOD_EDGES, ids=[f"{s}.{f}" for s, f, _ in GOOD_EDGES])
def test_edge_values_are_accepted(section: str, name: str, values: list[Any]) -> None:
    for v in values:
        cfg = RunConfig.from_dict({section: {name: v}})
        got = getattr(getattr(cfg, section), name)
        assert got == (tuple(v) if isinstance(v, list) else v)


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"sigma_init": 0.1, "sigma_min": 0.2}})
    assert info.value.field == "decoder.sigma_init" and "sigma_min" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"sigma_init": 0.2, "sigma_min": 0.2}})
    assert info.value.field == "decoder.sigma_init"
    RunConfig.from_dict({"decoder": {"sigma_init": 0.3, "sigma_min": 0.2}})
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"m": 4}, "estimator": {"name": "mle-quadrature"}})
    assert info.value.field == "estimator.name" and "m <= 3" in str(info.value)
    RunConfig.from_dict({"decoder": {"m": 3}, "estimator": {"name": "mle-quadrature", "nodes": 27}})
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"m": 3}, "estimator": {"name": "mle-quadrature", "nodes": 28}})
    assert info.value.field == "estimator.nodes" and "20000" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"m": 2}, "estimator": {"name": "mle-adaptive", "nodes": 142}})
    assert info.value.field == "estimator.nodes"
    RunConfig.from_dict({"decoder": {"m": 2}, "estimator": {"name": "mle-adaptive", "nodes": 141}})
    # other estimators have no grid limit
    RunConfig.from_dict({"decoder": {"m": 50}, "estimator": {"name": "mle-importance", "nodes": 200}})


def _custom_config() -> RunConfig:
    return RunConfig(
        simulation=SimulationConfig(mixing="mlp", n=7, m=3, sigma=0.037, samples=1234, seed=2**62 + 5, degree=4,
                                    sigmoid_kind="tanh", mlp_depth=3, mlp_width=11, mlp_activation="elu",
                                    scale=1.7),
        decoder=DecoderConfig(m=3, hidden=(32, 16, 8), activation="softplus", sigma_mode="per_dim",
                              learn_sigma=False, sigma_init=0.123456789012345, sigma_min=1e-7),
        estimator=EstimatorConfig(name="mle-mcem", nodes=9, samples=333, proposal="prior", sampler="hmc",
                                  mcmc_steps=17, leapfrog_steps=3, target_accept=0.8, encoder_hidden=(),
                                  beta=0.25, warmup_steps=100, dreg=True, vae_sigma="closed_form"),
        training=TrainingConfig(steps=777, batch_size=64, lr=1.0 / 3.0, schedule="constant", val_fraction=0.0,
                                eval_every=7, patience=3, snapshot_every=5, device="cpu", seed=99),
    )


@pytest.mark.parametrize("cfg", [RunConfig(), _custom_config()], ids=["default", "custom"])
def test_run_config_json_round_trip_is_exact(cfg: RunConfig) -> None:
    cfg.validate()
    text = cfg.to_json()
    back = RunConfig.from_json(text)
    assert back == cfg
    assert back.to_json() == text
    assert back.to_dict() == cfg.to_dict()
    assert isinstance(back.decoder.hidden, tuple) and isinstance(back.estimator.encoder_hidden, tuple)
    assert back.training.lr == cfg.training.lr  # floats survive bit for bit
    assert set(json.loads(text)) == set(SECTIONS)
    # partial dicts take the defaults for what is missing
    assert RunConfig.from_dict({}) == RunConfig()
    assert RunConfig.from_dict({"simulation": {}}) == RunConfig()


def test_unknown_keys_refused() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"simulatio": {}})
    assert info.value.field == "config.simulatio"
    assert "simulation, decoder, estimator, training" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"simulation": {"sigm": 0.1}})
    assert info.value.field == "simulation.sigm" and "sigma" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_json(json.dumps({**RunConfig().to_dict(), "extra": 1}))
    assert info.value.field == "config.extra"
    d = RunConfig().to_dict()
    d["training"]["epochs"] = 3
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(d)
    assert info.value.field == "training.epochs"


@pytest.mark.parametrize("text", ["", "{", "[1, 2", "{'a': 1}", "nul", "{\"simulation\": }", "\x00"])
def test_invalid_json_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_json(text)
    assert info.value.field == "config" and "not valid JSON" in str(info.value)


@pytest.mark.parametrize("obj", [[1], 3, "x", None, True])
def test_non_object_json_refused(obj: Any) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_json(json.dumps(obj))
    assert info.value.field == "config" and "JSON object" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"estimator": obj})
    assert info.value.field == "estimator"


def test_huge_integers_are_config_errors() -> None:
    """JSON carries integers of any size; a real-valued field given 10^400 must be refused, not crash
    (math.isfinite(10**400) raises OverflowError)."""
    for section, name in (("simulation", "sigma"), ("estimator", "beta"), ("training", "lr"),
                          ("decoder", "sigma_min"), ("simulation", "n")):
        with pytest.raises(ConfigError) as info:
            RunConfig.from_json(f'{{"{section}": {{"{name}": 1{"0" * 400}}}}}')
        assert info.value.field == f"{section}.{name}"


@pytest.mark.parametrize("text", [
    '{"simulation": {"n": 1' + "0" * 5000 + "}}",  # above Python's int-string limit: ValueError in json
    "[" * 100_000 + "]" * 100_000,  # RecursionError in json
    '{"decoder": {"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}}",
], ids=["int-digits-limit", "deep-array", "deep-in-section"])
def test_pathological_json_is_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_json(text)
    assert info.value.field.startswith("config") or info.value.field.startswith("decoder")


def test_non_string_keys_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        RunConfig.from_dict({1: {}, "simulation": {}})
    with pytest.raises(ConfigError):
        RunConfig.from_dict({1: {}, "x": {}})
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"simulation": {1: 2}})
    assert info.value.field == "simulation.1"


# ------------------------------------------------------------------------------- hypothesis property tests

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-3, max_value=300),
    st.sampled_from([2**63, 2**63 - 1, -(2**63), 10**400, -(10**400)]), st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=0.0, max_value=2.0),
    st.text(max_size=8), st.sampled_from(["linear", "mlp", "tanh", "vae", "cpu", "cuda", "prior", "hmc", "shared"]),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                       max_leaves=8)


def _section_strategy(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly the real field names with mostly valid values (so that validation gets deep into the
    section), sometimes random values of random types, sometimes junk keys."""
    names = [f.name for f in dataclasses.fields(cls)]
    defaults = cls()
    field_value = {n: st.one_of(st.just(getattr(defaults, n)), st.just(getattr(defaults, n)), _scalars, _values)
                   for n in names}
    fields = st.fixed_dictionaries({}, optional={n: field_value[n] for n in names})
    junk = st.one_of(st.just({}), st.just({}), st.just({}),
                     st.dictionaries(st.one_of(st.sampled_from(names), st.text(max_size=6)), _values, max_size=3))
    return st.tuples(fields, junk).map(lambda t: {**t[0], **t[1]})


_sections = st.fixed_dictionaries({}, optional={name: st.one_of(_section_strategy(cls), _section_strategy(cls), _values)
                                                for name, cls in SECTIONS.items()})
_run_dicts = st.one_of(
    _sections, _sections, _sections,
    st.dictionaries(st.one_of(st.sampled_from(list(SECTIONS)), st.text(max_size=6)),
                    st.one_of(_section_strategy(SimulationConfig), _values), max_size=5),
    _values,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_run_dicts)
def test_from_dict_only_ever_raises_config_error(d: Any) -> None:
    try:
        cfg = RunConfig.from_dict(d)
    except ConfigError as e:
        assert isinstance(e.field, str) and e.field
        assert str(e).startswith(e.field)
        return
    cfg.validate()
    assert RunConfig.from_json(cfg.to_json()) == cfg


_FIELDS = [(sec, f.name) for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_FIELDS),
       st.one_of(_scalars, _values, st.sampled_from([10**400, -(10**400), NAN, INF, -INF, 2**1024])))
def test_one_random_field_gives_config_error_naming_it(where: tuple[str, str], value: Any) -> None:
    """Every field alone, given any JSON-like value: accepted, or refused with a ConfigError naming it."""
    section, name = where
    try:
        cfg = RunConfig.from_dict({section: {name: value}})
    except ConfigError as e:
        cross = section == "decoder" and name == "m" and e.field in ("estimator.nodes", "estimator.name")
        assert e.field == f"{section}.{name}" or cross, str(e)
        return
    got = getattr(getattr(cfg, section), name)
    assert got == (tuple(value) if isinstance(value, list) else value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), _run_dicts.map(lambda d: json.dumps(d, default=str))))
def test_from_json_only_ever_raises_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        RunConfig.from_json(text)


# ------------------------------------------------------------------------------------------------- no Qt


def test_engine_imports_no_qt() -> None:
    code = ("import engine, engine.cli, engine.runs, engine.trainer, engine.metrics, sys; "
            "print(any(m.startswith(('PySide6','pyqtgraph','shiboken')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
