"""Latent recovery scores. With a N(0, I) prior the latents are identified at best up to rotation,
so both scores align first:

Procrustes R^2: R = argmin_{R^T R = I} ||Zc_hat R - Zc||_F (R = U V^T from the SVD of Zc_hat^T Zc),
    R^2 = 1 - ||Zc - Zc_hat R||^2 / ||Zc||^2   (Zc, Zc_hat centred).
MCC: mean |Pearson correlation| of true and inferred coordinates after the optimal one-to-one matching
    (Hungarian algorithm, `linear_sum_assignment` below), as in iVAE; meaningful only up to
    measure-preserving maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatentMap:
    """z_true ≈ (z_hat - model_centre) R + true_centre: a fitted model's latents onto the true ones, R
    (m_hat, m) with orthonormal columns (m_hat >= m) or rows (m_hat <= m)."""

    rotation: np.ndarray  # (m_hat, m)
    model_centre: np.ndarray  # (m_hat,)
    true_centre: np.ndarray  # (m,)

    def to_truth(self, z_hat: np.ndarray) -> np.ndarray:
        """(..., m_hat) -> (..., m)."""
        return (z_hat - self.model_centre) @ self.rotation + self.true_centre

    def to_model(self, z: np.ndarray) -> np.ndarray:
        """The inverse where R is square, else its least-squares inverse: (..., m) -> (..., m_hat)."""
        return (z - self.true_centre) @ self.rotation.T + self.model_centre

    def describe(self) -> str:
        """In words, for a legend: "z ↦ −z" (m = 1), "rotated 37°", "rotated 37° and mirrored", or "by Procrustes"."""
        R = self.rotation
        if R.shape == (1, 1):
            return "z ↦ −z" if R[0, 0] < 0 else "z ↦ z"
        if R.shape == (2, 2):
            angle = float(np.degrees(np.arctan2(R[0, 1], R[0, 0])))
            mirrored = np.linalg.det(R) < 0
            return f"rotated {angle:.0f}°" + (" and mirrored" if mirrored else "")
        return "rotated by Procrustes"


def procrustes_map(z_true: np.ndarray, z_hat: np.ndarray, centre: bool = True) -> LatentMap:
    """The best (semi-)orthogonal map of z_hat (N, m_hat) onto z_true (N, m), both centred first (or not:
    `centre=False` keeps to the maps that leave the prior N(0, I) unchanged, about the origin)."""
    ct, ch = (z_true.mean(0), z_hat.mean(0)) if centre else (np.zeros(z_true.shape[1]), np.zeros(z_hat.shape[1]))
    U, _, Vt = np.linalg.svd((z_hat - ch).T @ (z_true - ct), full_matrices=False)
    return LatentMap(U @ Vt, ch, ct)


def procrustes_align(z_true: np.ndarray, z_hat: np.ndarray) -> np.ndarray:
    """z_hat (N, m_hat) rotated onto z_true (N, m) by the best (semi-)orthogonal map: -> (N, m)."""
    return procrustes_map(z_true, z_hat).to_truth(z_hat)


def procrustes_r2(z_true: np.ndarray, z_hat: np.ndarray) -> float:
    zt = z_true - z_true.mean(0)
    aligned = procrustes_align(z_true, z_hat) - z_true.mean(0)
    denom = float((zt**2).sum())
    return float(1.0 - ((zt - aligned) ** 2).sum() / denom) if denom > 0 else float("nan")


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment (rows i -> columns j, min(R, C) pairs) minimising (or maximising) the
    total cost[i, j], like scipy.optimize.linear_sum_assignment: -> (rows ascending, their columns).

    The Hungarian algorithm in its shortest-augmenting-path form (Jonker-Volgenant): one row is added at a
    time and a Dijkstra search over reduced costs with dual potentials u, v finds the cheapest augmenting
    path; O(R^2 C) with the inner loop over columns vectorised (R <= C, the matrix transposed otherwise)."""
    a = np.asarray(cost, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError("cost must be a 2-D matrix")
    if not np.isfinite(a).all():
        raise ValueError("cost contains non-finite entries")
    if maximize:
        a = -a
    transposed = a.shape[0] > a.shape[1]
    if transposed:
        a = a.T
    n, m = a.shape
    if n == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    # column 0 is a virtual column; p[j] = 1-based row matched to column j (0: none)
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.intp)
    way = np.zeros(m + 1, dtype=np.intp)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = a[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            masked = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(masked)) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:  # augment along the path
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    cols = np.flatnonzero(p[1:])  # columns holding a row
    rows = p[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.intp), cols[order].astype(np.intp)


def mean_corr_coef(z_true: np.ndarray, z_hat: np.ndarray) -> float:
    m = z_true.shape[1]
    c = np.corrcoef(z_true.T, z_hat.T)[:m, m:]
    c = np.nan_to_num(np.abs(c))
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum() / m)
