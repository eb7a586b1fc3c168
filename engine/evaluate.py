"""The one evaluator: held-out average log-likelihood (nats per point) of any model, true or fitted.

    (1/N) sum_i log p(x_i),  with standard error sd_i(log p(x_i)) / sqrt(N).

m <= 2: dense quadrature (trapezoidal rule on [-10, 10]^m, which resolves narrow posteriors that a
Gauss-Hermite grid of the same size misses; docs/math.md), nodes doubled until the per-point values
move less than `tol` on average. m > 2 (or when the quadrature has not converged at its node cap):
importance sampling with K >= 1000 draws from a per-point Laplace proposal mixed defensively with the
prior, reported with its effective sample size and Pareto k-hat.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .latents import mean_corr_coef, procrustes_r2
from .likelihood.diagnostics import KHAT_WARN, effective_sample_size, pareto_khat
from .likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal, log_mean_exp, log_weights
from .likelihood.laplace import laplace
from .likelihood.quadrature import log_marginal_dense, posterior_mean_dense, uniform_grid
from .model import LatentGaussianModel, log_joint

QUADRATURE_START = {1: 256, 2: 64, 3: 32}
QUADRATURE_CAP = {1: 65536, 2: 512, 3: 64}
MIN_IS_SAMPLES = 1000


@dataclass
class LoglikEstimate:
    """Average log-likelihood in nats per point, its standard error, and how it was obtained."""

    mean: float
    se: float
    per_point: np.ndarray
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"loglik": self.mean, "se": self.se, "n_points": int(self.per_point.size),
                "method": self.method, **self.details, "warnings": self.warnings}


def as_float64(model: LatentGaussianModel) -> LatentGaussianModel:
    """A float64 copy of a fitted network (true models already compute in the input's dtype)."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model).double().eval()
    return model


def _device_of(model: LatentGaussianModel) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _summary(per_point: np.ndarray) -> tuple[float, float]:
    N = per_point.size
    se = float(per_point.std(ddof=1) / math.sqrt(N)) if N > 1 else float("nan")
    return float(per_point.mean()), se


@torch.no_grad()
def dense_quadrature(model: LatentGaussianModel, x: torch.Tensor, tol: float = 1e-4,
                     start: int | None = None, cap: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-point log p(x) by the dense trapezoidal rule, nodes per dimension doubled until
    mean_i |log p_k(x_i) - log p_{k-1}(x_i)| < tol. Returns the values and {nodes, converged, change}."""
    m = model.m
    nodes = start or QUADRATURE_START[m]
    cap = cap or QUADRATURE_CAP[m]
    prev = None
    change = float("inf")
    while True:
        u, lw = uniform_grid(m, nodes, device=x.device)
        cur = log_marginal_dense(model, x, u, lw).cpu().numpy()
        if prev is not None:
            change = float(np.mean(np.abs(cur - prev)))
            if change < tol:
                return cur, {"nodes": nodes, "grid_points": int(u.shape[0]), "converged": True,
                             "last_change": change}
        if nodes * 2 > cap:
            return cur, {"nodes": nodes, "grid_points": int(u.shape[0]), "converged": False,
                         "last_change": change}
        prev, nodes = cur, nodes * 2


@torch.no_grad()
def laplace_proposal(model: LatentGaussianModel, x: torch.Tensor, seed: int = 0,
                     candidates: int = 256, iters: int = 20) -> GaussianProposal:
    """Defensive Laplace proposal per point; Gauss-Newton started from the best of `candidates` prior
    draws (a global search, so that the highest posterior mode is the one found)."""
    gen = torch.Generator(device=x.device).manual_seed(seed + 7919)
    cand = torch.randn(candidates, model.m, generator=gen, dtype=x.dtype, device=x.device)
    cand = torch.cat([torch.zeros(1, model.m, dtype=x.dtype, device=x.device), cand])
    mode, chol = laplace(model, x, torch.zeros(x.shape[0], model.m, dtype=x.dtype, device=x.device),
                         cand, iters)
    return GaussianProposal(mode, chol, DEFENSIVE_WEIGHT)


@torch.no_grad()
def importance_sampling(model: LatentGaussianModel, x: torch.Tensor, samples: int, seed: int = 0,
                        proposal: GaussianProposal | None = None,
                        chunk_elems: int = 2**23) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Per-point log p(x) by importance sampling with K = `samples` draws (Laplace proposal unless one is
    supplied), with ESS and k-hat diagnostics."""
    if proposal is None:
        proposal = laplace_proposal(model, x, seed)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    rows = max(1, chunk_elems // (samples * max(model.n, model.m)))
    vals, ess, khat = [], [], []
    for i in range(0, x.shape[0], rows):
        sl = slice(i, i + rows)
        sub = GaussianProposal(proposal.mean[sl], proposal.chol[sl], proposal.defensive)
        lw = log_weights(model, x[sl], sub, samples, gen)  # (b, K)
        vals.append(log_mean_exp(lw).cpu().numpy())
        lw_np = lw.cpu().numpy()
        ess.append(effective_sample_size(lw_np))
        khat.append(pareto_khat(lw_np))
    per_point = np.concatenate(vals)
    ess_all, khat_all = np.concatenate(ess), np.concatenate(khat)
    bad = float(np.mean(khat_all > KHAT_WARN))
    details = {"samples": samples, "ess_min": float(ess_all.min()), "ess_median": float(np.median(ess_all)),
               "khat_max": float(np.nanmax(khat_all)) if np.isfinite(khat_all).any() else None,
               "khat_share_above_0.7": bad}
    warnings = []
    if bad > 0:
        warnings.append(f"importance sampling: Pareto k-hat > {KHAT_WARN} for {100 * bad:.1f}% of points; "
                        "their estimates cannot be trusted (raise K or improve the proposal)")
    return per_point, details, warnings


def heldout_loglik(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, *, method: str = "auto",
                   samples: int = 2000, seed: int = 0, tol: float = 1e-4) -> LoglikEstimate:
    """Average log p(x) over the rows of x (nats per point) with its standard error.

    method: "auto" (quadrature for m <= 2, else importance), "quadrature" (m <= 3) or "importance".
    """
    model = as_float64(model)
    device = _device_of(model)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)
    if method == "auto":
        method = "quadrature" if model.m <= 2 else "importance"
    if method == "quadrature" and model.m > 3:
        raise ValueError(f"method: quadrature needs m <= 3 (m = {model.m}); use importance")
    warnings: list[str] = []
    if method == "quadrature":
        per_point, details = dense_quadrature(model, xt, tol)
        if details["converged"]:
            mean, se = _summary(per_point)
            return LoglikEstimate(mean, se, per_point, "quadrature", details)
        warnings.append(f"dense quadrature had not converged at {details['nodes']} nodes per dimension "
                        f"(last change {details['last_change']:.2e} nats); importance sampling used")
    per_point, details, is_warn = importance_sampling(model, xt, max(samples, MIN_IS_SAMPLES), seed)
    mean, se = _summary(per_point)
    return LoglikEstimate(mean, se, per_point, "importance", details, warnings + is_warn)


@torch.no_grad()
def posterior_means(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, *, samples: int = 1000,
                    seed: int = 0) -> np.ndarray:
    """E[z | x] under the model, per row: dense quadrature for m <= 2, self-normalised IS otherwise."""
    model = as_float64(model)
    device = _device_of(model)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)
    if model.m <= 2:
        u, lw = uniform_grid(model.m, {1: 4096, 2: 256}[model.m], device=device)
        return posterior_mean_dense(model, xt, u, lw).cpu().numpy()
    prop = laplace_proposal(model, xt, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    z = prop.sample(samples, gen)  # (B, K, m)
    lw = log_joint(model, xt, z) - prop.log_prob(z)
    return (torch.softmax(lw, -1).unsqueeze(-1) * z).sum(1).cpu().numpy()


def quick_loglik(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, seed: int = 0) -> float:
    """A fast held-out estimate for monitoring during training (fixed grid or K = 256 draws)."""
    m = as_float64(model)
    device = _device_of(m)
    xt = torch.as_tensor(np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float64,
                         device=device)[:1000]
    with torch.no_grad():
        if m.m <= 2:
            u, lw = uniform_grid(m.m, {1: 2048, 2: 128}[m.m], device=device)
            return float(log_marginal_dense(m, xt, u, lw).mean())
        per_point, _, _ = importance_sampling(m, xt, 256, seed, laplace_proposal(m, xt, seed, iters=10))
    return float(per_point.mean())


def latent_scores(z_true: np.ndarray, z_hat: np.ndarray) -> dict[str, float]:
    """Procrustes R^2 and MCC of inferred latents (both up to rotation / measure-preserving maps)."""
    return {"procrustes_r2": procrustes_r2(z_true, z_hat), "mcc": mean_corr_coef(z_true, z_hat)}


def sigma_report(model: LatentGaussianModel) -> dict[str, Any]:
    """sigma as reported: a number (or list), or null with the reason when it is not identified."""
    identified = bool(getattr(model, "sigma_identified", True))
    s = model.sigma().detach().cpu().reshape(-1).tolist()
    out: dict[str, Any] = {"sigma": (s[0] if len(s) == 1 else s) if identified else None,
                           "sigma_identified": identified}
    if not identified:
        out["sigma_note"] = ("not identified: linear f with m >= n; only A A^T + sigma^2 I is, "
                             f"(the fitted value {s[0] if len(s) == 1 else s} is one point on a ridge)")
    return out
