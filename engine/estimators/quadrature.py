"""Direct MLE by Gauss-Hermite quadrature (`mle-quadrature`, `mle-adaptive`).

mle-quadrature: log p(x) ≈ logsumexp_g [log w_g + log p_theta(x | u_g)] on a fixed tensor grid
(m <= 3). Its autograd gradient is sum_g softmax_g(...) grad log p(x | u_g): Fisher's identity with the
posterior replaced by its quadrature weights. Biased when the grid does not resolve p(z | x).

mle-adaptive: the rule is moved to a Gaussian per point, N(c, L L^T), that follows its posterior: each
visit refines it from the visit's own nodes for the next (the posterior of g's statistical linearisation
under the visit's Gaussian; `engine.likelihood.adaptive`), so narrow posteriors are resolved at the cost
of the rule's nodes alone. Its gradient is Fisher's identity with the posterior replaced by the nodes'
weights softmax_g(t_g).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..likelihood.adaptive import WarmGrids, refined_gaussian
from ..likelihood.laplace import RESTART_EVERY
from ..likelihood.quadrature import (
    adaptive_rule,
    adaptive_terms,
    hermite_grid,
    log_marginal_dense,
    posterior_mean_on_grid,
)
from ..networks import Decoder
from ..ppca import LinearStart
from .base import Estimator, Objective


class GaussHermiteMLE(Estimator):
    name = "mle-quadrature"

    def __init__(self, decoder: Decoder, n_train: int, nodes: int):
        super().__init__(decoder, n_train)
        u, lw = hermite_grid(decoder.m, nodes, dtype=torch.float32)
        self.register_buffer("u", u)  # (G, m)
        self.register_buffer("logw", lw)  # (G,)

    def decoder_rows(self, batch: int) -> int:
        return self.u.shape[0]  # the grid goes through the decoder once per batch

    def step_bytes(self, batch: int) -> int:
        return super().step_bytes(batch) + 3 * 4 * batch * self.u.shape[0]  # and the (B, G) log-likelihoods

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        ll = log_marginal_dense(self.decoder, x, self.u, self.logw)  # (B,)
        value = ll.mean()
        return Objective(value, float(value.detach()))

    @torch.no_grad()
    def inferred_latents(self, x: Tensor) -> Tensor:
        """Posterior means on the grid."""
        return posterior_mean_on_grid(x, self.decoder.mean(self.u), self.decoder.sigma(), self.u, self.logw)


class AdaptiveGaussHermiteMLE(Estimator):
    name = "mle-adaptive"

    def __init__(self, decoder: Decoder, n_train: int, nodes: int):
        super().__init__(decoder, n_train)
        u, lw = adaptive_rule(decoder.m, nodes, dtype=torch.float32)
        self.register_buffer("u", u)  # (G, m)
        self.register_buffer("logw", lw)  # (G,)
        self.grids = WarmGrids(n_train, decoder.m)

    def decoder_rows(self, batch: int) -> int:
        search = batch * (self.grids.candidates.shape[0] + 1) // RESTART_EVERY  # every 32 steps, forward only
        return batch * self.u.shape[0] + search

    def start_from(self, start: LinearStart, y_train: np.ndarray) -> None:
        """Every point's Gaussian at its exact linear posterior (exact for the linear start: no Laplace fit on
        the first visit)."""
        self.grids.start_at(torch.as_tensor(start.posterior_mean(y_train)), torch.as_tensor(start.posterior_sd()))

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        centre, chol = self.grids.locate(self.decoder, x, idx, step % RESTART_EVERY == 0)  # (B, m), (B, m, m)
        _, mean, terms = adaptive_terms(self.decoder, x, centre, chol, self.u, self.logw)  # (B, G, n), (B, G)
        self.grids.store(idx, *refined_gaussian(x, centre, chol, mean.detach(), self.u, self.logw,
                                                self.decoder.sigma().detach()))
        value = torch.logsumexp(terms, dim=-1).mean()
        return Objective(value, float(value.detach()))

    def inferred_latents(self, x: Tensor) -> Tensor:
        """The stored centres (linearised posterior means) of the first rows (the live plot shows training
        points)."""
        return self.grids.stored_centres(x.shape[0]).to(x.dtype)
