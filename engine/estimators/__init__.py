"""Training objectives: direct MLE (four estimators of log p(x)) and the VAE bounds."""

from __future__ import annotations

import torch

from ..config import EstimatorConfig, resolved_nodes
from ..networks import Decoder
from .base import Estimator, Objective
from .importance import ImportanceSamplingMLE
from .mcem import MonteCarloEM
from .quadrature import AdaptiveGaussHermiteMLE, GaussHermiteMLE
from .vae import ELBOVAE, IWAE

# one line each: what the objective is, its bias and its cost (shown in the GUI and the docs)
SUMMARIES = {
    "mle-quadrature": ("log Σ_g w_g p(x | u_g), fixed Gauss-Hermite grid",
                       "exact as nodes grow; biased when p(z|x) is narrower than the grid; cost nodes^m"),
    "mle-adaptive": ("log Σ_g w_g p(x, μ+Lu_g)/N(u_g), grid at each posterior mode",
                     "exact for Gaussian posteriors, misses other modes; cost nodes^m + Newton steps"),
    "mle-importance": ("log (1/K) Σ_k p(x, z_k)/q(z_k|x)",
                       "lower bound in expectation, bias ~ Var(w)/2K; cost K decoder passes"),
    "mle-mcem": ("E_{p(z|x)} ∇ log p(x, z) by persistent MCMC chains",
                 "unbiased once chains mix; cost steps × (leapfrog) gradient passes"),
    "vae": ("ELBO = E_q log p(x|z) − KL(q ‖ p)",
            "biased by KL(q ‖ p(z|x)); cost one draw + encoder"),
    "iwae": ("IWAE_K = E log (1/K) Σ_k p(x, z_k)/q(z_k|x)",
             "tighter than the ELBO, bias → 0 as K grows; cost K draws + encoder"),
}


def build_estimator(cfg: EstimatorConfig, decoder: Decoder, n_train: int, gen: torch.Generator) -> Estimator:
    """The estimator named in the config, bound to the decoder and the training-set size."""
    if cfg.name == "mle-quadrature":
        return GaussHermiteMLE(decoder, n_train, resolved_nodes(cfg, decoder.m))
    if cfg.name == "mle-adaptive":
        return AdaptiveGaussHermiteMLE(decoder, n_train, resolved_nodes(cfg, decoder.m))
    if cfg.name == "mle-importance":
        return ImportanceSamplingMLE(decoder, n_train, cfg.samples, cfg.proposal, gen)
    if cfg.name == "mle-mcem":
        return MonteCarloEM(decoder, n_train, cfg.sampler, cfg.mcmc_steps, cfg.leapfrog_steps,
                            cfg.target_accept, gen)
    closed_form_sigma = cfg.vae_sigma == "closed_form"
    if cfg.name == "vae":
        return ELBOVAE(decoder, n_train, gen, cfg.encoder_hidden, cfg.beta, cfg.warmup_steps, closed_form_sigma)
    return IWAE(decoder, n_train, cfg.samples, gen, cfg.encoder_hidden, cfg.dreg, closed_form_sigma)


__all__ = ["SUMMARIES", "Estimator", "Objective", "build_estimator"]
