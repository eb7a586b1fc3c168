"""Direct maximum likelihood: every check compares against an exact value (closed form, dense quadrature,
or a second run with the same seed), so that a wrong gradient, a biased estimator, or a broken training
loop fails here rather than looking like slow convergence.

The problems are small enough for CPU; intra-op threads are pinned to one for this module (tiny tensors
gain nothing from them, and on busy cores spinning threads make every step several times slower).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PickleTrap
from safetensors.torch import load_file

from engine import trainer
from engine.alignment import latent_grid, manifold
from engine.config import (
    ConfigError,
    DecoderConfig,
    EstimatorConfig,
    RunConfig,
    SimulationConfig,
    TrainingConfig,
)
from engine.estimators import build_estimator
from engine.estimators.base import Objective
from engine.evaluate import heldout_loglik
from engine.likelihood.quadrature import log_lik_matrix, log_marginal_dense, uniform_grid
from engine.networks import Decoder
from engine.ppca import gaussian_loglik, ppca_mle
from engine.progress import TrainingProgress
from engine.runs import RunFileError, fit, load_run, save_run
from engine.simulate import sample_model, simulate
from engine.trainer import FINISHED, train

NO_EVAL = 10_000_000  # eval_every: held-out monitoring only at the last step




# ------------------------------------------------------------------------------------------- helpers


def _config(sim: SimulationConfig, decoder: DecoderConfig, estimator: EstimatorConfig, **training) -> RunConfig:
    training = {"device": "cpu", "eval_every": NO_EVAL, **training}
    return RunConfig(simulation=sim, decoder=decoder, estimator=estimator, training=TrainingConfig(**training))


def _params(decoder: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in decoder.parameters()]


def _all_finite(decoder: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in decoder.parameters())


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(s, t) for s, t in zip(a, b, strict=True))


def _rows(history: list[dict[str, float]]) -> list[dict[str, float | None]]:
    """History rows without wall-clock times, NaN as None (so that == compares them)."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items() if k != "time"}
            for row in history]


def _evaluated(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [row for row in history if not math.isnan(row["heldout"])]


def _linear_gaussian_loglik(decoder: Decoder, x: np.ndarray) -> float:
    """Exact average log-likelihood of a linear decoder: X ~ N(b, W W^T + sigma^2 I)."""
    layer = decoder.net.layers[0]
    W = layer.weight.detach().double().numpy()
    b = layer.bias.detach().double().numpy()
    s = float(decoder.sigma().detach())
    return float(gaussian_loglik(x, b, W @ W.T + s**2 * np.eye(x.shape[1])).mean())


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# ------------------------------------------------------------- 1. linear data: the closed-form PPCA optimum


@pytest.mark.parametrize(("n", "m"), [(3, 1), (5, 2), (6, 3), (7, 4)])
def test_linear_decoder_reaches_ppca_maximum_likelihood(n, m):  # with the default rule for each m
    sim = SimulationConfig(mixing="linear", n=n, m=m, sigma=0.3, samples=2000, seed=3)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=m, hidden=(), sigma_mode="shared"),
                  EstimatorConfig(name="mle-adaptive"),
                  steps=200, batch_size=500, lr=0.05, schedule="cosine", val_fraction=0.02)
    result = train(cfg, data)
    assert result.status in FINISHED, result.message
    x = data.x[result.train_idx]
    ref = ppca_mle(x, m)
    # the closed form is what it claims: its covariance scores exactly its stated maximum
    assert gaussian_loglik(x, ref.mean, ref.covariance()).mean() == pytest.approx(ref.loglik_per_point, abs=1e-9)

    fitted = _linear_gaussian_loglik(result.decoder, x)
    assert fitted <= ref.loglik_per_point + 1e-6, "a linear-Gaussian model beat the PPCA global maximum"
    # adaptive Gauss-Hermite is exact for a linear decoder (Gaussian posteriors), whatever the rule
    dec = copy.deepcopy(result.decoder).double()
    est = build_estimator(EstimatorConfig(name="mle-adaptive"), dec, len(x), torch.Generator()).double()
    xt, idx = torch.as_tensor(x), torch.arange(len(x))
    est.objective(xt, idx, 1)  # first visit: a Laplace fit from the candidate grid; then the refined Gaussians
    assert est.objective(xt, idx, 2).value == pytest.approx(fitted, abs=1e-6)
    assert ref.loglik_per_point - fitted < 0.01, (fitted, ref.loglik_per_point)
    sigma = float(result.decoder.sigma().detach())
    assert sigma == pytest.approx(math.sqrt(ref.sigma2), rel=0.02)


