"""Reliability diagnostics of importance weights: effective sample size and Pareto-smoothed k-hat.

ESS = (sum w)^2 / sum w^2. k-hat is the shape of a generalised Pareto distribution fitted to the
largest weights (Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed importance sampling");
k-hat < 0.5: reliable, 0.5-0.7: usable with care, > 0.7: the estimate cannot be trusted.
The fit is Zhang & Stephens' (2009) profile-likelihood estimator with the weakly informative prior of
the PSIS paper (as in ArviZ and Stan).
"""

from __future__ import annotations

import numpy as np

KHAT_WARN = 0.7


def effective_sample_size(logw: np.ndarray) -> np.ndarray:
    """(B, K) log weights -> (B,) ESS in [1, K]."""
    w = np.exp(logw - logw.max(-1, keepdims=True))
    return w.sum(-1) ** 2 / (w**2).sum(-1)


def _gpd_fit(x: np.ndarray) -> float:
    """Shape k of a generalised Pareto fitted to exceedances x > 0 (Zhang & Stephens 2009)."""
    x = np.sort(x)
    n = x.size
    prior_bs, prior_k = 3, 10
    m_est = 30 + int(np.sqrt(n))
    b = 1 - np.sqrt(m_est / (np.arange(1, m_est + 1) - 0.5))
    b = b / (prior_bs * x[int(n / 4 + 0.5) - 1]) + 1 / x[-1]
    k = np.log1p(-b[:, None] * x).mean(axis=1)
    len_scale = n * (np.log(-(b / k)) - k - 1)
    weights = 1 / np.exp(len_scale - len_scale[:, None]).sum(axis=1)
    real = weights >= 10 * np.finfo(float).eps
    weights, b = weights[real], b[real]
    weights /= weights.sum()
    b_post = (b * weights).sum()
    k_post = np.log1p(-b_post * x).mean()
    return float((n * k_post + prior_k * 0.5) / (n + prior_k))


def pareto_khat(logw: np.ndarray) -> np.ndarray:
    """(B, K) log weights -> (B,) k-hat of each point's largest M = min(K/5, 3 sqrt(K)) weights."""
    logw = np.atleast_2d(logw)
    B, K = logw.shape
    M = int(min(K / 5, 3 * np.sqrt(K)))
    out = np.full(B, np.nan)
    if M < 5:
        return out
    for i in range(B):
        lw = np.sort(logw[i] - logw[i].max())
        tail = lw[-M:]
        cutoff = lw[-M - 1]
        if not np.isfinite(cutoff) or np.all(tail == cutoff):
            out[i] = -np.inf
            continue
        exceed = np.exp(tail) - np.exp(cutoff)
        exceed = exceed[exceed > 0]
        if exceed.size < 5:
            out[i] = -np.inf
            continue
        out[i] = _gpd_fit(exceed)
    return out
