"""Posterior modes and Laplace (Gauss-Newton) curvature of p(z | x), batched over points.

Maximises log p(x, z) = -1/2 ||(x - g(z)) / sigma||^2 - 1/2 ||z||^2 + const by damped Gauss-Newton:
    H = J^T S^-1 J + I,   step = H^-1 (J^T S^-1 (x - g(z)) - z),   J = dg/dz (n x m), S = diag sigma^2.
H is the Gauss-Newton precision (positive definite, exact for linear g); N(mode, H^-1) is the Laplace
approximation used to centre the adaptive quadrature and as the importance proposal.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

from ..model import LatentGaussianModel, log_joint
from .quadrature import hermite_grid


def jacobian(model: LatentGaussianModel, z: Tensor) -> Tensor:
    """dg/dz at each point: z (B, m) -> (B, n, m), by forward-mode AD (one batched pass of B*m rows)."""
    B, m = z.shape
    rows = z.unsqueeze(1).expand(B, m, m).reshape(B * m, m)
    tangents = torch.eye(m, dtype=z.dtype, device=z.device).expand(B, m, m).reshape(B * m, m)
    with fwAD.dual_level():
        out = model.mean(fwAD.make_dual(rows, tangents))
        J = fwAD.unpack_dual(out).tangent  # (B*m, n)
    return J.reshape(B, m, -1).transpose(1, 2)


def gauss_newton_precision(model: LatentGaussianModel, z: Tensor) -> Tensor:
    """H = J^T S^-1 J + I at z: (B, m) -> (B, m, m)."""
    J = jacobian(model, z)
    s = model.sigma()
    s = s.expand(J.shape[1]) if s.dim() == 0 else s
    Js = J / s.view(1, -1, 1)
    return Js.transpose(1, 2) @ Js + torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)


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
    f = log_joint(model, x, z.unsqueeze(1)).squeeze(1)  # (B,)
    s = model.sigma()
    for _ in range(iters):
        J = jacobian(model, z)  # (B, n, m)
        sv = s.expand(J.shape[1]) if s.dim() == 0 else s
        r = (x - model.mean(z)) / sv.pow(2)  # (B, n)
        grad = (J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1) - z  # (B, m)
        Js = J / sv.view(1, -1, 1)
        H = Js.transpose(1, 2) @ Js + torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
        step = torch.linalg.solve(H, grad.unsqueeze(-1)).squeeze(-1)
        t = torch.ones_like(f)
        for _ in range(6):  # backtracking: halve the step where log p(x, z) would fall
            z_new = z + t.unsqueeze(-1) * step
            f_new = log_joint(model, x, z_new.unsqueeze(1)).squeeze(1)
            bad = ~(f_new >= f)
            if not bad.any():
                break
            t = torch.where(bad, t * 0.5, t)
        accept = f_new >= f
        z = torch.where(accept.unsqueeze(-1), z_new, z)
        f = torch.where(accept, f_new, f)
    return z


@torch.no_grad()
def laplace(model: LatentGaussianModel, x: Tensor, z0: Tensor, candidates: Tensor | None = None,
            iters: int = 10) -> tuple[Tensor, Tensor]:
    """Laplace approximation N(mode, H^-1): returns mode (B, m) and chol (B, m, m) of H^-1."""
    start = z0 if candidates is None else best_start(model, x, z0, candidates)
    mode = find_modes(model, x, start, iters)
    H = gauss_newton_precision(model, mode)
    chol = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)))
    return mode, chol


class WarmLaplace(torch.nn.Module):
    """Per-training-point Laplace approximations, warm-started from each point's last mode.

    A step starts Gauss-Newton from the better of the stored mode and a set of candidate starts (a coarse
    Gauss-Hermite grid for m <= 3, else prior draws), so a point can jump to a higher posterior mode as
    theta moves.
    """

    def __init__(self, n_train: int, m: int, iters: int = 3):
        super().__init__()
        if m <= 3:
            cand, _ = hermite_grid(m, 7, dtype=torch.float32)
        else:
            cand = torch.randn(128, m, generator=torch.Generator().manual_seed(0))
        self.register_buffer("candidates", cand)  # (C, m)
        self.register_buffer("modes", torch.zeros(n_train, m))  # (N_train, m)
        self.iters = iters

    def update(self, model: LatentGaussianModel, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Refresh the modes of rows `idx` under the current model: returns mode (B, m), chol (B, m, m)."""
        mode, chol = laplace(model, x, self.modes[idx].to(x.dtype), self.candidates.to(x.dtype), self.iters)
        self.modes[idx] = mode.to(self.modes.dtype)
        return mode, chol

    def modes_of(self, model: LatentGaussianModel, x: Tensor) -> Tensor:
        """Modes for arbitrary points (cold start from the candidates): (B, n) -> (B, m)."""
        z0 = torch.zeros(x.shape[0], self.modes.shape[1], dtype=x.dtype, device=x.device)
        return laplace(model, x, z0, self.candidates.to(x.dtype), 5)[0]
