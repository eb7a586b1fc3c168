"""Posterior modes and Laplace (Gauss-Newton) curvature of p(z | x), batched over points.

Maximises log p(x, z) = -1/2 ||(x - g(z)) / sigma||^2 - 1/2 ||z||^2 + const by damped Gauss-Newton:
    H = J^T S^-1 J + I,   step = H^-1 (J^T S^-1 (x - g(z)) - z),   J = dg/dz (n x m), S = diag sigma^2.
H is the Gauss-Newton precision (positive definite, exact for linear g); N(mode, H^-1) is the Laplace
approximation: the importance proposal, and adaptive quadrature's Gaussian on a point's first visit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import LatentGaussianModel, log_joint, log_likelihood, log_prior
from .quadrature import hermite_grid

RESTART_EVERY = 32  # visits (WarmLaplace) or steps (adaptive.WarmGrids) between searches among the candidate starts
FIRST_VISIT_STEPS = 4  # Gauss-Newton steps on a point's first visit (WarmLaplace's later visits: one)
SEARCH_ROWS = 2**15  # decoder rows of one pass of the search among the candidate starts


def mean_and_jacobian(model: LatentGaussianModel, z: Tensor) -> tuple[Tensor, Tensor]:
    """g(z) and dg/dz: z (B, m) -> (B, n), (B, n, m).

    Models that propagate their Jacobian in their forward pass (the MLP decoder) do so; for any other model
    (the simulator's f) the vector-Jacobian product u^T J is formed with u as a variable, and column i is
    J e_i = d/du (u^T J e_i): one forward and m + 1 backward passes, no forward-mode AD."""
    if hasattr(model, "mean_and_jacobian"):
        return model.mean_and_jacobian(z)
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        g = model.mean(zg)  # (B, n)
        u = torch.zeros_like(g, requires_grad=True)
        (vjp,) = torch.autograd.grad(g, zg, u, create_graph=True)  # (B, m) = u^T J, linear in u
        cols = [torch.autograd.grad(vjp[:, i].sum(), u, retain_graph=i < z.shape[-1] - 1)[0]
                for i in range(z.shape[-1])]  # each (B, n) = J e_i
    return g.detach(), torch.stack(cols, -1)


def jacobian(model: LatentGaussianModel, z: Tensor) -> Tensor:
    """dg/dz at each point: z (B, m) -> (B, n, m)."""
    return mean_and_jacobian(model, z)[1]


def _sigma_vector(model: LatentGaussianModel, n: int) -> Tensor:
    s = model.sigma()
    return s.expand(n) if s.dim() == 0 else s


def gauss_newton_precision(J: Tensor, sigma: Tensor) -> Tensor:
    """H = J^T S^-1 J + I: J (B, n, m), sigma (n,) -> (B, m, m). The one place it is computed."""
    Js = J / sigma.view(1, -1, 1)
    return Js.transpose(1, 2) @ Js + torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)


def covariance_cholesky(H: Tensor) -> Tensor:
    """Lower Cholesky factor of H^-1: (B, m, m) -> (B, m, m); NaN for a row whose H is not positive definite
    (a decoder gone to NaN), which the callers' guards then catch, rather than an exception mid-step."""
    L, info = torch.linalg.cholesky_ex(H)
    C, info2 = torch.linalg.cholesky_ex(torch.cholesky_inverse(L))
    bad = (info != 0) | (info2 != 0)
    return torch.where(bad.view(-1, 1, 1), torch.full_like(C, float("nan")), C)


@torch.no_grad()
def gauss_newton_step(model: LatentGaussianModel, x: Tensor, z: Tensor,
                      halvings: int = 6) -> tuple[Tensor, Tensor]:
    """One damped Gauss-Newton step of log p(x, z) from z, halved (at most `halvings` times) where the
    full step would lower it: x (B, n), z (B, m) -> the new z (B, m) and the precision H (B, m, m) at z."""
    g, J = mean_and_jacobian(model, z)  # (B, n), (B, n, m)
    s = _sigma_vector(model, x.shape[-1])
    f = log_likelihood(x, g, model.sigma()) + log_prior(z)  # (B,)
    grad = (J.transpose(1, 2) @ ((x - g) / s.pow(2)).unsqueeze(-1)).squeeze(-1) - z  # (B, m)
    H = gauss_newton_precision(J, s)
    step = torch.linalg.solve(H, grad.unsqueeze(-1)).squeeze(-1)
    slack = 8 * torch.finfo(f.dtype).eps * (1 + f.abs())  # rounding: at the mode a zero step may "lower" f
    t = torch.ones_like(f)
    z_new = z + step
    better = log_joint(model, x, z_new.unsqueeze(1)).squeeze(1) >= f - slack
    for _ in range(halvings - 1):  # only the rows whose step lowered f go through the decoder again
        bad = (~better).nonzero().squeeze(1)
        if not bad.numel():
            break
        t[bad] *= 0.5
        z_new[bad] = z[bad] + t[bad].unsqueeze(-1) * step[bad]
        better[bad] = log_joint(model, x[bad], z_new[bad].unsqueeze(1)).squeeze(1) >= (f - slack)[bad]
    return torch.where(better.unsqueeze(-1), z_new, z), H


@torch.no_grad()
def best_start(model: LatentGaussianModel, x: Tensor, starts: Tensor, candidates: Tensor) -> Tensor:
    """For each point, the best of its own start (B, m) and the shared candidates (C, m) by log p(x, z)."""
    B = x.shape[0]
    pool = torch.cat([starts.unsqueeze(1), candidates.unsqueeze(0).expand(B, -1, -1)], dim=1)  # (B, C+1, m)
    lj = log_joint(model, x, pool)  # (B, C+1)
    return pool[torch.arange(B, device=x.device), lj.argmax(-1)]


@torch.no_grad()
def find_modes(model: LatentGaussianModel, x: Tensor, z0: Tensor, iters: int = 10) -> Tensor:
    """Damped Gauss-Newton ascent of log p(x, z) from z0: x (B, n), z0 (B, m) -> modes (B, m)."""
    z = z0.clone()
    for _ in range(iters):
        z, _ = gauss_newton_step(model, x, z)
    return z


@torch.no_grad()
def laplace(model: LatentGaussianModel, x: Tensor, z0: Tensor, candidates: Tensor | None = None,
            iters: int = 10) -> tuple[Tensor, Tensor]:
    """Laplace approximation N(mode, H^-1): returns mode (B, m) and chol (B, m, m) of H^-1."""
    start = z0 if candidates is None else best_start(model, x, z0, candidates)
    mode = find_modes(model, x, start, iters)
    H = gauss_newton_precision(jacobian(model, mode), _sigma_vector(model, x.shape[-1]))
    return mode, covariance_cholesky(H)


def search_chunks(rows: Tensor, candidates: Tensor) -> tuple[Tensor, ...]:
    """`rows` in parts whose search (each row's candidates and its stored start) is at most SEARCH_ROWS
    decoder rows."""
    return rows.split(max(1, SEARCH_ROWS // (len(candidates) + 1)))


def candidate_starts(m: int) -> Tensor:
    """Shared starts of the global search: a Gauss-Hermite grid (16 nodes for m = 1, 7^2 for m = 2), else
    128 seeded prior draws: (C, m)."""
    if m <= 2:
        return hermite_grid(m, {1: 16, 2: 7}[m], dtype=torch.float32)[0]
    return torch.randn(128, m, generator=torch.Generator().manual_seed(0))


class WarmLaplace(torch.nn.Module):
    """Per-training-point Laplace approximations, tracked across visits as theta moves.

    A visit takes one Gauss-Newton step from the point's stored mode (FIRST_VISIT_STEPS on its first
    visit), computing g, its Jacobian and the precision H in one pass; the approximation returned is
    N(new mode, H^-1) with H from that pass, one step behind the mode (both exact for linear g). On the
    first visit, and for the whole batch when `search` (every RESTART_EVERY steps: about every
    RESTART_EVERY visits of a point, in one batched pass), the step starts from the best of the stored
    mode and the candidate starts, so that a point can move to a higher posterior mode as theta changes.
    """

    def __init__(self, n_train: int, m: int):
        super().__init__()
        self.register_buffer("candidates", candidate_starts(m))  # (C, m)
        self.register_buffer("modes", torch.zeros(n_train, m))  # (N_train, m)
        self.register_buffer("seen", torch.zeros(n_train, dtype=torch.bool))  # (N_train,) visited before

    @torch.no_grad()
    def start_at(self, modes: Tensor) -> None:
        """Every point's mode at `modes` (N_train, m), taken as visited (one Gauss-Newton step a visit follows)."""
        self.modes.copy_(modes.to(self.modes))
        self.seen.fill_(True)

    @torch.no_grad()
    def update(self, model: LatentGaussianModel, x: Tensor, idx: Tensor, search: bool) -> tuple[Tensor, Tensor]:
        """Refresh the approximations of rows `idx` under the current model: returns mode (B, m), chol (B, m, m)."""
        z = self.modes[idx].to(x.dtype)
        first = ~self.seen[idx]
        rows = torch.arange(len(idx), device=idx.device) if search else first.nonzero().squeeze(1)
        for part in search_chunks(rows, self.candidates):
            z[part] = best_start(model, x[part], z[part], self.candidates.to(x.dtype))
        rows = first.nonzero().squeeze(1)
        if rows.numel():
            z[rows] = find_modes(model, x[rows], z[rows], FIRST_VISIT_STEPS - 1)
        mode, H = gauss_newton_step(model, x, z)
        self.modes[idx] = mode.to(self.modes.dtype)
        self.seen[idx] = True
        return mode, covariance_cholesky(H)

    def stored_modes(self, rows: int) -> Tensor:
        """The stored modes of the first `rows` training points (what the live plots show)."""
        return self.modes[:rows]

