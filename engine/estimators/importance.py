"""Direct MLE by importance sampling (`mle-importance`).

    log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q fresh every step.

Gradient: sum_k w~_k grad log p(x, z_k), w~ the self-normalised weights: Fisher's identity with the
posterior replaced by the weighted draws; biased for finite K (the estimate is a lower bound in
expectation), consistent as K -> inf. q = the prior N(0, I), or ("laplace") a per-point Gaussian mixed
defensively with the prior: the Laplace approximation on a point's first visit, then refined at every visit
from the visit's own draws by posterior linearisation (`engine.likelihood.adaptive`, the same per-point
Gaussians as mle-adaptive's), so the proposal costs no decoder pass of its own.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..likelihood.adaptive import WarmGrids, refined_gaussian
from ..likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal, log_mean_exp, proposal_draws
from ..likelihood.laplace import RESTART_EVERY
from ..model import log_likelihood, log_prior
from ..networks import Decoder
from .base import Estimator, Objective


class ImportanceSamplingMLE(Estimator):
    name = "mle-importance"

    def __init__(self, decoder: Decoder, n_train: int, samples: int, proposal: str, gen: torch.Generator):
        super().__init__(decoder, n_train)
        self.samples, self.proposal, self.gen = samples, proposal, gen
        self.grids = WarmGrids(n_train, decoder.m)

    def decoder_rows(self, batch: int) -> int:
        if self.proposal != "laplace":
            return batch * self.samples
        search = batch * (self.grids.candidates.shape[0] + 1) // RESTART_EVERY  # every 32 steps, forward only
        return batch * self.samples + search

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        q = None
        if self.proposal == "laplace":
            centre, chol = self.grids.locate(self.decoder, x, idx, step % RESTART_EVERY == 0)  # (B, m), (B, m, m)
            q = GaussianProposal(centre, chol, DEFENSIVE_WEIGHT)
        z, lq = proposal_draws(x, self.decoder.m, q, self.samples, self.gen)  # (B, K, m), (B, K)
        mean = self.decoder.mean(z)  # (B, K, n)
        sigma = self.decoder.sigma()
        lw = log_likelihood(x.unsqueeze(-2), mean, sigma) + log_prior(z) - lq  # (B, K) log w_k
        if q is not None:
            with torch.no_grad():  # the Gaussian component's share of each draw: the draws weighted to N(c, L L^T)
                lg, u = q.gaussian_log_prob(z)  # (B, K), (B, K, m)
                self.grids.store(idx, *refined_gaussian(x, centre, chol, mean.detach(), u,
                                                        torch.log_softmax(lg - lq, -1), sigma.detach()))
        value = log_mean_exp(lw).mean()
        with torch.no_grad():
            ess = (1.0 / torch.softmax(lw, -1).pow(2).sum(-1)).mean()
        return Objective(value, float(value.detach()), {"ess": float(ess)})

    def inferred_latents(self, x: Tensor) -> Tensor:
        """The stored centres (linearised posterior means) of the first rows (the live plot shows training
        points)."""
        return self.grids.stored_centres(x.shape[0]).to(x.dtype)
