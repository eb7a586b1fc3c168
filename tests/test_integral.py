"""engine/integral.py against exact references: for a linear decoder g(z) = A z + b the posterior is
N(M^-1 A^T (x - b), sigma^2 M^-1) with M = A^T A + sigma^2 I, and log p(x) = log N(x; b, A A^T + sigma^2 I);
Gauss-Hermite moments of a Gaussian are exact; an encoder that outputs the exact posterior makes every
importance weight equal. An outlier of a cubic-like g checks that the grid follows the mass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine import integral
from engine.config import DecoderConfig, EstimatorConfig
from engine.evaluate import ScoringStopped
from engine.integral import (
    CHAIN_TRANSITIONS,
    IWAE_DRAWS,
    IWAE_REPEATS,
    ChainStates,
    EncoderQ,
    ImportanceDraws,
    NodeRule,
    exact_posterior,
    point_posterior,
)
from engine.likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal
from engine.likelihood.quadrature import hermite_grid, log_marginal_dense
from engine.networks import Decoder, Encoder, build_decoder

F64 = torch.float64


def linear_decoder(A: np.ndarray, b: np.ndarray, sigma: float) -> Decoder:
    """g(z) = A z + b with the shared noise sigma (no hidden layers, no preprocessing)."""
    n, m = A.shape
    dec = build_decoder(n, DecoderConfig(m=m, hidden=(), sigma_min=0.0), torch.zeros(4, n)).double()
    with torch.no_grad():
        dec.net.layers[0].weight.copy_(torch.as_tensor(A))
        dec.net.layers[0].bias.copy_(torch.as_tensor(b))
        dec.set_sigma(torch.tensor(sigma, dtype=F64))
    return dec.requires_grad_(False)


def gaussian_reference(A: np.ndarray, b: np.ndarray, sigma: float, x: np.ndarray):
    """log N(x; b, A A^T + sigma^2 I), the posterior mean and covariance."""
    n, m = A.shape
    C = A @ A.T + sigma**2 * np.eye(n)
    d = x - b
    log_px = -0.5 * (d @ np.linalg.solve(C, d) + np.linalg.slogdet(C)[1] + n * math.log(2 * math.pi))
    M = A.T @ A + sigma**2 * np.eye(m)
    return log_px, np.linalg.solve(M, A.T @ d), sigma**2 * np.linalg.inv(M)


def problem(n: int, m: int, sigma: float, seed: int, far: float = 0.0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, m))
    b = rng.normal(size=n)
    x = b + A @ rng.normal(size=m) + sigma * rng.normal(size=n) + far
    return A, b, x


def grid_moments(post) -> tuple[float, np.ndarray, np.ndarray]:
    """Mass, mean and covariance of the density on the grid shown (trapezoid ≈ Riemann sum here)."""
    axes = [post.axis] if post.axis2 is None else [post.axis, post.axis2]
    cell = np.prod([a[1] - a[0] for a in axes])
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    p = post.exact.reshape(-1) * cell
    mean = p @ z / p.sum()
    cov = (z - mean).T @ ((z - mean) * p[:, None]) / p.sum()
    return float(p.sum()), mean, cov


CASES = [(1, 1, 0.3), (3, 1, 0.05), (3, 2, 0.2), (2, 2, 0.05)]


@pytest.mark.parametrize(("n", "m", "sigma"), CASES)
def test_exact_posterior_of_a_linear_decoder_is_the_closed_form(n: int, m: int, sigma: float) -> None:
    A, b, x = problem(n, m, sigma, seed=n + 10 * m)
    log_px, mean, cov = gaussian_reference(A, b, sigma, x)
    post = point_posterior(linear_decoder(A, b, sigma), x, EstimatorConfig(name="mle-adaptive", nodes=4))
    assert post.log_px == pytest.approx(log_px, abs=1e-6)
    np.testing.assert_allclose(post.mode, mean, atol=1e-8)
    mass, gmean, gcov = grid_moments(post)
    sd = np.sqrt(np.diag(cov))
    assert mass == pytest.approx(1.0, abs=1e-3)  # the grid shown holds the mass
    np.testing.assert_allclose(gmean, mean, atol=2e-3 * sd.min())
    np.testing.assert_allclose(gcov, cov, rtol=0.02, atol=0.02 * sd.min() ** 2)
    assert post.exact.shape == (len(post.axis),) * m


@pytest.mark.parametrize("nodes", [3, 4, 5])
@pytest.mark.parametrize(("n", "m", "sigma"), CASES)
def test_adaptive_nodes_are_exact_for_a_linear_decoder(n: int, m: int, sigma: float, nodes: int) -> None:
    A, b, x = problem(n, m, sigma, seed=3 + n + m)
    log_px, mean, cov = gaussian_reference(A, b, sigma, x)
    post = point_posterior(linear_decoder(A, b, sigma), x, EstimatorConfig(name="mle-adaptive", nodes=nodes))
    a = post.approximation
    points = {(2, 3): 7, (2, 4): 12}.get((m, nodes), nodes**m)  # m = 2: the compact rules of degree 5 and 7
    assert isinstance(a, NodeRule) and a.adaptive
    assert a.rule == {1: f"{nodes} nodes",
                      2: {3: "7 nodes of degree 5", 4: "12 nodes of degree 7", 5: "5 nodes per axis (25)"}[nodes]}[m]
    assert a.nodes.shape == (points, m) and a.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert a.estimate == pytest.approx(log_px, abs=1e-6)
    assert post.gap == pytest.approx(0.0, abs=2e-6)
    # the weights are the posterior's: Gauss-Hermite integrates the Gaussian's first two moments exactly
    wmean = a.weights @ a.nodes
    np.testing.assert_allclose(wmean, mean, atol=1e-8)
    np.testing.assert_allclose((a.nodes - wmean).T @ ((a.nodes - wmean) * a.weights[:, None]), cov, atol=1e-8)
    np.testing.assert_allclose(a.chol @ a.chol.T, cov, atol=1e-10)
    # the exact density at each node, for drawing them on the curve
    assert a.density.shape == (points,) and np.all(a.density > 0)


def test_fixed_quadrature_shows_its_bias_on_a_narrow_posterior() -> None:
    A, b, x = problem(1, 1, 0.02, seed=4)
    log_px, mean, _ = gaussian_reference(A, b, 0.02, x)
    est = EstimatorConfig(name="mle-quadrature", nodes=8)
    post = point_posterior(linear_decoder(A, b, 0.02), x, est)
    a = post.approximation
    u, lw = hermite_grid(1, 8)
    np.testing.assert_allclose(a.nodes, u.numpy())
    assert a.weights.sum() == pytest.approx(1.0, abs=1e-12)
    dec = linear_decoder(A, b, 0.02)
    ref = float(log_marginal_dense(dec, torch.as_tensor(x).reshape(1, -1), u, lw)[0])
    assert a.estimate == pytest.approx(ref, abs=1e-12)
    assert abs(post.gap) > 0.1  # 8 nodes miss a posterior of sd 0.02
    assert post.log_px == pytest.approx(log_px, abs=1e-6)  # the exact side does not
    assert grid_moments(post)[1] == pytest.approx(mean, abs=1e-4)
    # the grid shown still holds the nodes that carry weight, and the posterior's mass
    heavy = a.nodes[a.weights >= 1e-3 * a.weights.max(), 0]
    assert post.axis[0] <= heavy.min() and heavy.max() <= post.axis[-1]
    assert grid_moments(post)[0] == pytest.approx(1.0, abs=1e-3)
    # a broad posterior: the fixed rule converges
    A, b, x = problem(1, 1, 1.0, seed=4)
    post = point_posterior(linear_decoder(A, b, 1.0), x, EstimatorConfig(name="mle-quadrature", nodes=32))
    assert post.gap == pytest.approx(0.0, abs=1e-6)
    assert post.log_px == pytest.approx(gaussian_reference(A, b, 1.0, x)[0], abs=1e-6)


@pytest.mark.parametrize("proposal", ["prior", "laplace"])
@pytest.mark.parametrize(("n", "m", "sigma"), [(1, 1, 0.3), (3, 2, 0.2)])
def test_importance_draws_their_weights_and_ess(proposal: str, n: int, m: int, sigma: float) -> None:
    A, b, x = problem(n, m, sigma, seed=7)
    dec = linear_decoder(A, b, sigma)
    K = 64
    est = EstimatorConfig(name="mle-importance", samples=K, proposal=proposal)
    post = point_posterior(dec, x, est, seed=3)
    a = post.approximation
    assert isinstance(a, ImportanceDraws) and a.draws.shape == (K, m) and a.proposal == proposal
    assert a.weights.sum() == pytest.approx(1.0, abs=1e-12) and np.all(a.weights >= 0)
    assert 1.0 <= a.ess <= K
    assert a.ess == pytest.approx(1.0 / np.sum(a.weights**2), rel=1e-9)
    # the draws shown are the ones weighted: w_k ∝ p(x, z_k) / q(z_k | x) recomputed from them
    xt = torch.as_tensor(x).reshape(1, -1)
    z = torch.as_tensor(a.draws)
    log_joint = (-0.5 * ((xt - dec.mean(z)) / dec.sigma()).pow(2).sum(-1) - n * torch.log(dec.sigma())
                 - 0.5 * n * math.log(2 * math.pi) - 0.5 * z.pow(2).sum(-1) - 0.5 * m * math.log(2 * math.pi))
    if proposal == "prior":
        log_q = -0.5 * z.pow(2).sum(-1) - 0.5 * m * math.log(2 * math.pi)
    else:
        L = np.linalg.cholesky(gaussian_reference(A, b, sigma, x)[2])
        q = GaussianProposal(torch.as_tensor(post.mode).reshape(1, m), torch.as_tensor(L).reshape(1, m, m),
                             DEFENSIVE_WEIGHT)
        log_q = q.log_prob(z.unsqueeze(0))[0]
    lw = (log_joint - log_q).numpy()
    np.testing.assert_allclose(a.weights, np.exp(lw - lw.max()) / np.exp(lw - lw.max()).sum(), atol=1e-9)
    assert a.estimate == pytest.approx(float(np.logaddexp.reduce(lw) - math.log(K)), abs=1e-9)
    # seeded: the same draws again, others with another seed
    again = point_posterior(dec, x, est, seed=3).approximation
    np.testing.assert_array_equal(again.draws, a.draws)
    assert not np.array_equal(point_posterior(dec, x, est, seed=4).approximation.draws, a.draws)
    if proposal == "laplace":  # the Laplace proposal is the exact posterior here: weights nearly equal
        assert a.ess > 0.8 * K and abs(post.gap) < 0.05


class CubicLike:
    """g(z) = 0.3 z + 0.02 z^3, sigma 0.1, n = m = 1: x = 6 puts the mass near z = 5.9, outside the old
    fixed grid [-4.5, 4.5]."""

    n, m = 1, 1

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return 0.3 * z + 0.02 * z**3

    def sigma(self) -> torch.Tensor:
        return torch.tensor(0.1, dtype=F64)


def test_the_grid_of_an_outlier_holds_its_mass() -> None:
    model = CubicLike()
    post = exact_posterior(model, np.array([6.0]))
    p, z = post.density, post.axes[0]
    assert p[0] < 1e-3 * p.max() and p[-1] < 1e-3 * p.max()  # the old bug: density 0.78 at the grid's end
    assert z[int(np.argmax(p))] > 4.5
    # log p(x) against a brute-force trapezoid on a wide, very fine grid
    zz = np.linspace(-20.0, 20.0, 800_001)
    lj = (-0.5 * ((6.0 - 0.3 * zz - 0.02 * zz**3) / 0.1) ** 2 - math.log(0.1) - 0.5 * math.log(2 * math.pi)
          - 0.5 * zz**2 - 0.5 * math.log(2 * math.pi))
    ref = float(np.logaddexp.reduce(lj) + math.log(zz[1] - zz[0]))
    assert post.log_px == pytest.approx(ref, abs=1e-6)
    assert p.sum() * (z[1] - z[0]) == pytest.approx(1.0, abs=1e-3)


def test_the_2d_grid_of_an_outlier_holds_its_mass() -> None:
    A, b, x = problem(3, 2, 0.1, seed=2, far=6.0)
    log_px, mean, _ = gaussian_reference(A, b, 0.1, x)
    assert np.abs(mean).max() > 4.5
    post = point_posterior(linear_decoder(A, b, 0.1), x, EstimatorConfig(name="mle-quadrature", nodes=8))
    p = post.exact
    for edge in (p[0], p[-1], p[:, 0], p[:, -1]):
        assert edge.max() < 1e-3 * p.max()
    assert post.log_px == pytest.approx(log_px, abs=1e-6)
    assert grid_moments(post)[0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_mcem_chain_states_and_acceptance(sampler: str) -> None:
    A, b, x = problem(2, 1, 0.3, seed=5)
    _, mean, cov = gaussian_reference(A, b, 0.3, x)
    est = EstimatorConfig(name="mle-mcem", sampler=sampler, mcmc_steps=3, leapfrog_steps=4)
    post = point_posterior(linear_decoder(A, b, 0.3), x, est, seed=1)
    a = post.approximation
    assert isinstance(a, ChainStates) and a.estimate is None and post.gap is None
    assert 0.0 < a.acceptance <= 1.0 and a.step_size > 0
    T = a.states.shape[0]
    assert a.states.shape == (T, 1) and T > 50 and a.transitions == 3 * T
    assert len(np.unique(a.states)) > T // 4  # the chain moves
    # the states are draws of the posterior: their mean within a few (autocorrelated) standard errors
    assert abs(a.states.mean() - mean[0]) < 8 * math.sqrt(cov[0, 0] / T)
    edges, dens = a.histogram
    assert np.sum(dens * np.diff(edges)) == pytest.approx(1.0)
    assert post.axis[0] <= a.states.min() and a.states.max() <= post.axis[-1]


def exact_encoder(A: np.ndarray, b: np.ndarray, sigma: float) -> Encoder:
    """A linear encoder whose q(z | x) is the exact posterior of the linear decoder (m = 1)."""
    n, m = A.shape
    M = A.T @ A + sigma**2 * np.eye(m)
    W = np.linalg.solve(M, A.T)  # mu = W (x - b)
    enc = Encoder(n, m, (), "tanh").double()
    with torch.no_grad():
        layer = enc.net.layers[0]
        layer.weight.copy_(torch.as_tensor(np.concatenate([W, np.zeros((m, n))])))
        layer.bias.copy_(torch.as_tensor(np.concatenate([-W @ b, 0.5 * np.log(np.diag(sigma**2 * np.linalg.inv(M)))])))
    return enc


@pytest.mark.parametrize("name", ["vae", "iwae"])
def test_encoder_q_with_the_exact_posterior(name: str) -> None:
    A, b, x = problem(2, 1, 0.2, seed=9)
    log_px, mean, cov = gaussian_reference(A, b, 0.2, x)
    K = 16
    post = point_posterior(linear_decoder(A, b, 0.2), x, EstimatorConfig(name=name, samples=K),
                           exact_encoder(A, b, 0.2))
    a = post.approximation
    assert isinstance(a, EncoderQ)
    np.testing.assert_allclose(a.mean, mean, atol=1e-6)
    np.testing.assert_allclose(a.scale**2, np.diag(cov), rtol=1e-6)
    h = post.axis[1] - post.axis[0]
    assert post.encoder.sum() * h == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(post.encoder, post.exact, atol=1e-6 * post.exact.max())
    assert a.elbo == pytest.approx(log_px, abs=0.02)  # exact q: the ELBO is tight up to its Monte Carlo term
    if name == "iwae":  # every weight p(x, z_k) / q(z_k | x) equals p(x)
        assert a.draws.shape == (K, 1) and a.ess == pytest.approx(K, rel=1e-9)
        assert a.estimate == pytest.approx(log_px, abs=1e-8) and a.iwae_bound == pytest.approx(log_px, abs=1e-8)


@pytest.mark.parametrize(("m", "name"), [(1, "vae"), (2, "vae"), (2, "iwae")])
def test_a_trained_like_encoder_q_integrates_to_one_on_the_grid(m: int, name: str) -> None:
    torch.manual_seed(0)
    n = 3
    x = torch.randn(40, n)
    dec = build_decoder(n, DecoderConfig(m=m, hidden=(8,)), x)
    enc = Encoder(n, m, (8,), "tanh")
    post = point_posterior(dec, x[0].numpy(), EstimatorConfig(name=name, samples=8), enc)
    cell = (post.axis[1] - post.axis[0]) * (1.0 if m == 1 else post.axis2[1] - post.axis2[0])
    assert post.encoder.shape == post.exact.shape
    assert post.encoder.sum() * cell == pytest.approx(1.0, abs=2e-3)
    assert post.exact.sum() * cell == pytest.approx(1.0, abs=2e-3)
    a = post.approximation
    assert len(a.levels) == 2 and post.gap == pytest.approx(post.log_px - a.estimate)
    if name == "vae":  # the drawn ELBO against E_q log p(x, z)/q(z|x) on the grid, which is at most log p(x)
        q, p_xz = post.encoder.ravel(), post.exact.ravel() * np.exp(post.log_px)
        ok = (q > 0) & (p_xz > 0)
        elbo_grid = float(np.sum(q[ok] * (np.log(p_xz[ok]) - np.log(q[ok]))) * cell)
        assert elbo_grid <= post.log_px + 1e-6
        assert a.estimate == pytest.approx(elbo_grid, abs=0.1)


def test_a_chain_with_many_transitions_a_visit_is_shown_within_a_bounded_budget() -> None:
    """The posterior view of a run with 1000 MCMC transitions a step must end in seconds, not minutes."""
    A, b, x = problem(2, 1, 0.3, seed=5)
    est = EstimatorConfig(name="mle-mcem", mcmc_steps=1000)
    a = point_posterior(linear_decoder(A, b, 0.3), x, est, seed=1).approximation
    assert isinstance(a, ChainStates)
    assert a.transitions + a.burn_in <= max(CHAIN_TRANSITIONS, 6 * est.mcmc_steps) and len(a.states) == 5


def test_a_large_k_iwae_bound_is_averaged_over_as_many_sets_as_the_draw_cap_holds() -> None:
    """K = 100 000 (allowed) times 256 sets would be 25.6 million decoder rows: the sets shrink to the cap."""
    A, b, x = problem(2, 1, 0.2, seed=9)
    log_px = gaussian_reference(A, b, 0.2, x)[0]
    dec, enc = linear_decoder(A, b, 0.2), exact_encoder(A, b, 0.2)
    for K, sets in ((16, IWAE_REPEATS), (IWAE_DRAWS // 2, 2), (2 * IWAE_DRAWS, 1)):
        a = point_posterior(dec, x, EstimatorConfig(name="iwae", samples=K), enc).approximation
        assert a.iwae_sets == sets and a.draws.shape == (K, 1)
        assert a.iwae_bound == pytest.approx(log_px, abs=1e-8)  # exact q: every set's bound is log p(x)


@pytest.mark.parametrize("name", ["mle-mcem", "mle-adaptive", "iwae"])
def test_the_posterior_stops_when_asked(name: str) -> None:
    """Quit during the posterior view's computation: `should_stop` is asked as it goes (between the chain's
    visits and the passes through the model), and True ends it with ScoringStopped, whatever the stage."""
    A, b, x = problem(2, 1, 0.3, seed=5)
    dec, enc = linear_decoder(A, b, 0.3), exact_encoder(A, b, 0.3)
    est = EstimatorConfig(name=name, samples=16)
    asked = []
    point_posterior(dec, x, est, enc, should_stop=lambda: asked.append(1) and False)
    assert len(asked) >= (30 if name == "mle-mcem" else 3)
    for stop_at in (1, len(asked) // 2, len(asked)):
        calls: list[int] = []

        def stop(calls: list[int] = calls, stop_at: int = stop_at) -> bool:
            calls.append(1)
            return len(calls) >= stop_at

        with pytest.raises(ScoringStopped):
            point_posterior(dec, x, est, enc, should_stop=stop)
        assert len(calls) == stop_at


def test_the_chain_in_parts_is_the_chain_in_one_visit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view runs a visit of many transitions in parts (to ask should_stop between them): the same states,
    acceptance and step size as one call of the training code a visit."""
    A, b, x = problem(2, 1, 0.3, seed=5)
    est = EstimatorConfig(name="mle-mcem", mcmc_steps=250)
    parts = point_posterior(linear_decoder(A, b, 0.3), x, est, seed=2).approximation
    monkeypatch.setattr(integral, "STOP_TRANSITIONS", 10**9)
    whole = point_posterior(linear_decoder(A, b, 0.3), x, est, seed=2).approximation
    np.testing.assert_allclose(parts.states, whole.states, rtol=0, atol=1e-12)
    assert parts.acceptance == pytest.approx(whole.acceptance, abs=1e-12)
    assert parts.step_size == pytest.approx(whole.step_size, rel=1e-12)