@pytest.mark.parametrize(("n", "m"), [(3, 1), (5, 2)])
def test_importance_sampling_mle_reaches_ppca_maximum_likelihood(n, m):
    """mle-importance with its default proposal (the Laplace approximation, one Gauss-Newton step a visit from
    the stored mode): for linear g it is the exact posterior, so the fit reaches the closed-form optimum."""
    sim = SimulationConfig(mixing="linear", n=n, m=m, sigma=0.3, samples=2000, seed=3)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=m, hidden=(), sigma_mode="shared"), EstimatorConfig(name="mle-importance"),
                  steps=200, batch_size=500, lr=0.05, schedule="cosine", val_fraction=0.02)
    result = train(cfg, data)
    assert result.status in FINISHED, result.message
    x = data.x[result.train_idx]
    ref = ppca_mle(x, m)
    fitted = _linear_gaussian_loglik(result.decoder, x)
    assert fitted <= ref.loglik_per_point + 1e-6
    assert ref.loglik_per_point - fitted < 0.01, (fitted, ref.loglik_per_point)
    assert float(result.decoder.sigma().detach()) == pytest.approx(math.sqrt(ref.sigma2), rel=0.02)


# ------------------------------------------------------------------ 2. n = m = 1 cubic: reaches the truth


@pytest.mark.slow
def test_cubic_1d_heldout_loglik_reaches_truth():
    # seed 15: f(z) = -0.71 z + 0.34 z^2 - 0.18 z^3, monotone but far from Gaussian (checked below)
    sim = SimulationConfig(mixing="polynomial", n=1, m=1, degree=3, sigma=0.1, samples=2000, seed=15)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(32, 32), activation="tanh"),
                  EstimatorConfig(name="mle-adaptive", nodes=10),
                  steps=600, batch_size=500, lr=0.02, schedule="cosine", val_fraction=0.25, eval_every=100)
    result = fit(cfg, data)
    assert result.status in FINISHED, result.message
    met = result.metrics
    x_tr, x_ho = data.x[result.train_idx], data.x[result.heldout_idx]
    assert met["n_heldout"] == len(x_ho) == 500 and met["heldout_method"] == "quadrature"

    # the data are genuinely non-Gaussian: the best Gaussian is far below the truth
    gauss = gaussian_loglik(x_ho, x_tr.mean(0), np.cov(x_tr.T, bias=True).reshape(1, 1)).mean()
    assert met["true_heldout_loglik"] - gauss > 0.2

    # the evaluator's numbers are the exact integrals (fine trapezoidal grid, float64)
    u, lw = uniform_grid(1, 20001)
    with torch.no_grad():
        xt = torch.as_tensor(x_ho)
        exact_fit = float(log_marginal_dense(copy.deepcopy(result.decoder).double(), xt, u, lw).mean())
        exact_true = float(log_marginal_dense(data.truth, xt, u, lw).mean())
    assert met["heldout_loglik"] == pytest.approx(exact_fit, abs=1e-3)
    assert met["true_heldout_loglik"] == pytest.approx(exact_true, abs=1e-3)
    assert met["gap_to_truth"] == pytest.approx(met["true_heldout_loglik"] - met["heldout_loglik"], abs=1e-12)
    # the monitor during training (quick evaluator, on a fixed subsample) agrees at the last step with the
    # one evaluator on the same points
    monitored = trainer.monitor_points(x_ho, cfg.training.seed)
    assert len(monitored) == min(trainer.MONITOR_POINTS, len(x_ho))
    exact_monitored = heldout_loglik(result.decoder, monitored).mean
    assert _evaluated(result.history)[-1]["heldout"] == pytest.approx(exact_monitored, abs=1e-3)

    assert abs(met["gap_to_truth"]) < 0.05, met


