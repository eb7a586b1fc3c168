"""Direct MLE by Gauss-Hermite quadrature (`mle-quadrature`, `mle-adaptive`).

mle-quadrature: log p(x) ≈ logsumexp_g [log w_g + log p_theta(x | u_g)] on a fixed tensor grid
(m <= 3). Its autograd gradient is sum_g softmax_g(...) grad log p(x | u_g): Fisher's identity with the
posterior replaced by its quadrature weights. Biased when the grid does not resolve p(z | x).

mle-adaptive: the grid is centred at each point's posterior mode and scaled by the Gauss-Newton
curvature there (refreshed every step from warm-started modes), so narrow posteriors are resolved.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..likelihood.laplace import WarmLaplace
from ..likelihood.quadrature import hermite_grid, log_marginal_adaptive, log_marginal_dense, posterior_mean_on_grid
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
        u, lw = hermite_grid(decoder.m, nodes, dtype=torch.float32)
        self.register_buffer("u", u)
        self.register_buffer("logw", lw)
        self.laplace = WarmLaplace(n_train, decoder.m)

    def decoder_rows(self, batch: int) -> int:
        return batch * (self.u.shape[0] + self.decoder.m + 2)  # the grid, the Jacobian pass, the step check

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        mode, chol = self.laplace.update(self.decoder, x, idx)
        ll = log_marginal_adaptive(self.decoder, x, mode, chol, self.u, self.logw)  # (B,)
        value = ll.mean()
        return Objective(value, float(value.detach()))

    def inferred_latents(self, x: Tensor) -> Tensor:
        """The stored posterior modes of the first rows (the live plot shows training points)."""
        return self.laplace.stored_modes(x.shape[0]).to(x.dtype)
