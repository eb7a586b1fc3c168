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


__all__ = ["Estimator", "Objective", "build_estimator"]