# --------------------------------------------- 3. estimator gradients against the dense-quadrature gradient

GRAD_PROBLEMS = {1: (3, 4001), 2: (4, 201)}  # m: (n, dense trapezoidal nodes per dimension)
GRAD_POINTS = 256


class GradProblem:
    """A fixed random float64 decoder (sigma = 0.3), points drawn from it, and the exact gradient."""

    def __init__(self, m: int):
        n, dense_nodes = GRAD_PROBLEMS[m]
        with torch.random.fork_rng():  # the default initialisation, seeded, without touching the global RNG
            torch.manual_seed(100 + m)
            dec = Decoder(n, DecoderConfig(m=m, hidden=(8,), activation="tanh"), sigma_init=0.3, sigma_min=0.0)
        dec = dec.double()
        with torch.no_grad():
            dec.net.layers[0].weight.mul_(1.5)  # visibly curved over the prior's range
        x, _ = sample_model(dec, GRAD_POINTS, seed=m)
        self.m, self.decoder, self.x = m, dec, torch.as_tensor(x)
        self.idx = torch.arange(GRAD_POINTS)
        u, lw = uniform_grid(m, dense_nodes)
        self.exact = self.grad(dec, lambda d: log_marginal_dense(d, self.x, u, lw).mean())
        u2, lw2 = uniform_grid(m, dense_nodes // 2 + 1)  # the dense rule has converged
        coarse = self.grad(dec, lambda d: log_marginal_dense(d, self.x, u2, lw2).mean())
        assert float((coarse - self.exact).norm()) < 1e-8 * float(self.exact.norm())

    @staticmethod
    def grad(decoder: Decoder, value) -> torch.Tensor:
        g = torch.autograd.grad(value(decoder), list(decoder.parameters()))
        return torch.cat([t.reshape(-1) for t in g])

    def estimator(self, **cfg):
        dec = copy.deepcopy(self.decoder)
        est = build_estimator(EstimatorConfig(**cfg), dec, GRAD_POINTS, torch.Generator().manual_seed(1))
        return dec, est.double()

    def surrogate_grad(self, dec: Decoder, est) -> torch.Tensor:
        return self.grad(dec, lambda d: est.objective(self.x, self.idx, 1).surrogate)

    def within_mc_error(self, draws: torch.Tensor, blocks: int) -> tuple[float, float, float]:
        """Block means of repeated gradient estimates, z_j = (mean_j - exact_j) / se_j:
        returns max_j |z_j|, mean_j z_j^2 (about 1 when unbiased) and the cosine of mean and exact."""
        b = draws.reshape(blocks, -1, draws.shape[-1]).mean(1)
        mean, se = b.mean(0), b.std(0) / math.sqrt(blocks)
        z = (mean - self.exact) / se
        return float(z.abs().max()), float(z.pow(2).mean()), _cos(mean, self.exact)


@pytest.fixture(scope="module", params=[1, 2], ids=["m1", "m2"])
def grad_problem(request) -> GradProblem:
    return GradProblem(request.param)


@pytest.mark.parametrize("name", ["mle-quadrature", "mle-adaptive"])
def test_quadrature_gradients_match_dense_quadrature(grad_problem, name):
    nodes = {"mle-quadrature": {1: 60, 2: 30}[grad_problem.m], "mle-adaptive": 10}[name]
    dec, est = grad_problem.estimator(name=name, nodes=nodes)
    for _ in range(3):  # as in training: the adaptive rule's Gaussians are refined over visits
        est.objective(grad_problem.x, grad_problem.idx, 1)
    g = grad_problem.surrogate_grad(dec, est)
    assert _cos(g, grad_problem.exact) > 0.99
    assert float((g - grad_problem.exact).norm()) < 0.05 * float(grad_problem.exact.norm())


@pytest.mark.parametrize("proposal", ["laplace", "prior"])
def test_importance_gradient_unbiased_within_monte_carlo_error(grad_problem, proposal):
    dec, est = grad_problem.estimator(name="mle-importance", samples=2000, proposal=proposal)
    draws = torch.stack([grad_problem.surrogate_grad(dec, est) for _ in range(20)])
    assert draws.std(0).max() > 0  # fresh draws each call
    zmax, z2, cos = grad_problem.within_mc_error(draws, blocks=20)
    assert zmax < 5 and z2 < 4, (zmax, z2)
    assert cos > 0.999, cos


def _mcem_draws(problem: GradProblem, sampler: str, freeze_after_burn_in: bool, repeats: int = 600) -> torch.Tensor:
    dec, est = problem.estimator(name="mle-mcem", sampler=sampler, mcmc_steps=5)
    with torch.no_grad():
        for _ in range(100):  # burn-in: 500 transitions with theta fixed
            est.objective(problem.x, problem.idx, 1)
    if freeze_after_burn_in:
        est.adapt_rate = 0.0
    return torch.stack([problem.surrogate_grad(dec, est) for _ in range(repeats)])


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_mcem_gradient_unbiased_after_burn_in(grad_problem, sampler):
    """Fisher's identity with chain states: unbiased once the chains sample p(z | x).

    Catches a kernel that does not leave p(z | x) invariant, e.g. a step size that keeps adapting at a
    constant rate after every transition (it then depends on the chain's own recent acceptances, hence on
    its state): the chains come out too narrow and the gradient is off by 5-15 standard errors, mostly in
    rho. test_mcem_kernels_are_exact_with_frozen_step_sizes isolates the transitions themselves.
    """
    draws = _mcem_draws(grad_problem, sampler, freeze_after_burn_in=False)
    zmax, z2, cos = grad_problem.within_mc_error(draws, blocks=30)
    assert cos > 0.95, cos
    assert zmax < 5 and z2 < 4, (f"MCEM gradient off the exact one by up to {zmax:.1f} Monte Carlo standard "
                                 f"errors (mean squared z {z2:.1f}, about 1 when unbiased)")


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["langevin", "hmc"])
def test_mcem_kernels_are_exact_with_frozen_step_sizes(sampler):
    """The MALA and HMC transitions themselves are right: with the step sizes frozen after burn-in the
    averaged gradient matches the exact one within Monte Carlo error."""
    problem = GradProblem(1)
    draws = _mcem_draws(problem, sampler, freeze_after_burn_in=True)
    zmax, z2, cos = problem.within_mc_error(draws, blocks=30)
    assert cos > 0.995, cos
    assert zmax < 5 and z2 < 4, (zmax, z2)


