"""Quadrature of log p(x) = log E_{z ~ N(0, I)} p(x | z).

Gauss-Hermite (tensor grid on the prior):
    log p(x) ≈ logsumexp_g [ log w_g + log p(x | u_g) ],    u_g, w_g the N(0, I_m) Gauss-Hermite rule.
Adaptive (lme4's nAGQ): with q = N(mu_x, L_x L_x^T) close to the posterior (`adaptive.py`),
z_g = mu_x + L_x u_g and
    log p(x) ≈ logsumexp_g [ log w_g + log p(x, z_g) - log N(u_g; 0, I) + log |det L_x| ],
exact when p(z | x) is Gaussian; the nodes follow each point's posterior however narrow it is.
Trapezoidal (the evaluator's dense rule): u_g on a uniform grid of spacing h over [-L, L]^m,
    log w_g = log N(u_g; 0, I) + m log h.
Gauss-Hermite nodes sit pi/sqrt(nodes) apart near the origin, so resolving a posterior of width s needs
about (pi/s)^2 nodes per dimension; the uniform grid needs 2L/s, and like Gauss-Hermite it converges
geometrically for smooth integrands. The evaluator therefore doubles a uniform grid.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor

from ..model import LatentGaussianModel, log_likelihood, log_prior
from .rules import compact_rule, hermite_rule_1d


def hermite_grid(m: int, nodes: int, device=None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Tensor-product rule for N(0, I_m): points u (G, m) and log weights (G,), G = nodes^m (minus
    nodes whose weight underflows)."""
    u1, lw1 = hermite_rule_1d(nodes)
    u = np.array(list(itertools.product(u1, repeat=m)))  # (G, m)
    lw = np.array([sum(c) for c in itertools.product(lw1, repeat=m)])  # (G,)
    return (torch.as_tensor(u, device=device, dtype=dtype), torch.as_tensor(lw, device=device, dtype=dtype))


def adaptive_rule(m: int, nodes: int, device=None, dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """The rule mle-adaptive moves to each point: the compact rule of the tensor grid's degree where there is
    one (`rules.compact_rule`), else the `nodes`^m tensor grid. Points u (G, m), log weights (G,)."""
    compact = compact_rule(m, nodes)
    if compact is None:
        return hermite_grid(m, nodes, device, dtype)
    u, lw = compact[1]()
    return torch.as_tensor(u, device=device, dtype=dtype), torch.as_tensor(lw, device=device, dtype=dtype)


def uniform_grid(m: int, nodes: int, half_width: float = 10.0, device=None,
                 dtype=torch.float64) -> tuple[Tensor, Tensor]:
    """Trapezoidal rule for N(0, I_m) on [-L, L]^m: points u (nodes^m, m) and log weights."""
    u1 = torch.linspace(-half_width, half_width, nodes, dtype=dtype, device=device)
    h = u1[1] - u1[0]
    u = torch.cartesian_prod(*([u1] * m)).reshape(-1, m)
    return u, log_prior(u) + m * torch.log(h)


def grid_terms(x: Tensor, mean: Tensor, sigma: Tensor, logw: Tensor) -> tuple[Tensor, Tensor]:
    """log w_g + log N(x_b; mean_g, diag sigma^2) = T_bg + r_b without forming the squared distances (one
    fused matrix product):  T_bg = x_b.mean_g / sigma^2 + log w_g - ||mean_g / sigma||^2 / 2,
    r_b = -||x_b / sigma||^2 / 2 - sum log sigma - n/2 log 2 pi.  x (B, n), mean (G, n), logw (G,) -> (B, G), (B,)."""
    n = x.shape[-1]
    s = sigma.expand(n) if sigma.dim() == 0 else sigma
    c = mean.detach().mean(0)  # ||x - mean||^2 is the same about any centre; near the data the expansion keeps
    xs, ms = (x - c) / s, (mean - c) / s  # its precision (data far from 0 would cancel large squares in float32)
    T = torch.addmm(logw - 0.5 * ms.pow(2).sum(-1), xs, ms.T)  # (B, G)
    return T, -0.5 * xs.pow(2).sum(-1) - s.log().sum() - 0.5 * n * np.log(2 * np.pi)


def log_lik_matrix(x: Tensor, mean: Tensor, sigma: Tensor) -> Tensor:
    """log N(x_b; mean_g, diag sigma^2) for every pair: x (B, n), mean (G, n) -> (B, G).

    Written as a distance matrix so that the grid goes through the decoder once for the whole batch.
    """
    T, r = grid_terms(x, mean, sigma, torch.zeros(mean.shape[0], dtype=mean.dtype, device=mean.device))
    return T + r.unsqueeze(-1)


def logsumexp_on_grid(x: Tensor, mean: Tensor, sigma: Tensor, logw: Tensor, chunk_elems: int = 2**24) -> Tensor:
    """log sum_g w_g p(x_b | u_g) from g(u_g) already computed: x (B, n), mean (G, n), logw (G,) -> (B,),
    in row chunks of at most `chunk_elems` pairs."""
    rows = max(1, chunk_elems // max(1, mean.shape[0]))
    out = []
    for xb in x.split(rows):
        T, r = grid_terms(xb, mean, sigma, logw)
        out.append(torch.logsumexp(T, dim=-1) + r)
    return torch.cat(out)


def posterior_mean_on_grid(x: Tensor, mean: Tensor, sigma: Tensor, u: Tensor, logw: Tensor) -> Tensor:
    """E[z | x] = sum_g softmax_g(log w_g + log p(x | u_g)) u_g: x (B, n), mean (G, n), u (G, m) -> (B, m)."""
    return torch.softmax(grid_terms(x, mean, sigma, logw)[0], dim=-1) @ u


def log_marginal_dense(model: LatentGaussianModel, x: Tensor, u: Tensor, logw: Tensor,
                       chunk_elems: int = 2**24) -> Tensor:
    """Dense Gauss-Hermite estimate of log p(x_b): x (B, n) -> (B,). Differentiable in the model."""
    return logsumexp_on_grid(x, model.mean(u), model.sigma(), logw, chunk_elems)


def adaptive_terms(model: LatentGaussianModel, x: Tensor, centre: Tensor, chol: Tensor, u: Tensor,
                   logw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The nodes z_g = mu + L u_g, the decoder's g(z_g) and the summands
    t_g = log w_g + log p(x, z_g) - log N(u_g; 0, I) + log |det L| of adaptive Gauss-Hermite, whose estimate
    is log p(x) ~ logsumexp_g t_g: x (B, n), centre (B, m), chol (B, m, m), u (G, m) -> (B, G, m), (B, G, n),
    (B, G). Centre and chol are constants to the gradient (the exact integral does not depend on them)."""
    z = centre.unsqueeze(1) + torch.einsum("bij,gj->bgi", chol, u)  # (B, G, m)
    mean = model.mean(z)  # (B, G, n)
    log_det = torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1, keepdim=True)  # (B, 1)
    t = logw + log_likelihood(x.unsqueeze(-2), mean, model.sigma()) + log_prior(z) - log_prior(u) + log_det
    return z, mean, t
