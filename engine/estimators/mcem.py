"""Direct MLE by Monte Carlo EM through Fisher's identity (`mle-mcem`).

    grad log p_theta(x) = E_{p_theta(z | x)} [ grad log p_theta(x, z) ].

Each training point keeps a persistent Markov chain targeting p_theta(z | x) (MALA or HMC); every step
moves the batch's chains a few transitions under the current theta and ascends the Monte Carlo
E-step surrogate  Q = (1/B) sum_b log p_theta(x_b, z_b)  with z_b the chain states held fixed.
Its gradient is a one-draw estimate of Fisher's identity; it is unbiased once the chains have mixed
(stochastic-approximation EM; alternating back-propagation, Han et al. 2017). Each point's step size is
adapted towards the target acceptance rate (Robbins-Monro on log step size with a gain decaying as
visits^-0.6, so that the adaptation vanishes and the chains keep p(z | x) as their target).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..model import log_joint
from ..networks import Decoder
from ..ppca import LinearStart
from .base import Estimator, Objective


class MonteCarloEM(Estimator):
    name = "mle-mcem"

    def __init__(self, decoder: Decoder, n_train: int, sampler: str, mcmc_steps: int, leapfrog_steps: int,
                 target_accept: float, gen: torch.Generator):
        super().__init__(decoder, n_train)
        self.sampler, self.mcmc_steps, self.leapfrog_steps = sampler, mcmc_steps, leapfrog_steps
        self.target_accept, self.gen = target_accept, gen
        init = torch.Generator().manual_seed(gen.initial_seed())  # on the CPU, whatever gen's device
        self.register_buffer("chains", torch.randn(n_train, decoder.m, generator=init))  # (N_train, m)
        self.register_buffer("log_step", torch.full((n_train,), math.log(0.1)))  # (N_train,)
        self.register_buffer("visits", torch.zeros(n_train))  # transitions made by each chain
        self.adapt_rate = 0.2

    def start_from(self, start: LinearStart, y_train: np.ndarray) -> None:
        """Every chain at a draw from its exact linear posterior (seeded like the random start): no burn-in."""
        init = torch.Generator().manual_seed(self.gen.initial_seed())
        mean, sd = torch.as_tensor(start.posterior_mean(y_train)), torch.as_tensor(start.posterior_sd())
        draw = mean + sd * torch.randn(mean.shape, generator=init, dtype=mean.dtype)
        self.chains.copy_(draw.to(self.chains))

    def decoder_rows(self, batch: int) -> int:
        per_transition = 2 if self.sampler == "langevin" else self.leapfrog_steps + 1
        return batch * (self.mcmc_steps * per_transition + 1)

    def _log_target_and_grad(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """log p(x, z) and its z-gradient, theta held fixed: (B, m) -> (B,), (B, m)."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = log_joint(self.decoder, x, z.unsqueeze(1)).squeeze(1)
            (g,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), g

    def _randn(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.gen, dtype=like.dtype, device=like.device)

    def _mala(self, x: Tensor, z: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """One MALA transition per point; eps (B, 1). Returns new z and acceptance probabilities."""
        lp, g = self._log_target_and_grad(x, z)
        prop = z + 0.5 * eps**2 * g + eps * self._randn(z)
        lp_p, g_p = self._log_target_and_grad(x, prop)
        fwd = -((prop - z - 0.5 * eps**2 * g) ** 2).sum(-1) / (2 * eps[:, 0] ** 2)
        bwd = -((z - prop - 0.5 * eps**2 * g_p) ** 2).sum(-1) / (2 * eps[:, 0] ** 2)
        log_a = (lp_p + bwd - lp - fwd).nan_to_num(nan=-math.inf)
        return self._accept(z, prop, log_a)

    def _hmc(self, x: Tensor, z: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """One HMC transition (leapfrog) per point, unit mass."""
        p0 = self._randn(z)
        lp0, g = self._log_target_and_grad(x, z)
        q, p = z, p0 + 0.5 * eps * g
        for i in range(self.leapfrog_steps):
            q = q + eps * p
            lp, g = self._log_target_and_grad(x, q)
            p = p + (eps if i < self.leapfrog_steps - 1 else 0.5 * eps) * g
        log_a = (lp - 0.5 * (p**2).sum(-1) - lp0 + 0.5 * (p0**2).sum(-1)).nan_to_num(nan=-math.inf)
        return self._accept(z, q, log_a)

    def _accept(self, z: Tensor, prop: Tensor, log_a: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.rand(log_a.shape, generator=self.gen, dtype=log_a.dtype, device=log_a.device)
        take = u.log() < log_a
        return torch.where(take.unsqueeze(-1), prop, z), log_a.clamp(max=0.0).exp()

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        z = self.chains[idx].to(x.dtype)
        log_step = self.log_step[idx]
        visits = self.visits[idx]
        acc_sum = torch.zeros_like(log_step)
        move = self._mala if self.sampler == "langevin" else self._hmc
        for _ in range(self.mcmc_steps):
            z, acc = move(x, z, log_step.exp().unsqueeze(-1).to(x.dtype))
            visits = visits + 1
            # diminishing adaptation (gain ~ t^-0.6): with a constant gain the step size would be a function
            # of the chain's own recent states, and the chain would no longer target p(z | x)
            gain = self.adapt_rate * visits.pow(-0.6)
            log_step = log_step + gain * (acc.to(log_step.dtype) - self.target_accept)
            acc_sum += acc.to(acc_sum.dtype)
        self.chains[idx] = z.to(self.chains.dtype)
        self.log_step[idx] = log_step.clamp(-12.0, 2.0)
        self.visits[idx] = visits
        q = log_joint(self.decoder, x, z.detach().unsqueeze(1)).squeeze(1).mean()
        return Objective(q, float(q.detach()), {"accept": float(acc_sum.mean() / self.mcmc_steps),
                                       "step_size": float(log_step.exp().mean())})

    def inferred_latents(self, x: Tensor) -> Tensor | None:
        """Current chain states of the first rows (the live plot shows training points)."""
        return self.chains[: x.shape[0]].to(x.dtype)
