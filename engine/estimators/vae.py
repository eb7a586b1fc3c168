"""The VAE for the model (`vae`, `iwae`): encoder q_phi(z | x) = N(mu_phi(x), diag s_phi(x)^2).

ELBO (Kingma & Welling 2014), with the KL to N(0, I) in closed form and one reparameterised draw
z = mu + s * eps:
    ELBO(x) = E_q log p_theta(x | z) - KL(q || p),  KL = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2).
The trained objective is E_q log p(x | z) - beta_t KL with beta_t ramped linearly over the warm-up.

IWAE_K (Burda et al. 2015):  L_K(x) = E log (1/K) sum_k w_k,  w_k = p_theta(x, z_k) / q_phi(z_k | x);
L_1 = ELBO <= L_K <= L_{K+1} <= log p(x). The encoder gradient is either the plain reparameterised one
or DReG (Tucker et al. 2019): sum_k w~_k^2 d log w_k / d z_k * d z_k / d phi, with q's parameters
stopped inside log w, which removes the score-function term whose variance grows with K.

sigma: learned by gradient (with the decoder's floor), or set every step in closed form to its optimum
given the draws, sigma^2 = mean squared reconstruction error (the calibrated decoder, "sigma-VAE").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import EstimatorConfig
from ..likelihood.importance import log_mean_exp
from ..model import LOG_2PI, log_joint, log_likelihood, log_prior
from ..networks import Decoder, Encoder
from .base import Estimator, Objective


def gaussian_kl_to_prior(mu: Tensor, log_s: Tensor) -> Tensor:
    """KL(N(mu, diag s^2) || N(0, I)) per row: (B, m) -> (B,)."""
    return 0.5 * (mu.pow(2) + (2 * log_s).exp() - 1.0 - 2 * log_s).sum(-1)


def log_q(z: Tensor, mu: Tensor, log_s: Tensor) -> Tensor:
    """log N(z; mu, diag s^2): z (B, K, m), mu and log_s (B, m) -> (B, K)."""
    r = (z - mu.unsqueeze(1)) / log_s.exp().unsqueeze(1)
    return -0.5 * r.pow(2).sum(-1) - log_s.sum(-1, keepdim=True) - 0.5 * z.shape[-1] * LOG_2PI


def elbo(decoder: Decoder, encoder: Encoder, x: Tensor, gen: torch.Generator | None, beta: float = 1.0,
         draws: int = 1) -> Tensor:
    """ELBO per point with `draws` reparameterised draws and the analytic KL: (B, n) -> (B,)."""
    mu, log_s = encoder(x)
    eps = torch.randn(x.shape[0], draws, mu.shape[-1], generator=gen, dtype=x.dtype, device=x.device)
    z = mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps  # (B, K, m)
    rec = log_likelihood(x.unsqueeze(1), decoder.mean(z), decoder.sigma()).mean(1)
    return rec - beta * gaussian_kl_to_prior(mu, log_s)


def iwae_log_weights(decoder: Decoder, encoder: Encoder, x: Tensor, K: int,
                     gen: torch.Generator | None) -> Tensor:
    """log w_k = log p(x, z_k) - log q(z_k | x) with reparameterised z_k: (B, n) -> (B, K)."""
    mu, log_s = encoder(x)
    eps = torch.randn(x.shape[0], K, mu.shape[-1], generator=gen, dtype=x.dtype, device=x.device)
    z = mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps
    return log_joint(decoder, x, z) - log_q(z, mu, log_s)


def iwae_bound(decoder: Decoder, encoder: Encoder, x: Tensor, K: int, gen: torch.Generator | None) -> Tensor:
    """IWAE_K per point: (B, n) -> (B,)."""
    return log_mean_exp(iwae_log_weights(decoder, encoder, x, K, gen))


class VariationalAutoencoder(Estimator):
    """`vae` (ELBO) and `iwae` (importance-weighted bound with K draws; optional DReG)."""

    def __init__(self, decoder: Decoder, n_train: int, cfg: EstimatorConfig, gen: torch.Generator):
        super().__init__(decoder, n_train)
        self.name = cfg.name
        self.value_label = "ELBO" if cfg.name == "vae" else f"IWAE bound (K = {cfg.samples})"
        self.K = 1 if cfg.name == "vae" else cfg.samples
        self.beta, self.warmup, self.dreg = cfg.beta, cfg.warmup_steps, cfg.dreg and cfg.name == "iwae"
        self.closed_form_sigma = cfg.vae_sigma == "closed_form"
        self.gen = gen
        self.encoder = Encoder(decoder.n, decoder.m, tuple(cfg.encoder_hidden), decoder.activation)
        if self.closed_form_sigma:
            decoder.rho.requires_grad_(False)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return super().trainable_parameters() + list(self.encoder.parameters())

    def beta_at(self, step: int) -> float:
        return self.beta * min(1.0, step / self.warmup) if self.warmup > 0 else self.beta

    def _calibrate_sigma(self, x: Tensor, z: Tensor) -> None:
        """sigma^2 = mean squared residual (per coordinate for a per-dimension sigma)."""
        with torch.no_grad():
            sq = (x.unsqueeze(1) - self.decoder.mean(z)).pow(2)  # (B, K, n)
            s2 = sq.mean((0, 1)) if self.decoder.sigma_mode == "per_dim" else sq.mean()
            self.decoder.set_sigma(s2.sqrt())

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        mu, log_s = self.encoder(x)  # (B, m) each
        eps = torch.randn(x.shape[0], self.K, mu.shape[-1], generator=self.gen, dtype=x.dtype, device=x.device)
        z = mu.unsqueeze(1) + log_s.exp().unsqueeze(1) * eps  # (B, K, m)
        if self.closed_form_sigma:
            self._calibrate_sigma(x, z)
        if self.name == "vae":
            beta = self.beta_at(step)
            rec = log_likelihood(x.unsqueeze(1), self.decoder.mean(z), self.decoder.sigma()).mean(1)
            kl = gaussian_kl_to_prior(mu, log_s)
            surrogate = (rec - beta * kl).mean()
            value = float((rec - kl).mean().detach())
            return Objective(surrogate, value, {"kl": float(kl.mean().detach()), "beta": beta})
        if not self.dreg:
            lw = log_joint(self.decoder, x, z) - log_q(z, mu, log_s)  # (B, K)
            bound = log_mean_exp(lw).mean()
            return Objective(bound, float(bound.detach()))
        # DReG: decoder gradient from the bound with z held fixed; encoder gradient only through z
        lw_dec = log_joint(self.decoder, x, z.detach()) - log_q(z.detach(), mu.detach(), log_s.detach())
        bound = log_mean_exp(lw_dec).mean()
        params = {k: v.detach() for k, v in self.decoder.named_parameters()}
        mean_z = torch.func.functional_call(self.decoder, params, (z,))
        lw_enc = (log_likelihood(x.unsqueeze(1), mean_z, self.decoder.sigma().detach())
                  + log_prior(z) - log_q(z, mu.detach(), log_s.detach()))
        w = torch.softmax(lw_dec, -1).detach()
        surrogate = bound + (w.pow(2) * lw_enc).sum(-1).mean() - (w.pow(2) * lw_enc).sum(-1).mean().detach()
        return Objective(surrogate, float(bound.detach()))

    def inferred_latents(self, x: Tensor) -> Tensor:
        """Encoder means."""
        with torch.no_grad():
            return self.encoder(x)[0]
