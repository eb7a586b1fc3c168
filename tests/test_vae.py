"""The VAE and IWAE objectives: the bound ordering ELBO <= IWAE_K <= IWAE_K' <= log p(x), exactness at the
true posterior, reparameterised gradients against finite differences, DReG against the plain IWAE
gradient, recovery of the PPCA optimum on linear data, KL warm-up and closed-form sigma, the run folder
and metrics of a VAE run, and the CLI `compare` table.
"""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.estimators import build_estimator
from engine.estimators.vae import (
    ELBOVAE,
    IWAE,
    EncoderEstimator,
    draw_latents,
    elbo,
    gaussian_kl_to_prior,
    iwae_bound,
    log_weights,
)
from engine.evaluate import posterior_means
from engine.likelihood.quadrature import log_marginal_dense, uniform_grid
from engine.metrics import COMPARE_COLUMNS
from engine.networks import Decoder, Encoder
from engine.ppca import gaussian_loglik, ppca_mle
from engine.runs import fit, load_run, save_run
from engine.simulate import simulate
from engine.storage import save_dataset
from engine.trainer import FINISHED, train

F64 = torch.float64




# ------------------------------------------------------------------------------------------- helpers


def _randomise(module: torch.nn.Module, seed: int, gain: float = 1.0, bias: float = 0.3) -> None:
    """Deterministic weights N(0, gain^2 / fan_in), biases N(0, bias^2), from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.net.layers:
            w, b = layer.weight, layer.bias
            w.copy_(torch.randn(w.shape, generator=gen, dtype=F64) * gain / math.sqrt(w.shape[1]))
            b.copy_(torch.randn(b.shape, generator=gen, dtype=F64) * bias)


def _decoder(n: int, m: int, hidden: tuple[int, ...], sigma: float, seed: int, activation: str = "tanh",
             sigma_mode: str = "shared") -> Decoder:
    dec = Decoder(n, DecoderConfig(m=m, hidden=hidden, activation=activation, sigma_mode=sigma_mode),
                  sigma_init=sigma, sigma_min=0.0).double()
    dec.set_sigma(torch.tensor(sigma, dtype=F64))
    _randomise(dec, seed, gain=2.0)
    return dec


def _sample(dec: Decoder, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(count, dec.m, generator=gen, dtype=F64)
        return dec.mean(z) + dec.sigma() * torch.randn(count, dec.n, generator=gen, dtype=F64)


def _dense_logp(dec: Decoder, x: torch.Tensor) -> torch.Tensor:
    """log p(x) by the dense trapezoidal rule (m = 1), checked converged to 1e-9 between two grids."""
    with torch.no_grad():
        coarse = log_marginal_dense(dec, x, *uniform_grid(dec.m, 4097, half_width=12.0))
        fine = log_marginal_dense(dec, x, *uniform_grid(dec.m, 16385, half_width=12.0))
    assert float((fine - coarse).abs().max()) < 1e-9
    return fine


def _gaussian_logp(x: torch.Tensor, b: torch.Tensor, A: torch.Tensor, sigma: float) -> torch.Tensor:
    cov = A @ A.T + sigma**2 * torch.eye(A.shape[0], dtype=F64)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def _exact_pair(A: torch.Tensor, b: torch.Tensor, sigma: float) -> tuple[Decoder, Encoder]:
    """Linear decoder g(z) = A z + b and the encoder that outputs its exact posterior.

    p(z | x) = N(M^-1 A^T (x - b), sigma^2 M^-1), M = A^T A + sigma^2 I: diagonal when A's columns are
    orthogonal, so a diagonal-Gaussian encoder with zero hidden layers represents it exactly.
    """
    n, m = A.shape
    M = A.T @ A + sigma**2 * torch.eye(m, dtype=F64)
    assert torch.allclose(M, torch.diag(torch.diagonal(M)), atol=1e-12), "A's columns must be orthogonal"
    dec = Decoder(n, DecoderConfig(m=m, hidden=()), sigma_init=sigma, sigma_min=0.0).double()
    dec.set_sigma(torch.tensor(sigma, dtype=F64))  # rho was built in float32
    enc = Encoder(n, m, (), "tanh").double()
    Minv = torch.linalg.inv(M)
    with torch.no_grad():
        dec.net.layers[0].weight.copy_(A)
        dec.net.layers[0].bias.copy_(b)
        W_mu = Minv @ A.T  # (m, n)
        enc.net.layers[0].weight.copy_(torch.cat([W_mu, torch.zeros(m, n, dtype=F64)]))
        log_s = 0.5 * torch.log(sigma**2 * torch.diagonal(Minv))
        enc.net.layers[0].bias.copy_(torch.cat([-W_mu @ b, log_s]))
    assert abs(float(dec.sigma().detach()) - sigma) < 1e-12
    return dec, enc


def _orthogonal_columns(n: int, m: int, scales: list[float], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, m, generator=gen, dtype=F64))
    return Q * torch.tensor(scales, dtype=F64)


def _estimator(dec: Decoder, name: str, seed: int, **kw) -> EncoderEstimator:
    cfg = EstimatorConfig(name=name, **kw)
    cfg.validate()
    est = build_estimator(cfg, dec, 100, torch.Generator().manual_seed(seed))
    assert isinstance(est, ELBOVAE if name == "vae" else IWAE) and est.name == name
    est.encoder.double()
    return est


def _flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params])


# --------------------------------------------------------------- 1. ELBO <= IWAE_K <= IWAE_K' <= log p(x)


@pytest.fixture(scope="module")
def fixed_pair() -> tuple[Decoder, Encoder, torch.Tensor]:
    """A nonlinear decoder (m = 1, n = 2, sigma = 0.25) and a deliberately inexact linear encoder.

    The encoder's mean is a least-squares fit of the true posterior mean (so q sits near the posterior)
    and its scale is about 1.2 (wider than the posterior, so the weights are bounded and IWAE converges).
    """
    dec = _decoder(2, 1, (16,), 0.25, seed=11)
    fit_x = _sample(dec, 2000, seed=12)
    pm = torch.as_tensor(posterior_means(dec, fit_x.numpy()), dtype=F64)  # (N, 1)
    design = torch.cat([fit_x, torch.ones(len(fit_x), 1, dtype=F64)], 1)
    coef = torch.linalg.lstsq(design, pm).solution  # (n + 1, 1)
    enc = Encoder(2, 1, (), "tanh").double()
    with torch.no_grad():
        enc.net.layers[0].weight.copy_(torch.stack([coef[:2, 0], torch.tensor([0.03, -0.02], dtype=F64)]))
        enc.net.layers[0].bias.copy_(torch.tensor([float(coef[2, 0]), 0.2], dtype=F64))
    x = _sample(dec, 12, seed=13)
    with torch.no_grad():
        log_s = enc(x)[1]
    assert float(log_s.min()) > 0.05  # q wider than the prior: bounded weights
    return dec, enc, x


def test_the_log_weights_match_an_independent_computation(fixed_pair):
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), rebuilt with torch.distributions from the
    same reparameterised draws (same generator seed)."""
    dec, enc, x = fixed_pair
    K = 7
    with torch.no_grad():
        lw = log_weights(dec, x, draw_latents(enc, x, K, torch.Generator().manual_seed(5)))
        mu, log_s = enc(x)
        eps = torch.randn(x.shape[0], K, 1, generator=torch.Generator().manual_seed(5), dtype=F64)
        z = mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps
        N = torch.distributions.Normal
        ref = (N(dec.mean(z), dec.sigma()).log_prob(x.unsqueeze(1)).sum(-1) + N(0.0, 1.0).log_prob(z).sum(-1)
               - N(mu.unsqueeze(1), log_s.exp().unsqueeze(1)).log_prob(z).sum(-1))
        kl = torch.distributions.kl_divergence(N(mu, log_s.exp()), N(0.0, 1.0)).sum(-1)
    assert lw.shape == (x.shape[0], K)
    torch.testing.assert_close(lw, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(gaussian_kl_to_prior(mu, log_s), kl, rtol=0, atol=1e-12)


def _replicates(fn, x: torch.Tensor, reps: int, seed: int, chunk: int) -> torch.Tensor:
    """fn(x_rep, gen) on x repeated `reps` times -> (reps, B) independent draws of a per-point estimate."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, reps, chunk):
            r = min(chunk, reps - start)
            out.append(fn(x.repeat(r, 1), gen).reshape(r, x.shape[0]))
    return torch.cat(out)


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    """Average over points of the per-point mean, and its Monte Carlo standard error (replicates iid)."""
    per_point_var = v.var(0, unbiased=True) / v.shape[0]  # (B,)
    return float(v.mean()), float(per_point_var.sum().sqrt() / v.shape[1])


def test_bounds_are_ordered_elbo_iwae_logp(fixed_pair):
    dec, enc, x = fixed_pair
    logp = float(_dense_logp(dec, x).mean())
    est = {"elbo": _mean_se(_replicates(lambda xr, g: elbo(dec, enc, xr, g), x, 4000, 1, 4000))}
    for K, reps in ((1, 4000), (5, 2000), (50, 400), (500, 100)):
        est[K] = _mean_se(_replicates(lambda xr, g, K=K: iwae_bound(dec, enc, xr, K, g), x, reps, 2 + K, 100))
    chain = ["elbo", 1, 5, 50, 500]
    for lo, hi in itertools.pairwise(chain):
        (a, sa), (b, sb) = est[lo], est[hi]
        assert a <= b + 4 * math.hypot(sa, sb), (lo, hi, est)
    top, s_top = est[500]
    assert top <= logp + 4 * s_top, (top, logp, s_top)
    # non-trivial: the encoder is far from exact, yet IWAE_K closes the gap as K grows (Var(w) / 2K)
    assert logp - est["elbo"][0] > 0.5
    assert est[50][0] - est[5][0] > 8 * math.hypot(est[50][1], est[5][1])
    assert logp - top < 0.05
    # IWAE_1 and the analytic-KL ELBO estimate the same quantity
    (e, se_e), (w1, se_w1) = est["elbo"], est[1]
    assert abs(e - w1) < 4 * math.hypot(se_e, se_w1)


def test_analytic_kl_elbo_equals_iwae1_in_expectation_paired(fixed_pair):
    """Same draws (same seed): ELBO - IWAE_1 = log q(z) - log p(z) - KL, whose mean is exactly 0."""
    dec, enc, x = fixed_pair
    xr = x.repeat(5000, 1)
    with torch.no_grad():
        e = elbo(dec, enc, xr, torch.Generator().manual_seed(3))
        w = iwae_bound(dec, enc, xr, 1, torch.Generator().manual_seed(3))
    d = (e - w).reshape(5000, -1)
    mean, se = _mean_se(d)
    assert abs(mean) < 4 * se and se < 0.02, (mean, se)
    # and with many draws in one call the ELBO's Monte Carlo average matches the replicated one
    with torch.no_grad():
        many = float(elbo(dec, enc, x, torch.Generator().manual_seed(4), draws=5000).mean())
    assert abs(many - float(e.mean())) < 4 * _mean_se(e.reshape(5000, -1))[1] * math.sqrt(2)


# ------------------------------------------------------------------ 2. exact posterior: every bound is tight


@pytest.mark.parametrize(("n", "m", "scales"), [(3, 1, [1.7]), (4, 2, [2.0, 0.6]), (5, 3, [1.5, 0.9, 0.3])])
def test_exact_posterior_makes_every_bound_equal_logp(n, m, scales):
    sigma = 0.4
    A = _orthogonal_columns(n, m, scales, seed=n)
    b = torch.linspace(-0.5, 0.8, n, dtype=F64)
    dec, enc = _exact_pair(A, b, sigma)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, m, generator=gen, dtype=F64)
    x = z @ A.T + b + sigma * torch.randn(64, n, generator=gen, dtype=F64)
    x = torch.cat([x, 4.0 * x])  # also points far in the tails
    truth = _gaussian_logp(x, b, A, sigma)
    with torch.no_grad():
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            for K in (1, 5, 50):
                lw = log_weights(dec, x, draw_latents(enc, x, K, g))  # every single weight equals p(x)
                torch.testing.assert_close(lw, truth.unsqueeze(1).expand_as(lw), rtol=0, atol=1e-8)
                torch.testing.assert_close(iwae_bound(dec, enc, x, K, g), truth, rtol=0, atol=1e-8)
    if m == 1:  # and the dense quadrature agrees with the closed form
        torch.testing.assert_close(_dense_logp(dec, x[:16]), truth[:16], rtol=0, atol=1e-8)
    # The analytic-KL ELBO estimator log p(x | z) - KL is not constant in z (only log w is), but its mean
    # E_q log p(x | z) - KL is log p(x) exactly: in closed form for linear g,
    # E_q ||x - A z - b||^2 = ||x - A mu - b||^2 + sum_j s_j^2 ||A_j||^2.
    with torch.no_grad():
        mu, log_s = enc(x)
        sq = (x - mu @ A.T - b).pow(2).sum(-1) + (log_s.exp().pow(2) * A.pow(2).sum(0)).sum(-1)
        exp_rec = -0.5 * sq / sigma**2 - n * math.log(sigma) - 0.5 * n * math.log(2 * math.pi)
        torch.testing.assert_close(exp_rec - gaussian_kl_to_prior(mu, log_s), truth, rtol=0, atol=1e-8)
        draws = elbo(dec, enc, x.repeat(4000, 1), torch.Generator().manual_seed(9)).reshape(4000, -1)
    dev = draws - truth  # (reps, B), mean zero for every point
    z_scores = dev.mean(0) / (dev.std(0) / math.sqrt(dev.shape[0]))
    assert float(z_scores.abs().max()) < 4.5, z_scores
    mean, se = _mean_se(dev)
    assert abs(mean) < 4 * se


@pytest.mark.parametrize("dreg", [False, True])
def test_exact_posterior_iwae_objective_value_and_zero_variance_dreg(dreg):
    """Objective.value is log p(x) for the exact q; the DReG encoder gradient then vanishes exactly
    (d log w / dz = 0 everywhere), while the plain IWAE encoder gradient is only zero in mean."""
    name = "iwae"
    sigma = 0.5
    A = _orthogonal_columns(4, 2, [1.4, 0.7], seed=9)
    b = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=F64)
    dec, enc = _exact_pair(A, b, sigma)
    est = _estimator(dec, name, seed=1, samples=8, dreg=dreg, encoder_hidden=())
    est.encoder.load_state_dict(enc.state_dict())
    x = _sample(dec, 40, seed=2)
    truth = float(_gaussian_logp(x, b, A, sigma).mean())
    obj = est.objective(x, torch.arange(40), step=1)
    assert abs(obj.value - truth) < 1e-8
    assert abs(float(obj.surrogate.detach()) - truth) < 1e-8
    obj.surrogate.backward()
    g_enc = _flat_grad(list(est.encoder.parameters()))
    if dreg:
        assert float(g_enc.abs().max()) < 1e-10
    else:
        assert float(g_enc.abs().max()) > 1e-4  # the score-function term: zero mean, not zero


# ----------------------------------------------------------- 3. reparameterised gradients vs finite differences


def _fd_check(params: list[torch.nn.Parameter], f, h: float = 1e-6) -> None:
    """Autograd gradient of the deterministic scalar f() against central differences, in float64."""
    for p in params:
        p.grad = None
    f().backward()
    auto = _flat_grad(params)
    fd = torch.zeros_like(auto)
    i = 0
    with torch.no_grad():
        for p in params:
            flat = p.view(-1)
            for j in range(flat.numel()):
                old = float(flat[j])
                flat[j] = old + h
                up = float(f())
                flat[j] = old - h
                down = float(f())
                flat[j] = old
                fd[i] = (up - down) / (2 * h)
                i += 1
    rel = float((auto - fd).norm() / fd.norm())
    assert rel < 1e-5, rel
    scale = float(fd.abs().max())
    torch.testing.assert_close(auto, fd, rtol=1e-4, atol=1e-6 * scale)


@pytest.fixture
def small_pair():
    dec = _decoder(2, 1, (6,), 0.3, seed=21)
    enc = Encoder(2, 1, (5,), "tanh").double()
    _randomise(enc, 22, gain=0.8)
    return dec, enc, _sample(dec, 6, seed=23)


def test_elbo_gradient_matches_finite_differences(small_pair):
    dec, enc, x = small_pair
    params = list(dec.parameters()) + list(enc.parameters())

    def f():  # fixed noise: the same seed every call, so the ELBO is a deterministic function of theta, phi
        return elbo(dec, enc, x, torch.Generator().manual_seed(7), draws=3).mean()

    _fd_check(params, f)


def test_iwae_gradient_matches_finite_differences(small_pair):
    dec, enc, x = small_pair
    params = list(dec.parameters()) + list(enc.parameters())
    _fd_check(params, lambda: iwae_bound(dec, enc, x, 5, torch.Generator().manual_seed(8)).mean())


@pytest.mark.parametrize("name", ["vae", "iwae"])
def test_estimator_surrogate_gradient_matches_finite_differences(small_pair, name):
    """The trained surrogate (beta = 1, no warm-up; plain IWAE) is the bound itself: same gradient."""
    dec, _, x = small_pair
    est = _estimator(dec, name, seed=0, samples=4, encoder_hidden=(5,))
    _randomise(est.encoder, 24, gain=0.8)
    params = est.trainable_parameters()
    assert any(p is dec.rho for p in params)  # learned sigma is trained

    def f():
        est.gen.manual_seed(9)
        return est.objective(x, torch.arange(len(x)), step=1).surrogate

    _fd_check(params, f)


# --------------------------------------------------------------------- 4. DReG vs the plain IWAE gradient


def _gradients(est: EncoderEstimator, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    est.gen.manual_seed(seed)
    est.zero_grad(set_to_none=True)
    obj = est.objective(x, torch.arange(len(x)), step=1)
    obj.surrogate.backward()
    return _flat_grad(list(est.decoder.parameters())), _flat_grad(list(est.encoder.parameters())), obj.value


@pytest.mark.parametrize("K", [5, 50])
def test_dreg_and_plain_iwae_gradients_agree_in_expectation(K):
    dec = _decoder(2, 1, (8,), 0.3, seed=31)
    std = _estimator(dec, "iwae", seed=0, samples=K, dreg=False, encoder_hidden=(6,))
    dreg = _estimator(dec, "iwae", seed=0, samples=K, dreg=True, encoder_hidden=(6,))
    _randomise(std.encoder, 32, gain=0.8)
    dreg.encoder.load_state_dict(std.encoder.state_dict())
    x = _sample(dec, 8, seed=33)
    reps = 300
    g_std, g_dreg = [], []
    for r in range(reps):
        dec_s, enc_s, val_s = _gradients(std, x, seed=1000 + r)
        dec_d, enc_d, val_d = _gradients(dreg, x, seed=1000 + r)
        # same draws: the same IWAE bound, and the same decoder gradient draw by draw
        with torch.no_grad():
            bound = float(iwae_bound(dec, std.encoder, x, K, torch.Generator().manual_seed(1000 + r)).mean())
        assert abs(val_s - bound) < 1e-12 and abs(val_d - bound) < 1e-12
        torch.testing.assert_close(dec_d, dec_s, rtol=1e-10, atol=1e-12)
        g_std.append(enc_s)
        g_dreg.append(enc_d)
    gs, gd = torch.stack(g_std), torch.stack(g_dreg)
    mean_s, mean_d = gs.mean(0), gd.mean(0)
    d = gd - gs  # paired by the shared draws
    se = d.std(0) / math.sqrt(reps)
    assert bool(((d.mean(0)).abs() <= 4 * se + 1e-12).all()), ((d.mean(0)).abs() / se).max()
    # non-trivial: the expected encoder gradient is clearly nonzero, so equal means is a real statement
    se_d = gd.std(0) / math.sqrt(reps)
    assert float((mean_d.abs() / se_d).max()) > 6
    if K == 5:  # the plain estimate is still informative at small K: the two means point the same way
        cos = float(mean_s @ mean_d / (mean_s.norm() * mean_d.norm()))
        assert cos > 0.95, cos
    else:  # Tucker et al.: DReG removes the score term whose variance grows with K
        ratio = float(gd.var(0).sum() / gs.var(0).sum())
        assert ratio < 0.7, ratio


# ------------------------------------------------------------------ 5. linear data: the PPCA optimum


@pytest.mark.parametrize("vae_sigma", ["learned", "closed_form"])
def test_vae_on_linear_data_reaches_the_ppca_optimum(vae_sigma):
    n, m = 5, 2
    data = simulate(SimulationConfig(mixing="linear", n=n, m=m, sigma=0.3, samples=3000, seed=4))
    cfg = RunConfig(simulation=SimulationConfig(mixing="linear", n=n, m=m),
                    decoder=DecoderConfig(m=m, hidden=()),
                    estimator=EstimatorConfig(name="vae", encoder_hidden=(), vae_sigma=vae_sigma),
                    training=TrainingConfig(steps=2000, batch_size=512, lr=2e-2, eval_every=10**6,
                                            device="cpu", seed=0, val_fraction=0.25))
    res = train(cfg, data)
    assert res.status in FINISHED
    x_tr, x_te = data.x[res.train_idx], data.x[res.heldout_idx]
    pp = ppca_mle(x_tr, m)
    layer = res.decoder.net.layers[0]
    W, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    s = float(res.decoder.sigma().detach())
    cov = W @ W.T + s**2 * np.eye(n)
    held = gaussian_loglik(x_te, b, cov).mean()
    held_pp = gaussian_loglik(x_te, pp.mean, pp.covariance()).mean()
    train_ll = gaussian_loglik(x_tr, b, cov).mean()
    assert train_ll <= pp.loglik_per_point + 1e-6  # PPCA is the maximum on the training split
    assert pp.loglik_per_point - train_ll < 0.05
    assert abs(held - held_pp) < 0.05
    assert abs(s / math.sqrt(pp.sigma2) - 1) < 0.05
    # the learned linear encoder has found (approximately) the exact posterior: the ELBO is nearly tight
    dec64, enc64 = res.decoder.double(), res.encoder.double()
    xt = torch.as_tensor(x_te, dtype=F64)
    with torch.no_grad():
        gap = float((torch.as_tensor(gaussian_loglik(x_te, b, cov))
                     - elbo(dec64, enc64, xt, torch.Generator().manual_seed(0), draws=64)).mean())
    assert -0.01 < gap < 0.05, gap


# ------------------------------------------- 5b. the estimators' values are the module-level bounds


@pytest.mark.parametrize("vae_sigma", ["learned", "closed_form"])
@pytest.mark.parametrize(("name", "K", "dreg"), [("vae", 1, False), ("iwae", 6, False), ("iwae", 6, True)])
def test_estimator_value_is_the_module_level_bound_on_the_same_draws(vae_sigma, name, K, dreg):
    """ELBOVAE's value (beta = 1) is elbo(), IWAE's (plain or DReG) is iwae_bound(), on the same draws: the
    estimator's generator and a fresh one with the same seed give the same eps and end in the same state.
    With the closed-form sigma the bound is taken at the sigma the step has just set."""
    dec = _decoder(3, 2, (5,), 0.3, seed=61)
    kw = {"dreg": dreg} if name == "iwae" else {}
    est = _estimator(dec, name, seed=0, samples=K, encoder_hidden=(4,), vae_sigma=vae_sigma, **kw)
    _randomise(est.encoder, 62, gain=0.8)
    x = _sample(dec, 24, seed=63)
    sigma_before = dec.sigma().detach().clone()
    est.gen.manual_seed(17)
    obj = est.objective(x, torch.arange(24), step=1)
    ref_gen = torch.Generator().manual_seed(17)
    with torch.no_grad():
        ref = elbo(dec, est.encoder, x, ref_gen) if name == "vae" else iwae_bound(dec, est.encoder, x, K, ref_gen)
    assert ref.shape == (24,)
    assert obj.value == pytest.approx(float(ref.mean()), rel=0, abs=1e-12)
    assert float(obj.surrogate.detach()) == pytest.approx(float(ref.mean()), rel=0, abs=1e-12)
    assert torch.equal(est.gen.get_state(), ref_gen.get_state())  # the same number of draws
    moved = not torch.equal(dec.sigma(), sigma_before)
    assert moved == (vae_sigma == "closed_form")
    if name == "vae":
        assert obj.logs["beta"] == 1.0
        with torch.no_grad():
            mu, log_s = est.encoder(x)
        assert obj.logs["kl"] == pytest.approx(float(gaussian_kl_to_prior(mu, log_s).mean()), rel=0, abs=1e-12)
    else:
        assert est.dreg is dreg and not hasattr(_estimator(dec, "vae", seed=0), "dreg")


# ------------------------------------------------------------- 6. KL warm-up and closed-form sigma


def test_kl_warmup_ramps_linearly():
    dec = _decoder(2, 1, (4,), 0.3, seed=41)
    est = _estimator(dec, "vae", seed=0, beta=0.5, warmup_steps=100)
    for step, want in ((0, 0.0), (1, 0.005), (25, 0.125), (50, 0.25), (99, 0.495), (100, 0.5), (250, 0.5)):
        assert est.beta_at(step) == pytest.approx(want, abs=1e-15)
    assert _estimator(dec, "vae", seed=0, beta=0.7, warmup_steps=0).beta_at(0) == 0.7
    # the surrogate uses beta_t; the reported value is the full ELBO (beta = 1)
    x = _sample(dec, 32, seed=42)
    for step in (1, 40, 100, 500):
        est.gen.manual_seed(3)
        obj = est.objective(x, torch.arange(32), step)
        assert obj.logs["beta"] == pytest.approx(est.beta_at(step))
        with torch.no_grad():
            ref = float(elbo(dec, est.encoder, x, torch.Generator().manual_seed(3)).mean())
        assert obj.value == pytest.approx(ref, abs=1e-12)
        want = obj.value + (1 - est.beta_at(step)) * obj.logs["kl"]
        assert float(obj.surrogate.detach()) == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("sigma_mode", ["shared", "per_dim"])
@pytest.mark.parametrize(("name", "K"), [("vae", 1), ("iwae", 6)])
def test_closed_form_sigma_is_the_rms_residual_of_the_batch(sigma_mode, name, K):
    dec = _decoder(3, 1, (4,), 0.3, seed=51, sigma_mode=sigma_mode)
    dec.sigma_min = 0.01
    est = _estimator(dec, name, seed=0, samples=K, vae_sigma="closed_form")
    assert not dec.rho.requires_grad and all(p is not dec.rho for p in est.trainable_parameters())
    x = 2.0 * _sample(dec, 64, seed=52)  # far from the model: sigma has to move a long way
    est.gen.manual_seed(5)
    est.objective(x, torch.arange(64), step=1)
    with torch.no_grad():
        mu, log_s = est.encoder(x)
        eps = torch.randn(64, K, 1, generator=torch.Generator().manual_seed(5), dtype=F64)
        sq = (x.unsqueeze(1) - dec.mean(mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps)).pow(2)
    want = sq.mean((0, 1)).sqrt() if sigma_mode == "per_dim" else sq.mean().sqrt()
    torch.testing.assert_close(dec.sigma(), want, rtol=1e-10, atol=0)


# ------------------------------------------------------ 7. run folder and metrics of a VAE / IWAE run


@pytest.fixture(scope="module")
def poly_data():
    return simulate(SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.1, samples=600, seed=5))


@pytest.mark.parametrize(("name", "K"), [("vae", 64), ("iwae", 8)])
def test_fit_vae_writes_encoder_and_bound_metrics(tmp_path, poly_data, name, K):
    cfg = RunConfig(simulation=SimulationConfig(mixing="polynomial", n=2, m=1),
                    decoder=DecoderConfig(m=1, hidden=(16,)),
                    estimator=EstimatorConfig(name=name, samples=K, encoder_hidden=(16,)),
                    training=TrainingConfig(steps=60, batch_size=128, eval_every=30, device="cpu", seed=1))
    res = fit(cfg, poly_data)
    assert res.encoder is not None and res.status in FINISHED
    met = res.metrics
    assert met["iwae_k"] == K
    e, w = met["heldout_elbo"], met[f"heldout_iwae_{K}"]
    ll, se = met["heldout_loglik"], met["heldout_loglik_se"]
    assert all(math.isfinite(v) for v in (e, w, ll, se))
    assert e <= w <= ll + 3 * se, (e, w, ll, se)
    run = save_run(res, tmp_path / "run")
    for f in ("run.json", "decoder.safetensors", "decoder.json", "encoder.safetensors", "encoder.json",
              "metrics.json", "history.csv"):
        assert (run / f).is_file(), f
    saved = load_run(run)
    assert saved.encoder is not None
    x = torch.as_tensor(poly_data.x[:50], dtype=torch.float32)
    with torch.no_grad():
        for a, b in zip(saved.encoder(x), res.encoder(x), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(saved.decoder.mean(x[:, :1]), res.decoder.mean(x[:, :1]))
        assert torch.equal(saved.decoder.sigma(), res.decoder.sigma())
    assert saved.metrics["heldout_elbo"] == pytest.approx(e, rel=1e-12)
    assert saved.metrics[f"heldout_iwae_{K}"] == pytest.approx(w, rel=1e-12)


# ---------------------------------------------------------------------------------- 8. CLI compare


def test_cli_compare_table(tmp_path, poly_data, capsys):
    data_file = tmp_path / "data.npz"
    save_dataset(data_file, poly_data)
    out = tmp_path / "cmp"
    names = ["mle-adaptive", "vae", "iwae"]
    rc = cli_main(["compare", "--data", str(data_file), "--estimators", ",".join(names), "--steps", "50",
                   "--hidden", "16", "--quiet", "--out", str(out)])
    assert rc == 0
    with (out / "compare.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    doc = json.loads((out / "compare.json").read_text())
    assert [r["estimator"] for r in rows] == names
    assert [r["estimator"] for r in doc["rows"]] == names
    need = ["estimator", "heldout_loglik", "heldout_loglik_se", "gap_to_truth", "sigma", "procrustes_r2", "mcc",
            "wall_time", "steps", "elbo_gap", "iwae_gap"]
    assert set(need) <= set(COMPARE_COLUMNS) and set(need) <= set(rows[0])
    for r, j in zip(rows, doc["rows"], strict=True):
        for c in need[1:9]:
            assert r[c] != "" and j[c] is not None, (r["estimator"], c)
            assert float(r[c]) == pytest.approx(float(j[c]), rel=1e-12)
        assert int(j["steps"]) == 50
        assert j["gap_to_truth"] == pytest.approx(doc["true_heldout_loglik"] - j["heldout_loglik"], abs=1e-9)
        is_vae = j["estimator"] in ("vae", "iwae")
        assert (j["elbo_gap"] is not None) == is_vae and (j["iwae_gap"] is not None) == is_vae
        if is_vae:
            se = j["heldout_loglik_se"]
            assert j["elbo_gap"] >= -3 * se and j["iwae_gap"] >= -3 * se
            assert j["elbo_gap"] >= j["iwae_gap"]  # ELBO -> IWAE_K -> log p(x)
            met = json.loads((out / j["estimator"] / "metrics.json").read_text())
            k = met["iwae_k"]
            assert k == (64 if j["estimator"] == "vae" else EstimatorConfig().samples)
            assert j["elbo_gap"] == pytest.approx(met["heldout_loglik"] - met["heldout_elbo"], abs=1e-12)
            assert j["iwae_gap"] == pytest.approx(met["heldout_loglik"] - met[f"heldout_iwae_{k}"], abs=1e-12)
            assert float(r["iwae_gap"]) == pytest.approx(j["iwae_gap"], abs=1e-12)
            assert (out / j["estimator"] / "encoder.safetensors").is_file()
        else:
            assert not (out / j["estimator"] / "encoder.json").exists()
    assert "estimator" in capsys.readouterr().out
    # an unknown estimator name is a usage error (exit 2), before any training
    rc = cli_main(["compare", "--data", str(data_file), "--estimators", "vae,nope", "--steps", "5", "--quiet",
                   "--out", str(tmp_path / "bad")])
    assert rc == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "compare.csv").exists()
