"""Latent recovery scores. With a N(0, I) prior the latents are identified at best up to rotation,
so both scores align first:

Procrustes R^2: R = argmin_{R^T R = I} ||Zc_hat R - Zc||_F (R = U V^T from the SVD of Zc_hat^T Zc),
    R^2 = 1 - ||Zc - Zc_hat R||^2 / ||Zc||^2   (Zc, Zc_hat centred).
MCC: mean |Pearson correlation| of true and inferred coordinates after the optimal one-to-one matching
    (Hungarian algorithm), as in iVAE; meaningful only up to measure-preserving maps.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def procrustes_align(z_true: np.ndarray, z_hat: np.ndarray) -> np.ndarray:
    """z_hat (N, m_hat) rotated onto z_true (N, m) by the best (semi-)orthogonal map: -> (N, m)."""
    zt = z_true - z_true.mean(0)
    zh = z_hat - z_hat.mean(0)
    U, _, Vt = np.linalg.svd(zh.T @ zt, full_matrices=False)
    return zh @ (U @ Vt) + z_true.mean(0)


def procrustes_r2(z_true: np.ndarray, z_hat: np.ndarray) -> float:
    zt = z_true - z_true.mean(0)
    aligned = procrustes_align(z_true, z_hat) - z_true.mean(0)
    denom = float((zt**2).sum())
    return float(1.0 - ((zt - aligned) ** 2).sum() / denom) if denom > 0 else float("nan")


def mean_corr_coef(z_true: np.ndarray, z_hat: np.ndarray) -> float:
    m = z_true.shape[1]
    c = np.corrcoef(z_true.T, z_hat.T)[:m, m:]
    c = np.nan_to_num(np.abs(c))
    rows, cols = linear_sum_assignment(-c)
    return float(c[rows, cols].sum() / m)