# ------------------------------------------------------------------------------ 4. reproducibility


@pytest.mark.parametrize("estimator", ["mle-adaptive", "mle-mcem"])
def test_same_seed_gives_the_same_run(estimator):
    sim = SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.2, samples=300, seed=4)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(16,)), EstimatorConfig(name=estimator, nodes=8),
                  steps=40, batch_size=64, lr=0.01, val_fraction=0.2, eval_every=20, seed=7)
    a = fit(cfg, data)
    b = fit(copy.deepcopy(cfg), data)
    assert a.status == b.status in FINISHED
    assert _rows(a.history) == _rows(b.history)
    assert [r["objective"] for r in a.history] == [r["objective"] for r in b.history]
    assert _same(_params(a.decoder), _params(b.decoder))
    assert a.metrics["heldout_loglik"] == b.metrics["heldout_loglik"]
    np.testing.assert_array_equal(a.train_idx, b.train_idx)

    other = copy.deepcopy(cfg)
    other.training.seed = 8
    c = train(other, data)
    assert [r["objective"] for r in c.history] != [r["objective"] for r in a.history]


# ------------------------------------------------------------------------------------ 5. stopping


def test_stopped_run_keeps_its_last_state_and_is_scored():
    k = 7
    sim = SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.2, samples=300, seed=5)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(16,)), EstimatorConfig(name="mle-adaptive", nodes=8),
                  steps=50, batch_size=64, lr=0.01, schedule="constant", val_fraction=0.2, eval_every=5)
    calls: list[int] = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > k

    result = fit(cfg, data, should_stop=should_stop)
    assert result.status == "stopped"
    assert result.steps_done == k and len(result.history) == k
    assert str(k) in result.message
    assert _all_finite(result.decoder)
    met = result.metrics
    assert math.isfinite(met["heldout_loglik"]) and math.isfinite(met["heldout_loglik_se"])
    assert met["status"] == "stopped" and met["steps"] == k
    # the kept state is exactly the state after k steps (constant learning rate: same path as steps=k)
    short = copy.deepcopy(cfg)
    short.training.steps = k
    ref = train(short, data)
    assert _same(_params(result.decoder), _params(ref.decoder))


