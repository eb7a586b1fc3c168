"""Importance-sampling estimates of log p(x) with K draws from a proposal q(z | x):

    log p(x) ≈ log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k | x),   z_k ~ q(z | x).

Unbiased for p(x), so by Jensen a lower bound on log p(x) in expectation (the IWAE bound of q), with
bias ≈ Var(w) / (2 K p(x)^2) for large K. Proposals: the prior N(0, I); the Laplace approximation
mixed defensively with the prior, q = (1 - a) N(mode, H^-1) + a N(0, I), which caps every weight at
p(x | z) / a, so the weights have finite variance whatever the posterior's tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import LatentGaussianModel, log_joint, log_prior

DEFENSIVE_WEIGHT = 0.1


@dataclass
class GaussianProposal:
    """q(z | x_b) = N(mean_b, L_b L_b^T), with an optional defensive prior component of weight a."""

    mean: Tensor  # (B, m)
    chol: Tensor  # (B, m, m)
    defensive: float = 0.0

    def sample(self, K: int, gen: torch.Generator | None) -> Tensor:
        """(B, K, m) draws."""
        B, m = self.mean.shape
        eps = torch.randn(B, K, m, generator=gen, dtype=self.mean.dtype, device=self.mean.device)
        z = self.mean.unsqueeze(1) + torch.einsum("bij,bkj->bki", self.chol, eps)
        if self.defensive > 0:
            prior = torch.randn(B, K, m, generator=gen, dtype=self.mean.dtype, device=self.mean.device)
            pick = torch.rand(B, K, 1, generator=gen, dtype=self.mean.dtype, device=self.mean.device)
            z = torch.where(pick < self.defensive, prior, z)
        return z

    def log_prob(self, z: Tensor) -> Tensor:
        """(B, K, m) -> (B, K)."""
        diff = z - self.mean.unsqueeze(1)  # (B, K, m)
        sol = torch.linalg.solve_triangular(self.chol, diff.transpose(1, 2), upper=False)  # (B, m, K)
        log_det = torch.diagonal(self.chol, dim1=-2, dim2=-1).log().sum(-1, keepdim=True)
        m = z.shape[-1]
        lq = -0.5 * sol.pow(2).sum(1) - log_det - 0.5 * m * math.log(2 * math.pi)
        if self.defensive > 0:
            a = self.defensive
            lq = torch.logaddexp(lq + math.log1p(-a), log_prior(z) + math.log(a))
        return lq


@torch.no_grad()
def proposal_draws(x: Tensor, m: int, proposal: GaussianProposal | None, K: int,
                 gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """K draws z_k ~ q per point and log q(z_k | x): x (B, n) -> (B, K, m), (B, K); `proposal=None`: the prior."""
    if proposal is None:
        z = torch.randn(x.shape[0], K, m, generator=gen, dtype=x.dtype, device=x.device)
        return z, log_prior(z)
    z = proposal.sample(K, gen)
    return z, proposal.log_prob(z)


def log_weights(model: LatentGaussianModel, x: Tensor, proposal: GaussianProposal | None, K: int,
                gen: torch.Generator | None) -> Tensor:
    """log w_k = log p(x, z_k) - log q(z_k | x) for K draws per point (`proposal_draws`): x (B, n) -> (B, K).

    `proposal=None` draws from the prior, where log w_k = log p(x | z_k).
    Gradients flow into the model (the draws are constants).
    """
    z, lq = proposal_draws(x, model.m, proposal, K, gen)
    return log_joint(model, x, z) - lq


def log_mean_exp(logw: Tensor) -> Tensor:
    """log (1/K) sum_k exp(logw_k) over the last axis."""
    return torch.logsumexp(logw, dim=-1) - math.log(logw.shape[-1])
