"""Choosing the latent dimension m from held-out log-likelihoods.

The one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL 7.10): among the
candidate m, take the best held-out average log-likelihood ll(m*), then the smallest m whose shortfall
d(m) = ll(m*) - ll(m) is within one paired standard error of it,
    d(m) <= se(d(m)),   se(d) = sd_i(l_i(m*) - l_i(m)) / sqrt(N),
with l_i the per-point values on the same N held-out points (pairing removes the points' shared spread).
A larger m can only fit better in expectation when the model nests (g with one more latent can ignore it),
so the rule picks the simplest m that the data cannot tell from the best.

`suggest_m` applies it to the probabilistic-PCA closed form (Tipping & Bishop 1999) on a seeded split: a
quick, linear guess, used when data come without a true model and no m is given; `select-m` checks it with
the nonlinear model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ppca import gaussian_loglik, ppca_mle


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