# --------------------------------------------------------------------------- 6. the EM fixed point of sigma


@pytest.mark.parametrize(("name", "nodes"), [("mle-quadrature", 100), ("mle-adaptive", 20)])
def test_trained_sigma_satisfies_em_fixed_point(name, nodes):
    n = 2
    sim = SimulationConfig(mixing="polynomial", n=n, m=1, sigma=0.3, samples=500, seed=1)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(8,), sigma_mode="shared"), EstimatorConfig(name=name, nodes=nodes),
                  steps=800, batch_size=500, lr=0.03, schedule="cosine", val_fraction=0.1)
    result = train(cfg, data)
    assert result.status in FINISHED, result.message
    dec = copy.deepcopy(result.decoder).double()
    x = torch.as_tensor(data.x[result.train_idx])
    u, lw = uniform_grid(1, 4001)
    with torch.no_grad():
        g = dec.mean(u)  # (G, n)
        post = torch.softmax(log_lik_matrix(x, g, dec.sigma()) + lw, dim=-1)  # p(u_g | x_i), (N, G)
        sq = (x.unsqueeze(1) - g.unsqueeze(0)).pow(2).sum(-1)  # ||x_i - g(u_g)||^2
        sigma2_em = float((post * sq).sum(1).mean()) / n
    sigma2 = float(dec.sigma().detach()) ** 2
    assert sigma2 == pytest.approx(sigma2_em, rel=0.02), (sigma2, sigma2_em)


# ---------------------------------------------------------------------- 7. non-finite objective or gradient


def _poison(monkeypatch, bad_step: int, kind: str) -> dict[int, list[torch.Tensor]]:
    """Make the estimator's objective (or only its gradient) non-finite at `bad_step`; record the decoder's
    parameters at the start of every step."""
    seen: dict[int, list[torch.Tensor]] = {}
    real_build = trainer.build_estimator

    class _NanGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    def build(cfg, decoder, n_train, gen):
        est = real_build(cfg, decoder, n_train, gen)
        objective = est.objective

        def poisoned(x, idx, step):
            seen[step] = _params(decoder)
            obj = objective(x, idx, step)
            if step != bad_step:
                return obj
            if kind == "objective":
                return Objective(obj.surrogate * float("nan"), float("nan"), obj.logs)
            return Objective(_NanGrad.apply(obj.surrogate), obj.value, obj.logs)

        est.objective = poisoned
        return est

    monkeypatch.setattr(trainer, "build_estimator", build)
    return seen


@pytest.mark.parametrize("kind", ["objective", "gradient"])
def test_non_finite_step_fails_cleanly_with_last_good_parameters(monkeypatch, kind):
    bad = 6
    seen = _poison(monkeypatch, bad, kind)
    sim = SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.2, samples=300, seed=6)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(16,)), EstimatorConfig(name="mle-adaptive", nodes=8),
                  steps=30, batch_size=64, lr=0.01, val_fraction=0.2, eval_every=5)
    result = fit(cfg, data)
    assert result.status == "failed"
    msg = result.message.lower()
    assert f"step {bad}" in msg
    assert ("nan" if kind == "objective" else "non-finite") in msg
    assert sorted(seen) == list(range(1, bad + 1))  # the run went no further
    assert result.steps_done == bad - 1 and len(result.history) == bad - 1
    assert _all_finite(result.decoder)
    # rolled back to the last parameters whose objective and gradient were finite (the input of step bad-1);
    # neither the poisoned gradient nor anything after it reached the decoder
    assert _same(_params(result.decoder), seen[bad - 1])
    assert not _same(_params(result.decoder), seen[1])
    assert result.metrics["status"] == "failed" and math.isfinite(result.metrics["heldout_loglik"])


