"""Exact references for linear f: the Gaussian marginal and the probabilistic-PCA MLE.

Linear f(z) = A z + b gives X ~ N(b, A A^T + sigma^2 I). With S the 1/N sample covariance and
eigenvalues l_1 >= ... >= l_n, the PPCA MLE (Tipping & Bishop 1999) for m < n is
    mu = mean(x),  sigma^2 = mean(l_{m+1..n}),  W = U_m (L_m - sigma^2 I)^{1/2} R  (any orthogonal R),
    l_max / N = -1/2 [ n log 2 pi + sum_{j<=m} log l_j + (n - m) log sigma^2 + n ].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def gaussian_loglik(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x_i; mean, cov) per row: (N, n) -> (N,)."""
    n = x.shape[1]
    L = np.linalg.cholesky(cov)
    sol = np.linalg.solve(L, (x - mean).T)  # (n, N)
    return -0.5 * (sol**2).sum(0) - np.log(np.diag(L)).sum() - 0.5 * n * math.log(2 * math.pi)


@dataclass
class PPCAFit:
    mean: np.ndarray  # (n,)
    W: np.ndarray  # (n, m)
    sigma2: float
    loglik_per_point: float  # the maximised average log-likelihood on the fitted data

    def covariance(self) -> np.ndarray:
        return self.W @ self.W.T + self.sigma2 * np.eye(self.W.shape[0])


def ppca_mle(x: np.ndarray, m: int) -> PPCAFit:
    """Closed-form PPCA maximum-likelihood fit with m < n latent dimensions."""
    N, n = x.shape
    if not 1 <= m < n:
        raise ValueError(f"m: got {m}; PPCA's closed form needs 1 <= m < n = {n}")
    mean = x.mean(0)
    S = (x - mean).T @ (x - mean) / N
    lam, U = np.linalg.eigh(S)
    lam, U = lam[::-1], U[:, ::-1]
    sigma2 = float(lam[m:].mean())
    if not sigma2 > 1e-12 * max(float(lam[0]), 1e-300):
        raise ValueError(f"the data lie in a {m}-dimensional subspace (sigma^2 = {sigma2:.3g}): PPCA's likelihood "
                         "is unbounded there (a constant column, or fewer independent columns than n - m)")
    W = U[:, :m] * np.sqrt(np.maximum(lam[:m] - sigma2, 0.0))
    ll = -0.5 * (n * math.log(2 * math.pi) + np.log(lam[:m]).sum() + (n - m) * math.log(sigma2) + n)
    return PPCAFit(mean, W, sigma2, float(ll))
