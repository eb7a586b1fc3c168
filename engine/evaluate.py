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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .latents import mean_corr_coef, procrustes_r2
from .likelihood.diagnostics import KHAT_WARN, effective_sample_size, pareto_khat
from .likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal, log_mean_exp, log_weights
from .likelihood.laplace import laplace
from .likelihood.quadrature import log_marginal_dense, logsumexp_on_grid, posterior_mean_on_grid, uniform_grid
from .model import LatentGaussianModel, log_joint

CHUNK_POINTS = 256  # points scored between two progress reports and stop checks
SCORE_POINTS = 10_000  # larger held-out sets are scored on a seeded random subsample of this size
GRID_CACHE_BYTES = 2**28  # g(grid) kept across chunks up to this size
QUADRATURE_START = {1: 256, 2: 64, 3: 32}
QUADRATURE_CAP = {1: 65536, 2: 512, 3: 64}
MIN_IS_SAMPLES = 1000
MONITOR_NODES = {1: 1024, 2: 96}
PASS_BYTES = 2**28  # float64 activations one pass through the model may hold while scoring
LAPLACE_CANDIDATES = 256  # prior draws of the proposal's global mode search


def row_width(model: LatentGaussianModel) -> int:
    """The widest activation a latent point makes in the model: what a row costs in memory."""
    widths = [model.n, model.m]
    if isinstance(model, nn.Module):
        widths += [mod.out_features for mod in model.modules() if isinstance(mod, nn.Linear)]
    return max(widths)