# ------------------------------------------------------------------------------- 8. saved run round trip


class _WithLinearPath(torch.nn.Module):
    def __init__(self, layers: torch.nn.Sequential, skip: torch.Tensor | None):
        super().__init__()
        self.layers, self.skip = layers, skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z) + (0 if self.skip is None else z @ self.skip.T)


def _rebuild_from_formats_doc(run_dir: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """The plain-PyTorch recipe of docs/formats.md, using only decoder.json and decoder.safetensors."""
    desc = json.loads((run_dir / "decoder.json").read_text())
    w = load_file(str(run_dir / "decoder.safetensors"))
    act = {"tanh": torch.nn.Tanh(), "relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(0.2),
           "elu": torch.nn.ELU(), "softplus": torch.nn.Softplus(), "sigmoid": torch.nn.Sigmoid()}[desc["activation"]]
    widths = [desc["m"], *desc["hidden"], desc["n"]]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        lin = torch.nn.Linear(a, b)
        lin.weight.data, lin.bias.data = w[f"net.layers.{i}.weight"], w[f"net.layers.{i}.bias"]
        layers += [lin, act] if i < len(widths) - 2 else [lin]
    sigma = desc["sigma_min"] + torch.nn.functional.softplus(w["rho"])
    skip = w[f"{desc['linear_path']}"] if desc["linear_path"] else None  # g(z) = layers(z) + z skip^T
    return _WithLinearPath(torch.nn.Sequential(*layers), skip), sigma


@pytest.mark.parametrize(("activation", "sigma_mode"), [("leaky_relu", "per_dim"), ("tanh", "shared")])
def test_saved_run_round_trip(tmp_path, activation, sigma_mode):
    sim = SimulationConfig(mixing="polynomial", n=3, m=1, sigma=0.2, samples=200, seed=8)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(8, 6), activation=activation, sigma_mode=sigma_mode),
                  EstimatorConfig(name="mle-adaptive", nodes=8),
                  steps=30, batch_size=64, lr=0.01, val_fraction=0.2, eval_every=10)
    result = fit(cfg, data)
    run_dir = save_run(result, tmp_path / "run")
    for name in ("run.json", "decoder.safetensors", "decoder.json", "metrics.json", "history.csv"):
        assert (run_dir / name).is_file(), name

    saved = load_run(run_dir)
    assert saved.config.to_dict() == result.config.to_dict()
    z = torch.randn(256, 1, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        ref = result.decoder.mean(z)
        assert torch.equal(saved.decoder.mean(z), ref)
        assert torch.equal(saved.decoder.sigma(), result.decoder.sigma())
    assert saved.decoder.sigma_min == result.decoder.sigma_min

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("heldout_loglik", "heldout_loglik_se", "sigma", "true_heldout_loglik", "gap_to_truth"):
        assert key in metrics, key
        assert metrics[key] == pytest.approx(result.metrics[key], rel=1e-12), key
    assert saved.metrics == metrics

    # decoder.json + safetensors alone rebuild the decoder in plain PyTorch (docs/formats.md)
    net, sigma = _rebuild_from_formats_doc(run_dir)
    with torch.no_grad():
        torch.testing.assert_close(net(z), ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(sigma.reshape(-1), result.decoder.sigma().detach().reshape(-1))
    desc = json.loads((run_dir / "decoder.json").read_text())
    np.testing.assert_allclose(desc["sigma"], result.decoder.sigma().detach().reshape(-1).numpy(), rtol=1e-7)


def test_pickle_files_are_refused_never_unpickled(tmp_path, unpickled):
    for name in ("run.pt", "decoder.pkl", "model.ckpt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(PickleTrap()))
        with pytest.raises(RunFileError) as info:
            load_run(path)
        assert name in str(info.value)
    with pytest.raises(RunFileError):
        load_run(tmp_path / "missing.pth")
    assert unpickled == []


# ------------------------------------------------------------------------- 9. the sigma floor, and no floor


@pytest.mark.slow
def test_sigma_floor_holds_and_is_reported():
    """Tiny data and an ample decoder: the likelihood pushes sigma down onto the floor sigma_min."""
    floor = 0.1
    sim = SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.02, samples=15, seed=1)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(32, 32), sigma_min=floor), EstimatorConfig(name="mle-adaptive"),
                  steps=1200, batch_size=15, lr=0.02, schedule="constant", val_fraction=0.2, eval_every=200,
                  patience=0)
    result = fit(cfg, data)
    assert result.status in FINISHED, result.message
    assert result.decoder.sigma_min == floor
    sigmas = [row["sigma"] for row in result.history]
    assert min(sigmas) >= floor * (1 - 1e-6)
    assert float(result.decoder.sigma().detach()) >= floor
    met = result.metrics
    assert met["sigma_min"] == floor
    assert met["sigma_at_floor"] is True
    assert any("floor" in w for w in met["warnings"]), met["warnings"]


