"""The one table of estimators: what each is, what it maximises, which settings it reads, what its live
latents are. The config, the CLI, the estimators and every GUI panel and view read it (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EstimatorInfo:
    name: str  # as in EstimatorConfig.name and on the command line
    family: str  # "mle": an estimate of log p(x) itself; "vae": a lower bound through an encoder q(z | x)
    label: str  # a few words: the combo box's tooltip, the panel's heading
    objective: str  # what its training value estimates, for plot axes and the history
    formula: str  # the objective, one line
    summary: str  # its bias and its cost, one line
    settings: frozenset[str]  # the EstimatorConfig fields it reads (the panel hides the others)
    latents: str  # what `Estimator.inferred_latents` returns for the live latents view


TABLE: tuple[EstimatorInfo, ...] = (
    EstimatorInfo("mle-quadrature", "mle", "direct MLE, fixed Gauss-Hermite grid", "log p(x)",
                  "log Σ_g w_g p(x | u_g), fixed Gauss-Hermite grid",
                  "exact as nodes grow; biased when p(z|x) is narrower than the grid; cost nodes^m",
                  frozenset({"nodes"}), "posterior means"),
    EstimatorInfo("mle-adaptive", "mle", "direct MLE, adaptive Gauss-Hermite", "log p(x)",
                  "log Σ_g w_g p(x, μ+Lu_g)/N(u_g), rule on each posterior",
                  "exact for Gaussian posteriors, misses other modes; cost the rule's points (nodes^m or fewer)",
                  frozenset({"nodes"}), "linearised posterior means"),
    EstimatorInfo("mle-importance", "mle", "direct MLE, importance sampling", "log p(x)",
                  "log (1/K) Σ_k p(x, z_k)/q(z_k|x)",
                  "lower bound in expectation, bias ~ Var(w)/2K; cost K decoder passes",
                  frozenset({"samples", "proposal"}), "posterior modes"),
    EstimatorInfo("mle-mcem", "mle", "direct MLE, Monte Carlo EM", "E_chain log p(x, z)",
                  "E_{p(z|x)} ∇ log p(x, z) by persistent MCMC chains",
                  "unbiased once chains mix; cost steps × (leapfrog) gradient passes",
                  frozenset({"sampler", "mcmc_steps", "leapfrog_steps", "target_accept"}), "MCMC chain states"),
    EstimatorInfo("vae", "vae", "variational autoencoder, ELBO", "ELBO",
                  "ELBO = E_q log p(x|z) − KL(q ‖ p)",
                  "biased by KL(q ‖ p(z|x)); cost one draw + encoder",
                  frozenset({"encoder_hidden", "beta", "warmup_steps", "vae_sigma"}), "encoder means"),
    EstimatorInfo("iwae", "vae", "importance-weighted autoencoder", "IWAE bound",
                  "IWAE_K = E log (1/K) Σ_k p(x, z_k)/q(z_k|x)",
                  "tighter than the ELBO, bias → 0 as K grows; cost K draws + encoder",
                  frozenset({"samples", "encoder_hidden", "dreg", "vae_sigma"}), "encoder means"),
)

INFO: dict[str, EstimatorInfo] = {e.name: e for e in TABLE}


def objective_label(name: str, samples: int | None = None) -> str:
    """What the estimator's training value estimates, with its K where the bound depends on it (iwae)."""
    info = INFO[name]
    if samples is not None and info.family == "vae" and "samples" in info.settings:
        return f"{info.objective} (K = {samples})"
    return info.objective
ESTIMATORS = tuple(e.name for e in TABLE)
MLE_ESTIMATORS = tuple(e.name for e in TABLE if e.family == "mle")
GRID_ESTIMATORS = tuple(e.name for e in TABLE if "nodes" in e.settings)  # Gauss-Hermite: nodes^m grid points
SAMPLING_ESTIMATORS = tuple(e.name for e in TABLE if "samples" in e.settings)  # K draws per point
