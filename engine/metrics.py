"""The metrics record of a finished run, all in nats per point on the same held-out points.

heldout_loglik ± se (the one evaluator), true_heldout_loglik and gap_to_truth = truth - fit (positive:
the fit explains the held-out data worse than the generator did), sigma (or why it is not identified),
latent recovery, for a VAE the held-out ELBO and IWAE bound (so ELBO -> IWAE_K -> log p(x) -> truth is
visible), and the closed-form PPCA optimum as the best linear-Gaussian reference.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .estimators.vae import elbo, iwae_bound
from .evaluate import (
    CHUNK_POINTS,
    ProgressFraction,
    ScoringStopped,
    StopFn,
    as_float64,
    heldout_loglik,
    latent_scores,
    posterior_means,
    scored_rows,
    sigma_report,
)
from .ppca import gaussian_loglik, linear_mle
from .simulate import Dataset
from .trainer import RunResult


def _paired_se(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    return float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")


@torch.no_grad()
def vae_bounds(result: RunResult, x: np.ndarray, K: int, seed: int,
               should_stop: StopFn | None = None) -> dict[str, float]:
    """Held-out ELBO (16 draws per point, averaged) and IWAE_K of a fitted VAE."""
    dec, enc = as_float64(result.decoder), as_float64(result.encoder)
    device = next(dec.parameters()).device
    xt = torch.as_tensor(x, dtype=torch.float64, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    e, w = [], []
    for xb in xt.split(CHUNK_POINTS):
        if should_stop is not None and should_stop():
            raise ScoringStopped
        e.append(elbo(dec, enc, xb, gen, draws=16))
        w += [iwae_bound(dec, enc, xk, K, gen) for xk in xb.split(max(1, 2**20 // (K * dec.n)))]
    return {"heldout_elbo": float(torch.cat(e).mean()), f"heldout_iwae_{K}": float(torch.cat(w).mean()),
            "iwae_k": K}


def overfitting_warning(history: list[dict[str, float]]) -> str | None:
    """The Mattei-Frellsen signature in the curves: the training objective ends above where it stood at the
    best held-out evaluation while the held-out log-likelihood ends more than 0.1 nats below its best."""
    evals = [r for r in history if math.isfinite(r["heldout"])]
    if len(evals) < 3:
        return None
    best = max(evals, key=lambda r: r["heldout"])
    last = evals[-1]
    if best["heldout"] - last["heldout"] > 0.1 and last["objective"] > best["objective"]:
        return (f"held-out log-likelihood fell from {best['heldout']:.3f} (step {best['step']}) to "
                f"{last['heldout']:.3f} while the training objective rose: overfitting or the degenerate "
                "likelihood of a Gaussian decoder (sigma -> 0); use early stopping (patience) or a sigma floor")
    return None


def score_run(result: RunResult, data: Dataset, test: Dataset | None = None,
              on_progress: ProgressFraction | None = None, should_stop: StopFn | None = None) -> dict[str, Any]:
    """Metrics of a fitted run on its held-out points (the test set if given, else its validation split; above
    SCORE_POINTS a seeded subsample of them, the same for every metric). `on_progress(fraction)` as the
    scoring goes; `should_stop()` between chunks ends it early with the metrics that need no scoring and
    `scoring_stopped` set (`evaluate --run` scores the saved run later)."""
    full = test if test is not None else data.subset(result.heldout_idx)
    rows = scored_rows(len(full), result.seed)  # heldout_loglik takes the same subsample of full.x
    held = full if rows is None else full.subset(rows)
    n_heldout = len(full)
    seed = result.seed
    out: dict[str, Any] = {
        "n_heldout": n_heldout, **sigma_report(result.decoder), "sigma_min": result.decoder.sigma_min,
        "sigma_at_floor": result.decoder.at_floor(), "estimator": result.config.estimator.name,
        "status": result.status, "steps": result.steps_done, "wall_time": result.wall_time, "warnings": [],
        "convergence": result.convergence,
    }
    if test is None and np.array_equal(result.heldout_idx, result.train_idx):
        out["warnings"].append("no held-out points (val_fraction = 0 and no test set): scored on the training "
                               "points, which flatters the fit")
    kept = result.convergence.get("best_step")
    overfit = None if kept is not None and kept != result.steps_done else overfitting_warning(result.history)
    if overfit:  # a run that kept its best state has already undone what came after it
        out["warnings"].append(overfit)
    if out["sigma_at_floor"]:
        out["warnings"].append(f"sigma sits at its floor sigma_min = {result.decoder.sigma_min:.3g}: the "
                               "likelihood is being driven towards its degenerate supremum")
    if not out["sigma_identified"]:
        out["warnings"].append(out["sigma_note"])
    parts = ["fit"] + (["truth"] if held.truth is not None else []) + (["latents"] if held.z is not None else [])
    parts += ["vae"] if result.encoder is not None else []

    def progress(part: str) -> ProgressFraction | None:
        if on_progress is None:
            return None
        k = parts.index(part)
        return lambda f: on_progress((k + f) / len(parts))

    try:
        fit = heldout_loglik(result.decoder, full.x, seed=seed, on_progress=progress("fit"), should_stop=should_stop)
        result.heldout_per_point = fit.per_point  # for paired comparisons between runs (select-m)
        out.update({"heldout_loglik": fit.mean, "heldout_loglik_se": fit.se, "n_scored": len(held),
                    "heldout_method": fit.method, "heldout_details": fit.details})
        out["warnings"] += fit.warnings
        truth = held.truth
        if truth is not None:
            tru = heldout_loglik(truth, full.x, seed=seed, on_progress=progress("truth"), should_stop=should_stop)
            out["true_heldout_loglik"] = tru.mean
            out["true_heldout_loglik_se"] = tru.se
            out["gap_to_truth"] = tru.mean - fit.mean
            out["gap_to_truth_se"] = _paired_se(tru.per_point, fit.per_point)
            out["true_sigma"] = truth.noise_sigma if truth.sigma_identified else None
        if held.z is not None:
            z_hat = posterior_means(result.decoder, held.x, seed=seed, on_progress=progress("latents"),
                                    should_stop=should_stop)
            out.update(latent_scores(held.z, z_hat))
        if result.encoder is not None:
            K = result.config.estimator.samples if result.config.estimator.name == "iwae" else 64
            out.update(vae_bounds(result, held.x, max(K, 2), seed, should_stop))
    except ScoringStopped:
        out["scoring_stopped"] = True
        out["warnings"].append("scoring stopped by the user: the held-out metrics are missing; "
                               "`evaluate --run RUN_DIR --data FILE` scores the saved run's log-likelihood")
        return out
    try:  # the best linear model on the same columns: standardised ones when the run standardised
        dec = result.decoder
        s = dec.data_scale.double().cpu().numpy() if dec.preprocess == "standardize" else np.ones(data.n)
        mean, cov = linear_mle(data.x[result.train_idx] / s, result.decoder.m)
        result.ppca_per_point = gaussian_loglik(held.x / s, mean, cov) - np.log(s).sum()
        out["ppca_heldout_loglik"] = float(result.ppca_per_point.mean())
    except (ValueError, np.linalg.LinAlgError) as e:
        out["warnings"].append(f"no PPCA reference: {e}")
    return out


COMPARE_COLUMNS = ("estimator", "status", "heldout_loglik", "heldout_loglik_se", "gap_to_truth", "sigma",
                   "procrustes_r2", "mcc", "wall_time", "steps", "elbo_gap", "iwae_gap", "message")


def compare_row(name: str, metrics: dict[str, Any], status: str, message: str = "") -> dict[str, Any]:
    """One table row; for a VAE the gap split ELBO -> IWAE_K -> log p(x) (-> truth is gap_to_truth)."""
    row = {c: metrics.get(c) for c in COMPARE_COLUMNS}
    row.update(estimator=name, status=status, message=message)
    if "heldout_elbo" in metrics and "heldout_loglik" in metrics:
        row["elbo_gap"] = metrics["heldout_loglik"] - metrics["heldout_elbo"]
        row["iwae_gap"] = metrics["heldout_loglik"] - metrics[f"heldout_iwae_{metrics['iwae_k']}"]
    return row