@pytest.mark.slow
def test_without_a_floor_the_likelihood_degenerates():
    """Mattei & Frellsen: with sigma_min = 0, a big decoder on ~20 points drives sigma below the true noise;
    the training objective keeps climbing while the held-out log-likelihood collapses."""
    sim = SimulationConfig(mixing="polynomial", n=2, m=1, sigma=0.1, samples=30, seed=1)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(128, 128), sigma_min=0.0, sigma_init=0.3),
                  EstimatorConfig(name="mle-importance", samples=64),
                  steps=800, batch_size=30, lr=3e-3, schedule="constant", val_fraction=1 / 3, eval_every=100,
                  patience=0)
    result = train(cfg, data)
    assert result.status in FINISHED, result.message
    assert len(result.train_idx) == 20 and len(result.heldout_idx) == 10
    h = result.history
    early_obj = np.mean([row["objective"] for row in h[50:100]])
    late_obj = np.mean([row["objective"] for row in h[-50:]])
    evals = _evaluated(h)
    assert late_obj > early_obj + 0.5, (early_obj, late_obj)
    assert evals[-1]["heldout"] < evals[0]["heldout"] - 3.0, [row["heldout"] for row in evals]
    assert float(result.decoder.sigma().detach()) < 0.6 * sim.sigma
    assert not result.decoder.at_floor()


# --------------------------------------------------------------------------------- 10. config validation


def test_tensor_grid_quadrature_refused_above_three_latents():
    cfg = RunConfig(decoder=DecoderConfig(m=4), estimator=EstimatorConfig(name="mle-quadrature", nodes=2))
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field == "estimator.name"
    assert "m <= 3" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"decoder": {"m": 4}, "estimator": {"name": "mle-quadrature", "nodes": 2}})
    assert info.value.field == "estimator.name"
    sim = SimulationConfig(mixing="linear", n=5, m=4, samples=50)
    with pytest.raises(ConfigError):
        train(RunConfig(simulation=sim, decoder=DecoderConfig(m=4), estimator=EstimatorConfig(name="mle-quadrature")),
              simulate(sim))
    # m = 3 is allowed; too many grid points is refused on the nodes
    RunConfig(decoder=DecoderConfig(m=3), estimator=EstimatorConfig(name="mle-quadrature", nodes=20)).validate()
    with pytest.raises(ConfigError) as info:
        RunConfig(decoder=DecoderConfig(m=3), estimator=EstimatorConfig(name="mle-quadrature", nodes=30)).validate()
    assert info.value.field == "estimator.nodes"
    with pytest.raises(ConfigError) as info:
        RunConfig(decoder=DecoderConfig(m=4), estimator=EstimatorConfig(name="mle-adaptive", nodes=20)).validate()
    assert info.value.field == "estimator.nodes"
    for name in ("mle-adaptive", "mle-importance", "mle-mcem"):
        nodes = 5 if name == "mle-adaptive" else 20
        RunConfig(decoder=DecoderConfig(m=4), estimator=EstimatorConfig(name=name, nodes=nodes)).validate()


