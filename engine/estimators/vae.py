"""The VAE bounds for the model: encoder q_phi(z | x) = N(mu_phi(x), diag s_phi(x)^2), draws reparameterised.

Two estimators, each named by the bound it maximises (as Pyro names its `Trace_ELBO`, `RenyiELBO`):
`ELBOVAE` (`vae`) and `IWAE` (`iwae`), on a common `EncoderEstimator` (the encoder, its parameters, the
inferred latents, the closed-form sigma). Both compute their objective with the module-level functions
below, which the tests check against exact references.

Draws: z_k = mu + s * eps_k, eps_k ~ N(0, I_m), k = 1..K, one (B, K, m) block from the run's generator.

ELBO (Kingma & Welling 2014), with the KL to N(0, I) in closed form:
    ELBO(x) = E_q log p_theta(x | z) - KL(q || p),  KL = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2).
`ELBOVAE` trains E_q log p(x | z) - beta_t KL with beta_t ramped linearly over the warm-up, and reports the
ELBO itself (beta = 1); both from the same terms (`elbo_terms`).

IWAE_K (Burda et al. 2015):  L_K(x) = E log (1/K) sum_k w_k,  w_k = p_theta(x, z_k) / q_phi(z_k | x);
L_1 = ELBO <= L_K <= L_{K+1} <= log p(x). The encoder gradient is either the plain reparameterised one
or, with `dreg`, DReG (Tucker et al. 2019): sum_k w~_k^2 d log w_k / d z_k * d z_k / d phi, with q's
parameters stopped inside log w, which removes the score-function term whose variance grows with K
(`dreg_surrogate`).

sigma: learned by gradient (with the decoder's floor), or set every step in closed form to its optimum
given the draws, sigma^2 = mean squared reconstruction error (the calibrated decoder, "sigma-VAE").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..estimator_table import objective_label
from ..likelihood.importance import log_mean_exp
from ..model import LOG_2PI, log_joint, log_likelihood
from ..networks import Decoder, Encoder
from ..ppca import LinearStart
from .base import Estimator, Objective


class Draws(NamedTuple):
    """The encoder's output for a batch and K reparameterised draws from it."""

    mu: Tensor  # (B, m)
    log_s: Tensor  # (B, m)
    z: Tensor  # (B, K, m), z = mu + s * eps


def draw_latents(encoder: Encoder, x: Tensor, K: int, gen: torch.Generator | None) -> Draws:
    """Encode x (B, n) and draw z_k = mu + s * eps_k, eps (B, K, m) ~ N(0, I) from `gen` in one call."""
    mu, log_s = encoder(x)
    eps = torch.randn(x.shape[0], K, mu.shape[-1], generator=gen, dtype=x.dtype, device=x.device)
    return Draws(mu, log_s, mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps)


def gaussian_kl_to_prior(mu: Tensor, log_s: Tensor) -> Tensor:
    """KL(N(mu, diag s^2) || N(0, I)) per row: (B, m) -> (B,)."""
    return 0.5 * (mu.pow(2) + (2 * log_s).exp() - 1.0 - 2 * log_s).sum(-1)


