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


def linear_mle(x: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The linear-Gaussian MLE with m latents of x (N, n), as (mean, covariance): PPCA's for m < n, the sample
    Gaussian (1/N) for m >= n, where W W^T + sigma^2 I can be any covariance."""
    if m < x.shape[1]:
        pp = ppca_mle(x, m)
        return pp.mean, pp.covariance()
    mean = x.mean(0)
    return mean, (x - mean).T @ (x - mean) / len(x)


@dataclass
class LinearStart:
    """The linear-Gaussian model every fit starts from: g(z) = W z + mean, sigma^2, in y's units.

    For m < n it is PPCA's MLE with R = I, so W^T W = diag(l_j - sigma^2) and the exact posterior
        z | y ~ N(M^-1 W^T (y - mean), sigma^2 M^-1),   M = W^T W + sigma^2 I = diag(l_1..l_m),
    is a diagonal Gaussian (the mean-field encoder represents it exactly). For m >= n the MLE covariance is
    S itself and sigma only lies on a ridge (W W^T + sigma^2 I = S for any sigma^2 < l_n): sigma^2 is
    `ridge_sigma2`, W = U (L - sigma^2 I)^{1/2} and the latents beyond n start unused (zero columns)."""

    mean: np.ndarray  # (n,)
    W: np.ndarray  # (n, m)
    sigma2: float

    def posterior_precision_diag(self) -> np.ndarray:
        """diag(M) = column norms of W squared + sigma^2: (m,) (M is diagonal, W's columns are orthogonal)."""
        return (self.W**2).sum(0) + self.sigma2

    def posterior_mean(self, y: np.ndarray) -> np.ndarray:
        """E[z | y] = M^-1 W^T (y - mean): (N, n) -> (N, m)."""
        return (y - self.mean) @ self.W / self.posterior_precision_diag()

    def posterior_sd(self) -> np.ndarray:
        """Standard deviations of z | y, the same for every y: sqrt(sigma^2 / diag(M)), (m,)."""
        return np.sqrt(self.sigma2 / self.posterior_precision_diag())


def ridge_sigma2(lam: np.ndarray, default: float) -> float:
    """sigma^2 for m >= n, where the likelihood does not identify it: `default` (the decoder's usual start),
    at most half the smallest eigenvalue of S (so that every direction keeps a latent part)."""
    return float(min(default, 0.5 * lam[-1])) if lam[-1] > 0 else float(default)


def linear_start(y: np.ndarray, m: int, default_sigma2: float, sigma2_min: float = 0.0) -> LinearStart:
    """The closed-form linear fit with m latents of y (N, n) (see `LinearStart`): PPCA's MLE for m < n, S's
    Gaussian with sigma^2 = `ridge_sigma2` for m >= n; sigma^2 kept at least `sigma2_min` (the decoder's
    floor) and at least 1e-12 l_1 (degenerate data would otherwise give sigma^2 = 0 and a singular posterior)."""
    N, n = y.shape
    mean = y.mean(0)
    S = (y - mean).T @ (y - mean) / max(N, 1)
    lam, U = np.linalg.eigh(S)
    lam, U = np.maximum(lam[::-1], 0.0), U[:, ::-1]
    sigma2 = float(lam[m:].mean()) if m < n else ridge_sigma2(lam, default_sigma2)
    sigma2 = max(sigma2, sigma2_min, 1e-12 * max(float(lam[0]), 1e-300))
    k = min(m, n)
    W = np.zeros((n, m))
    W[:, :k] = U[:, :k] * np.sqrt(np.maximum(lam[:k] - sigma2, 0.0))
    return LinearStart(mean, W, sigma2)
