"""Direct MLE by Gauss-Hermite quadrature (`mle-quadrature`, `mle-adaptive`).

mle-quadrature: log p(x) ≈ logsumexp_g [log w_g + log p_theta(x | u_g)] on a fixed tensor grid
(m <= 3). Its autograd gradient is sum_g softmax_g(...) grad log p(x | u_g): Fisher's identity with the
posterior replaced by its quadrature weights. Biased when the grid does not resolve p(z | x).

mle-adaptive: the grid is laid on a per-point Gaussian N(mu_x, L_x L_x^T), z_g = mu_x + L_x u_g, so narrow
posteriors are resolved; mu_x and L_x are the posterior mean and covariance that the point's last visit
computed from its own weights (no extra decoder pass), or the Laplace approximation on a first visit and
at the periodic global searches (likelihood/laplace.py: AdaptiveGrids).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..likelihood.laplace import AdaptiveGrids
from ..likelihood.quadrature import adaptive_terms, hermite_grid, log_lik_matrix, log_marginal_dense
from ..networks import Decoder
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

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        ll = log_marginal_dense(self.decoder, x, self.u, self.logw)  # (B,)
        value = ll.mean()
        return Objective(value, float(value.detach()))

    @torch.no_grad()
    def inferred_latents(self, x: Tensor) -> Tensor:
        """Posterior means on the grid."""
        mean = self.decoder.mean(self.u)
        w = torch.softmax(log_lik_matrix(x, mean, self.decoder.sigma()) + self.logw, -1)
        return w @ self.u


class AdaptiveGaussHermiteMLE(Estimator):
    name = "mle-adaptive"

    def __init__(self, decoder: Decoder, n_train: int, nodes: int):
        super().__init__(decoder, n_train)
        u, lw = hermite_grid(decoder.m, nodes, dtype=torch.float32)
        self.register_buffer("u", u)
        self.register_buffer("logw", lw)
        self.grids = AdaptiveGrids(n_train, decoder.m)

    def decoder_rows(self, batch: int) -> int:
        return batch * self.u.shape[0]

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        centre, chol = self.grids.grids(self.decoder, x, idx)
        z, terms = adaptive_terms(self.decoder, x, centre, chol, self.u, self.logw)  # (B, G, m), (B, G)
        self.grids.record(idx, z, terms)
        value = torch.logsumexp(terms, dim=-1).mean()
        return Objective(value, float(value.detach()))

    def inferred_latents(self, x: Tensor) -> Tensor:
        """The stored posterior means of the first rows (the live plot shows training points)."""
        return self.grids.stored_modes(x.shape[0]).to(x.dtype)