def log_q(z: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
    """log N(z; mu, diag s^2): z (B, K, m), mu and log_s (B, m) -> (B, K)."""
    r = (z - mu.unsqueeze(1)) / log_s.exp().unsqueeze(1)
    return -0.5 * r.pow(2).sum(-1) - log_s.sum(-1, keepdim=True) - 0.5 * z.shape[-1] * LOG_2PI


def elbo_terms(decoder: Decoder, x: Tensor, d: Draws) -> tuple[Tensor, Tensor]:
    """The ELBO's two terms per point on given draws: (rec, kl), each (B,), ELBO_beta = rec - beta * kl.

    rec = (1/K) sum_k log p_theta(x | z_k), the Monte Carlo estimate of E_q log p(x | z);
    kl = KL(q(z | x) || N(0, I)) in closed form.
    """
    rec = log_likelihood(x.unsqueeze(1), decoder.mean(d.z), decoder.sigma()).mean(1)  # (B, K) -> (B,)
    return rec, gaussian_kl_to_prior(d.mu, d.log_s)


def elbo(decoder: Decoder, encoder: Encoder, x: Tensor, gen: torch.Generator | None, beta: float = 1.0,
         draws: int = 1) -> Tensor:
    """ELBO per point with `draws` reparameterised draws and the analytic KL: (B, n) -> (B,)."""
    rec, kl = elbo_terms(decoder, x, draw_latents(encoder, x, draws, gen))
    return rec - beta * kl


def log_weights(decoder: Decoder, x: Tensor, d: Draws) -> Tensor:
    """log w_k = log p(x, z_k) - log q(z_k | x) on given draws: x (B, n) -> (B, K)."""
    return log_joint(decoder, x, d.z) - log_q(d.z, d.mu, d.log_s)


def iwae_bound_at(decoder: Decoder, x: Tensor, d: Draws) -> Tensor:
    """IWAE_K per point on given draws: log (1/K) sum_k w_k, x (B, n) -> (B,)."""
    return log_mean_exp(log_weights(decoder, x, d))


def iwae_bound(decoder: Decoder, encoder: Encoder, x: Tensor, K: int, gen: torch.Generator | None) -> Tensor:
    """IWAE_K per point with K reparameterised draws: (B, n) -> (B,)."""
    return iwae_bound_at(decoder, x, draw_latents(encoder, x, K, gen))


class _StoppedDecoder:
    """The decoder with its parameters and sigma stopped (the model protocol of `log_joint`): a gradient
    through it reaches only z."""

    def __init__(self, decoder: Decoder):
        self.n, self.m = decoder.n, decoder.m
        self._decoder = decoder
        self._params = {k: v.detach() for k, v in decoder.named_parameters()}
        self._sigma = decoder.sigma().detach()

    def mean(self, z: Tensor) -> Tensor:
        return torch.func.functional_call(self._decoder, self._params, (z,))

    def sigma(self) -> Tensor:
        return self._sigma


def dreg_surrogate(decoder: Decoder, x: Tensor, d: Draws) -> tuple[Tensor, Tensor]:
    """The DReG surrogate of IWAE_K and the bound itself, both averaged over the batch: (scalar, scalar).

    bound = mean_b log (1/K) sum_k w_k with the draws detached: its gradient is the decoder's,
    sum_k w~_k d log p_theta(x, z_k) / d theta.
    surrogate = bound + S - sg(S),  S = mean_b sum_k sg(w~_k^2) log w_k(z_k(phi)), with the decoder's
    parameters and q's parameters inside log q stopped: its encoder gradient is
    sum_k w~_k^2 d log w_k / d z_k * d z_k / d phi. The surrogate's value equals the bound's.
    """
    mu, log_s = d.mu.detach(), d.log_s.detach()
    lw_dec = log_weights(decoder, x, Draws(mu, log_s, d.z.detach()))  # (B, K), gradient to theta only
    bound = log_mean_exp(lw_dec).mean()
    lw_enc = log_weights(_StoppedDecoder(decoder), x, Draws(mu, log_s, d.z))  # (B, K), gradient through z only
    w = torch.softmax(lw_dec, -1).detach()  # w~_k, normalised weights (B, K)
    score = (w.pow(2) * lw_enc).sum(-1).mean()
    return bound + score - score.detach(), bound


class EncoderEstimator(Estimator):
    """What `ELBOVAE` and `IWAE` share: the encoder q_phi(z | x), its draws (K per point) from the run's
    generator, and the optional closed-form sigma, set from each step's draws before the bound."""

    def __init__(self, decoder: Decoder, n_train: int, K: int, gen: torch.Generator,
                 encoder_hidden: tuple[int, ...], closed_form_sigma: bool):
        super().__init__(decoder, n_train)
        self.K = K
        self.closed_form_sigma = closed_form_sigma
        self.gen = gen
        normalise = decoder.preprocess != "none"
        self.encoder = Encoder(decoder.n, decoder.m, tuple(encoder_hidden), decoder.activation,
                               decoder.data_shift if normalise else None, decoder.data_scale if normalise else None)
        if self.closed_form_sigma:
            decoder.rho.requires_grad_(False)

    def decoder_rows(self, batch: int) -> int:
        return batch * (self.K + 1)  # K draws through the decoder, the batch through the encoder

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return super().trainable_parameters() + list(self.encoder.parameters())

    def start_from(self, start: LinearStart, y_train: np.ndarray) -> None:
        """The encoder at the linear model's exact posterior, which it represents exactly (`Encoder.start_from`):
        the ELBO starts equal to log p(x)."""
        self.encoder.start_from(start)

    def _calibrate_sigma(self, x: Tensor, z: Tensor) -> None:
        """sigma^2 = mean squared residual in y's units (per coordinate for a per-dimension sigma)."""
        with torch.no_grad():
            resid = x.unsqueeze(1) - self.decoder.mean(z)  # (B, K, n)
            if self.decoder.preprocess == "standardize":
                resid = resid / self.decoder.data_scale
            sq = resid.pow(2)
            s2 = sq.mean((0, 1)) if self.decoder.sigma_mode == "per_dim" else sq.mean()
            self.decoder.set_sigma(s2.sqrt())

    def draws(self, x: Tensor) -> Draws:
        """This step's K draws per point (B, K, m); sets the closed-form sigma from them when enabled."""
        d = draw_latents(self.encoder, x, self.K, self.gen)
        if self.closed_form_sigma:
            self._calibrate_sigma(x, d.z)
        return d

    def inferred_latents(self, x: Tensor) -> Tensor:
        """Encoder means."""
        with torch.no_grad():
            return self.encoder(x)[0]


class ELBOVAE(EncoderEstimator):
    """`vae`: the ELBO with one draw and the analytic KL; KL weight beta_t = beta min(1, t / warmup)."""

    name = "vae"

    def __init__(self, decoder: Decoder, n_train: int, gen: torch.Generator, encoder_hidden: tuple[int, ...],
                 beta: float = 1.0, warmup_steps: int = 0, closed_form_sigma: bool = False):
        super().__init__(decoder, n_train, 1, gen, encoder_hidden, closed_form_sigma)
        self.beta, self.warmup = beta, warmup_steps

    def beta_at(self, step: int) -> float:
        return self.beta * min(1.0, step / self.warmup) if self.warmup > 0 else self.beta

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        """Surrogate mean(rec - beta_t kl); value the ELBO mean(rec - kl); logs the mean KL and beta_t."""
        beta = self.beta_at(step)
        rec, kl = elbo_terms(self.decoder, x, self.draws(x))  # (B,) each
        surrogate = (rec - beta * kl).mean()
        value = float((rec - kl).mean().detach())
        return Objective(surrogate, value, {"kl": float(kl.mean().detach()), "beta": beta})


class IWAE(EncoderEstimator):
    """`iwae`: IWAE_K with K draws per point; the encoder gradient plain reparameterised or DReG."""

    name = "iwae"

    def __init__(self, decoder: Decoder, n_train: int, K: int, gen: torch.Generator,
                 encoder_hidden: tuple[int, ...], dreg: bool = False, closed_form_sigma: bool = False):
        super().__init__(decoder, n_train, K, gen, encoder_hidden, closed_form_sigma)
        self.dreg = dreg

    @property
    def value_label(self) -> str:
        return objective_label(self.name, self.K)

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        """Value mean_b IWAE_K(x_b); surrogate the bound itself, or its DReG surrogate (same value)."""
        d = self.draws(x)
        if self.dreg:
            surrogate, bound = dreg_surrogate(self.decoder, x, d)
            return Objective(surrogate, float(bound.detach()))
        bound = iwae_bound_at(self.decoder, x, d).mean()  # (B,) -> scalar
        return Objective(bound, float(bound.detach()))