def mean_in_passes(model: LatentGaussianModel, z: torch.Tensor, should_stop: StopFn | None = None) -> torch.Tensor:
    """g(z) for z (R, m) in passes of rows whose activations take at most PASS_BYTES: -> (R, n).
    `should_stop()` is asked before each pass, and True raises ScoringStopped."""
    rows = max(1, PASS_BYTES // (16 * row_width(model)))
    parts = []
    for c in z.split(rows):
        if should_stop is not None and should_stop():
            raise ScoringStopped
        parts.append(model.mean(c))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def chunk_points(model: LatentGaussianModel, draws: int) -> int:
    """Points a chunk of the scoring holds: CHUNK_POINTS, fewer when `draws` rows a point would not fit in
    PASS_BYTES (a wide decoder)."""
    return int(min(CHUNK_POINTS, max(1, PASS_BYTES // (16 * row_width(model) * draws))))


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


class ScoringStopped(Exception):
    """The user asked scoring to stop (between two chunks of points)."""


ProgressFraction = Callable[[float], None]
StopFn = Callable[[], bool]


class GridMeans:
    """The dense rule's grids and g(grid) by node count, computed once for all chunks of points (when
    g(grid) takes at most GRID_CACHE_BYTES)."""

    def __init__(self, model: LatentGaussianModel, device: torch.device):
        self.model, self.device, self.cache = model, device, {}

    def __call__(self, nodes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if nodes in self.cache:
            return self.cache[nodes]
        u, lw = uniform_grid(self.model.m, nodes, device=self.device)
        out = (u, lw, mean_in_passes(self.model, u))  # (G, m), (G,), (G, n)
        if out[2].numel() * 8 <= GRID_CACHE_BYTES:
            self.cache[nodes] = out
        return out


@torch.no_grad()
def dense_quadrature(model: LatentGaussianModel, x: torch.Tensor, tol: float = 1e-4,
                     start: int | None = None, cap: int | None = None,
                     grids: GridMeans | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-point log p(x) by the dense trapezoidal rule, nodes per dimension doubled until
    mean_i |log p_k(x_i) - log p_{k-1}(x_i)| < tol. Returns the values and {nodes, grid_points, converged,
    last_change}."""
    m = model.m
    nodes = start or QUADRATURE_START[m]
    cap = cap or QUADRATURE_CAP[m]
    grids = grids or GridMeans(model, x.device)
    sigma = model.sigma()
    prev = None
    change = float("inf")
    while True:
        u, lw, mean = grids(nodes)
        cur = logsumexp_on_grid(x, mean, sigma, lw, 2**23).cpu().numpy()
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
                     candidates: int = LAPLACE_CANDIDATES, iters: int = 20) -> GaussianProposal:
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
    rows = max(1, chunk_elems // (samples * row_width(model)))
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


def scored_rows(N: int, seed: int) -> np.ndarray | None:
    """Rows scored of N held-out points: all (None) up to SCORE_POINTS, else a seeded random subsample."""
    if N <= SCORE_POINTS:
        return None
    return np.sort(np.random.default_rng(seed + 104729).choice(N, SCORE_POINTS, replace=False))


def _chunks(x: np.ndarray, device: torch.device, should_stop: StopFn | None,
            points: int = CHUNK_POINTS) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The rows of x in chunks of `points` as float64 tensors, with the chunk's index and their count;
    `should_stop()` is asked before each, and True raises ScoringStopped."""
    starts = range(0, len(x), points)
    for k, i in enumerate(starts):
        if should_stop is not None and should_stop():
            raise ScoringStopped
        yield k, len(starts), torch.as_tensor(x[i: i + points], dtype=torch.float64, device=device)


def heldout_loglik(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, *, method: str = "auto",
                   samples: int = 2000, seed: int = 0, tol: float = 1e-4,
                   on_progress: ProgressFraction | None = None, should_stop: StopFn | None = None) -> LoglikEstimate:
    """Average log p(x) over the rows of x (nats per point) with its standard error.

    method: "auto" (quadrature for m <= 2, else importance), "quadrature" (m <= 3) or "importance".
    Points are scored in chunks of CHUNK_POINTS (each its own quadrature convergence, or importance sampling
    where the quadrature has not converged at its node cap); more than SCORE_POINTS points are scored on a
    seeded random subsample (`scored_rows`), and the standard error is that of the subsample's mean.
    `on_progress(fraction)` after each chunk; `should_stop()` before each: True raises ScoringStopped.
    """
    model = as_float64(model)
    device = _device_of(model)
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    n_total = len(x)
    rows = scored_rows(n_total, seed)
    if rows is not None:
        x = x[rows]
    if method == "auto":
        method = "quadrature" if model.m <= 2 else "importance"
    if method == "quadrature" and model.m > 3:
        raise ValueError(f"method: quadrature needs m <= 3 (m = {model.m}); use importance")
    K = max(samples, MIN_IS_SAMPLES)
    grids = GridMeans(model, device) if method == "quadrature" else None
    start = QUADRATURE_START.get(model.m)
    values, quad, imp, warnings = [], [], [], []
    for k, n_chunks, xt in _chunks(x, device, should_stop, chunk_points(model, LAPLACE_CANDIDATES + 1)):
        if grids is not None:
            vals, det = dense_quadrature(model, xt, tol, start=start, grids=grids)
            quad.append(det)
            start = max(QUADRATURE_START[model.m], det["nodes"] // 2)  # neighbours need about as many
            if not det["converged"]:
                vals, det, _ = importance_sampling(model, xt, K, seed + k)
                imp.append((len(xt), det))
        else:
            vals, det, _ = importance_sampling(model, xt, K, seed + k)
            imp.append((len(xt), det))
        values.append(vals)
        if on_progress is not None:
            on_progress((k + 1) / n_chunks)
    per_point = np.concatenate(values)
    mean, se = _summary(per_point)
    details: dict[str, Any] = {"n_points_total": n_total, "subsampled": rows is not None}
    if quad:
        details.update({"nodes": max(d["nodes"] for d in quad), "grid_points": max(d["grid_points"] for d in quad),
                        "converged": all(d["converged"] for d in quad),
                        "last_change": max(d["last_change"] for d in quad)})
        if not details["converged"]:
            warnings.append(f"dense quadrature had not converged at {details['nodes']} nodes per dimension "
                            f"for {sum(p for p, _ in imp)} points; importance sampling used for them")
    if imp:
        ess = [d["ess_min"] for _, d in imp]
        khat = [d["khat_max"] for _, d in imp if d["khat_max"] is not None]
        bad = sum(p * d["khat_share_above_0.7"] for p, d in imp) / sum(p for p, _ in imp)
        details.update({"samples": K, "importance_points": sum(p for p, _ in imp), "ess_min": min(ess),
                        "ess_median": float(np.median([d["ess_median"] for _, d in imp])),
                        "khat_max": max(khat) if khat else None, "khat_share_above_0.7": bad})
        if bad > 0:
            warnings.append(f"importance sampling: Pareto k-hat > {KHAT_WARN} for {100 * bad:.1f}% of points; "
                            "their estimates cannot be trusted (raise K or improve the proposal)")
    if rows is not None:
        warnings.append(f"scored on a seeded random subsample of {len(x)} of the {n_total} points; the "
                        "standard error is the subsample's")
    used = "importance" if not quad or len(imp) == len(quad) else ("quadrature" if not imp else "mixed")
    return LoglikEstimate(mean, se, per_point, used, details, warnings)


@torch.no_grad()
def posterior_means(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, *, samples: int = 1000,
                    seed: int = 0, on_progress: ProgressFraction | None = None,
                    should_stop: StopFn | None = None) -> np.ndarray:
    """E[z | x] under the model, per row: the dense grid's posterior weights for m <= 2,
    sum_g softmax_g(log w_g + log p(x | u_g)) u_g, else self-normalised IS. Chunked like heldout_loglik."""
    model = as_float64(model)
    device = _device_of(model)
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    grid = GridMeans(model, device)({1: 4096, 2: 256}[model.m]) if model.m <= 2 else None
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for k, n_chunks, xt in _chunks(x, device, should_stop, chunk_points(model, max(samples, LAPLACE_CANDIDATES + 1))):
        if grid is not None:
            u, lw, mean = grid
            out.append(posterior_mean_on_grid(xt, mean, model.sigma(), u, lw))
        else:
            prop = laplace_proposal(model, xt, seed)
            z = prop.sample(samples, gen)  # (b, K, m)
            lw = log_joint(model, xt, z) - prop.log_prob(z)
            out.append((torch.softmax(lw, -1).unsqueeze(-1) * z).sum(1))
        if on_progress is not None:
            on_progress((k + 1) / n_chunks)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, model.m))


def quick_loglik(model: LatentGaussianModel, x: np.ndarray | torch.Tensor, seed: int = 0) -> float:
    """A fast held-out estimate for monitoring during training: for m <= 2 the trapezoidal rule with
    MONITOR_NODES per dimension on [-6, 6]^m (the prior's mass outside is below 1e-8), else importance
    sampling with K = 64 draws from the defensive Laplace proposal."""
    m = as_float64(model)
    device = _device_of(m)
    xt = torch.as_tensor(np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float64,
                         device=device)
    with torch.no_grad():
        if m.m <= 2:
            u, lw = uniform_grid(m.m, MONITOR_NODES[m.m], half_width=6.0, device=device)
            return float(log_marginal_dense(m, xt, u, lw).mean())
        proposal = laplace_proposal(m, xt, seed, candidates=64, iters=5)
        per_point, _, _ = importance_sampling(m, xt, 64, seed, proposal)
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