# ------------------------------------------------------------------------ progress, schedule, sigma record


def test_progress_carries_every_history_row_once_at_a_bounded_rate_with_snapshots_first_and_last():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=400, seed=3)
    data = simulate(sim)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(8,)), EstimatorConfig(name="mle-quadrature", nodes=8),
                  steps=300, batch_size=32, snapshot_every=1)
    infos: list[TrainingProgress] = []
    t0 = time.perf_counter()
    result = train(cfg, data, on_progress=infos.append)
    elapsed = time.perf_counter() - t0
    rows = [row["step"] for info in infos for row in info.history_rows]
    assert rows == list(range(1, 301)) == [r["step"] for r in result.history]
    assert len(infos) <= trainer.MAX_PROGRESS_RATE * elapsed + 2 < 300  # not one per step
    snaps = [info for info in infos if info.snapshot is not None]
    assert snaps[0] is infos[0] and snaps[-1] is infos[-1] and infos[0].setup is not None
    assert all(info.setup is None for info in infos[1:])
    assert len(snaps) <= trainer.SNAPSHOT_RATE * elapsed + 2
    view = snaps[-1].snapshot.manifold
    np.testing.assert_allclose(view.values, manifold(result.decoder, latent_grid(1)), rtol=1e-6)
    assert view.latent_map is not None  # simulated data: its true latents are known
    np.testing.assert_allclose(view.aligned_values, manifold(result.decoder, view.latent_map.to_model(view.grid)),
                               rtol=1e-6)
    assert snaps[-1].snapshot.latents.shape == (min(trainer.DISPLAY_POINTS, len(result.train_idx)), 1)


def test_history_records_the_learning_rate_of_each_step_and_sigma():
    sim = SimulationConfig(mixing="linear", n=2, m=1, sigma=0.3, samples=200, seed=4)
    cfg = _config(sim, DecoderConfig(m=1, hidden=(), sigma_mode="per_dim"),
                  EstimatorConfig(name="mle-quadrature", nodes=8), steps=40, batch_size=32, lr=0.01,
                  schedule="cosine", patience=0)
    result = train(cfg, simulate(sim))
    lrs = [row["lr"] for row in result.history]
    assert lrs == pytest.approx([0.01 * trainer.cosine_factor((s - 1) / 40) for s in range(1, 41)])
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] < 0.1 * 0.01 + 0.01 * 0.05
    assert result.history[-1]["sigma"] == pytest.approx(float(result.decoder.sigma().detach().mean()), rel=1e-6)


@pytest.mark.parametrize("rho", [-40.0, -3.0, 0.0, 2.5, 60.0])
def test_sigma_mean_on_the_host_equals_the_tensor_formula(rho):
    dec = Decoder(3, DecoderConfig(m=1, hidden=(4,), sigma_mode="per_dim"), 0.5, 0.01)
    with torch.no_grad():
        dec.rho.copy_(torch.tensor([rho, rho / 2, -rho], dtype=torch.float32))
    assert dec.sigma_mean() == pytest.approx(float(dec.sigma().detach().double().mean()), rel=1e-6, abs=1e-9)


def test_grid_log_likelihoods_keep_float32_precision_for_data_far_from_zero():
    """log N(x_b; mean_g, sigma^2 I) for all pairs by one matrix product: expanded about the origin, data near
    1000 with sigma 0.1 cancelled squares of 10^8 and lost tens of nats in float32; about the grid's centre
    it agrees with the float64 distances."""
    gen = torch.Generator().manual_seed(0)
    x = 1000 + torch.randn(8, 3, generator=gen)
    mean = 1000 + torch.randn(50, 3, generator=gen)
    got = log_lik_matrix(x, mean, torch.tensor(0.1))
    d2 = ((x.double()[:, None] - mean.double()[None]) / 0.1).pow(2).sum(-1)
    exact = -0.5 * d2 - 3 * math.log(0.1) - 1.5 * math.log(2 * math.pi)
    assert float((got.double() - exact).abs().max()) < 1e-2
