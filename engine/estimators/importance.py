"""Direct MLE by importance sampling (`mle-importance`).

    log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q fresh every step.

Gradient: sum_k w~_k grad log p(x, z_k), w~ the self-normalised weights: Fisher's identity with the
posterior replaced by the weighted draws; biased for finite K (the estimate is a lower bound in
expectation), consistent as K -> inf. q = the prior N(0, I), or the per-point Laplace approximation
mixed defensively with the prior (modes warm-started from the last visit).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal, log_mean_exp, log_weights
from ..likelihood.laplace import RESTART_EVERY, WarmLaplace
from ..networks import Decoder
from ..ppca import LinearStart
from .base import Estimator, Objective


class ImportanceSamplingMLE(Estimator):
    name = "mle-importance"

    def __init__(self, decoder: Decoder, n_train: int, samples: int, proposal: str, gen: torch.Generator):
        super().__init__(decoder, n_train)
        self.samples, self.proposal, self.gen = samples, proposal, gen
        self.laplace = WarmLaplace(n_train, decoder.m)

    def decoder_rows(self, batch: int) -> int:
        if self.proposal != "laplace":
            return batch * self.samples
        search = batch * (self.laplace.candidates.shape[0] + 1) // RESTART_EVERY  # every 32 steps, forward only
        return batch * (self.samples + self.decoder.m + 2) + search  # + g and J, the step's check

    def start_from(self, start: LinearStart, y_train: np.ndarray) -> None:
        """Every point's mode at its exact linear posterior mean (the linear start's mode)."""
        self.laplace.start_at(torch.as_tensor(start.posterior_mean(y_train)))

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        q = None
        if self.proposal == "laplace":
            mode, chol = self.laplace.update(self.decoder, x, idx, step % RESTART_EVERY == 0)
            q = GaussianProposal(mode, chol, DEFENSIVE_WEIGHT)
        lw = log_weights(self.decoder, x, q, self.samples, self.gen)  # (B, K)
        value = log_mean_exp(lw).mean()
        with torch.no_grad():
            ess = (1.0 / torch.softmax(lw, -1).pow(2).sum(-1)).mean()
        return Objective(value, float(value.detach()), {"ess": float(ess)})

    def inferred_latents(self, x: Tensor) -> Tensor:
        """The stored posterior modes of the first rows (the live plot shows training points)."""
        return self.laplace.stored_modes(x.shape[0]).to(x.dtype)
