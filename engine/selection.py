"""Choosing the latent dimension m from held-out log-likelihoods.

The one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL 7.10): among the
candidate m, take the best held-out average log-likelihood ll(m*), then the smallest m whose shortfall
d(m) = ll(m*) - ll(m) is within one paired standard error of it,
    d(m) <= se(d(m)),   se(d) = sd_i(l_i(m*) - l_i(m)) / sqrt(N),
with l_i the per-point values on the same N held-out points (pairing removes the points' shared spread).
A larger m can only fit better in expectation when the model nests (g with one more latent can ignore it),
so the rule picks the simplest m that the data cannot tell from the best.

The rule compares finished fits: every candidate is fitted by one estimator (SELECT_M_ESTIMATOR, whose bias
does not change with m) from the linear start of its m until converged, and a candidate that still ends below
PPCA's held-out score at its m counts as PPCA (`candidate_scores`): the decoder class contains the linear model,
so an unfinished fit must not make its m look worse than a straight line (docs/math.md §8).

`suggest_m` applies it to the probabilistic-PCA closed form (Tipping & Bishop 1999) on a seeded split: a
quick, linear guess, used when data come without a true model and no m is given; `select-m` checks it with
the nonlinear model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RunConfig
from .ppca import gaussian_loglik, ppca_mle
from .simulate import Dataset
from .trainer import RunResult


@dataclass
class Choice:
    """The rule's result: the m chosen, the best m, and per candidate its mean, standard error, shortfall
    from the best and that shortfall's paired standard error."""

    chosen: int
    best: int
    rows: list[dict[str, float]]


def one_se_rule(per_point: dict[int, np.ndarray]) -> Choice:
    """The smallest m within one paired standard error of the best held-out log-likelihood.
    per_point: m -> (N,) per-point log-likelihoods on the same points."""
    if not per_point:
        raise ValueError("no candidate m has a held-out score")
    ms = sorted(per_point)
    means = {m: float(np.mean(per_point[m])) for m in ms}
    best = max(ms, key=lambda m: means[m])
    rows, chosen = [], None
    for m in ms:
        v = per_point[m]
        d = per_point[best] - v
        N = len(v)
        se = float(v.std(ddof=1) / math.sqrt(N)) if N > 1 else math.nan
        d_se = float(d.std(ddof=1) / math.sqrt(N)) if N > 1 else 0.0
        within = float(d.mean()) <= d_se
        if within and chosen is None:
            chosen = m
        rows.append({"m": m, "heldout_loglik": means[m], "heldout_loglik_se": se,
                     "shortfall": float(d.mean()), "shortfall_se": d_se, "within_one_se": within})
    return Choice(chosen if chosen is not None else best, best, rows)


def candidate_scores(result: RunResult) -> tuple[np.ndarray, bool]:
    """A candidate m's per-point held-out log-likelihoods, and whether they are the linear MLE's: the model class
    (a decoder with a linear path) contains the linear-Gaussian model of the same m, so its MLE scores at least
    as well as PPCA's; a fit that ends below PPCA's held-out mean is unfinished, and the candidate is then the
    linear fit it failed to improve on (scored on the same points)."""
    fit, linear = result.heldout_per_point, result.ppca_per_point
    if linear is not None and (fit is None or float(np.mean(linear)) > float(np.mean(fit))):
        return linear, True
    return fit, False


def choose_m(results: dict[str, RunResult]) -> Choice | None:
    """The one-SE rule over the runs of a select-m series ("m1", "m2", ...) that were scored, each candidate's
    scores by `candidate_scores`; None if none was scored."""
    per_point = {int(name[1:]): candidate_scores(r)[0] for name, r in results.items()
                 if r.heldout_per_point is not None and r.status != "failed"}
    return one_se_rule(per_point) if per_point else None


def suggest_m(x: np.ndarray, max_m: int = 6, seed: int = 0) -> Choice:
    """The one-SE rule on PPCA's held-out log-likelihood for m = 1..min(max_m, n - 1), on a seeded 80/20
    split of x (N, n). n = 1 (or too few points): m = 1."""
    N, n = x.shape
    top = min(max_m, n - 1)
    if top < 1 or N < 10:
        return Choice(1, 1, [])
    perm = np.random.default_rng(seed).permutation(N)
    held, fit = perm[: max(2, N // 5)], perm[max(2, N // 5):]
    per_point = {}
    for m in range(1, top + 1):
        try:
            pp = ppca_mle(x[fit], m)
            per_point[m] = gaussian_loglik(x[held], pp.mean, pp.covariance())
        except (ValueError, np.linalg.LinAlgError):  # a degenerate fit (the data lie in m dimensions)
            break
    return one_se_rule(per_point) if per_point else Choice(1, 1, [])


SELECT_M_ESTIMATOR = "mle-importance"  # one family for every m: its cost and bias do not change with m


def select_m_record(named: list[tuple[str, RunConfig]], rows: list[dict[str, Any]], results: dict[str, RunResult],
                    choice: Choice | None, data: Dataset) -> dict[str, Any]:
    """select_m.json: per m its estimator, status, held-out log-likelihood and standard error, the shortfall
    from the best with its paired standard error, PPCA's held-out log-likelihood and the run folder; the
    chosen and the best m; the true m when the data have one."""
    scored = {int(r["m"]): r for r in (choice.rows if choice else [])}
    candidates = []
    for (name, cfg), row in zip(named, rows, strict=False):
        m = cfg.decoder.m
        res = results.get(name)
        entry = {"m": m, "estimator": cfg.estimator.name, "status": row["status"], "run": name,
                 "message": row.get("message", ""),
                 "ppca_heldout_loglik": None if res is None else res.metrics.get("ppca_heldout_loglik"),
                 "fit_heldout_loglik": None if res is None else res.metrics.get("heldout_loglik"),
                 "linear_kept": res is not None and res.heldout_per_point is not None and candidate_scores(res)[1]}
        entry.update({k: v for k, v in scored.get(m, {}).items() if k != "m"})
        candidates.append(entry)
    return {"chosen_m": None if choice is None else choice.chosen, "best_m": None if choice is None else choice.best,
            "rule": "the smallest m whose held-out log-likelihood is within one paired standard error of the best; "
                    "a candidate's score is its fit's, or PPCA's at that m where the fit ended below it",
            "true_m": None if data.truth is None else data.truth.m, "candidates": candidates,
            "true_heldout_loglik": next((r.metrics.get("true_heldout_loglik") for r in results.values()), None)}


def select_m_chart(doc: dict[str, Any]) -> dict[str, Any]:
    """The PNG's chart: held-out log-likelihood +- SE against m, PPCA's beside it, the chosen m marked."""
    cands = doc["candidates"]
    fitted = [c.get("fit_heldout_loglik", c.get("heldout_loglik")) for c in cands]  # the fit's own, not the floor
    series = [{"label": "fitted (held-out ± SE)", "y": fitted,
               "err": [c.get("heldout_loglik_se") for c in cands], "color": "#1f77b4"},
              {"label": "PPCA (linear)", "y": [c.get("ppca_heldout_loglik") for c in cands], "err": None,
               "color": "#ff7f0e"}]
    if doc.get("true_heldout_loglik") is not None:
        series.append({"label": "true model", "y": [doc["true_heldout_loglik"]] * len(cands), "err": None,
                       "color": "#2ca02c"})
    return {"title": "held-out log-likelihood against the latent dimension", "x_label": "m",
            "y_label": "nats per point", "x": [c["m"] for c in cands], "series": series,
            "mark_x": doc["chosen_m"], "mark_label": f"chosen m = {doc['chosen_m']}"}
