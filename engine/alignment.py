"""A fitted model's latents aligned to the true ones, for the views.

With a N(0, I) prior the latents are identified at best up to an orthogonal map, so a perfect fit may draw
as f's mirror image (n = m = 1: g(z) = f(-z)) or rotated. The views therefore draw the fit through the
orthogonal Procrustes map of its inferred latents onto the true ones (engine/latents.py),

    z_true ≈ z_hat R,     R = U V^T from the SVD of Z_hat^T Z_true,

about the origin (the orthogonal maps are the symmetries of N(0, I); a shift is not, so none is taken), and
the fitted manifold over the TRUE latent grid u as g(to_model(u)), to_model(u) = u R^T.
Both the aligned and the raw pictures are kept: the views show either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .evaluate import posterior_means
from .latents import LatentMap, procrustes_map
from .model import LatentGaussianModel


def latent_grid(m: int, lines: int = 11, points: int = 101, extent: float = 2.5) -> np.ndarray:
    """Latent grid as polylines for manifold plots: (L, P, m). m = 1: one line over [-3, 3]; m >= 2: a
    lines x lines net in the first two coordinates (the rest zero)."""
    if m == 1:
        return np.linspace(-3, 3, 4 * points).reshape(1, -1, 1)
    ticks = np.linspace(-extent, extent, lines)
    run = np.linspace(-extent, extent, points)
    out = np.zeros((2 * lines, points, m))
    for i, t in enumerate(ticks):
        out[i, :, 0], out[i, :, 1] = run, t
        out[lines + i, :, 0], out[lines + i, :, 1] = t, run
    return out


@torch.no_grad()
def manifold(model: Any, grid: np.ndarray) -> np.ndarray:
    """g(grid) for a (L, P, m) grid: -> (L, P, n)."""
    dtype = next(model.parameters()).dtype if hasattr(model, "parameters") else torch.float64
    device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
    return model.mean(torch.as_tensor(grid, dtype=dtype, device=device)).double().cpu().numpy()


ALIGN_POINTS = 500  # points whose posterior means fix the map of a finished run


@dataclass
class ManifoldView:
    """g on its own latent grid (raw), and over the true latent grid through the Procrustes map (aligned)."""

    grid: np.ndarray  # (L, P, m_hat) the model's latent grid
    values: np.ndarray  # (L, P, n) g on it
    latent_map: LatentMap | None = None  # fitted latents -> true latents; None without true latents
    aligned_grid: np.ndarray | None = None  # (L, P, m) the true latent grid
    aligned_values: np.ndarray | None = None  # (L, P, n) g(to_model(aligned_grid))

    def shown(self, aligned: bool) -> tuple[np.ndarray, np.ndarray]:
        """(grid, values) to draw: aligned where a map is known and asked for, else raw."""
        if aligned and self.aligned_grid is not None and self.aligned_values is not None:
            return self.aligned_grid, self.aligned_values
        return self.grid, self.values


def manifold_view(model: LatentGaussianModel, z_true: np.ndarray | None,
                  z_hat: np.ndarray | None) -> ManifoldView:
    """The model's manifold raw and aligned: `z_hat` (k, m_hat) its latents for points whose true latents
    are `z_true` (k, m); without both, raw only."""
    grid = latent_grid(model.m)
    view = ManifoldView(grid, manifold(model, grid))
    if z_true is None or z_hat is None or len(z_true) < 2 or len(z_true) != len(z_hat):
        return view
    if not (np.isfinite(z_hat).all() and np.isfinite(z_true).all()):
        return view
    view.latent_map = procrustes_map(z_true, z_hat, centre=False)  # the prior's symmetries: no shift
    view.aligned_grid = latent_grid(z_true.shape[1])
    view.aligned_values = manifold(model, view.latent_map.to_model(view.aligned_grid))
    return view


def fitted_manifold_view(model: LatentGaussianModel, x: np.ndarray | None,
                         z_true: np.ndarray | None) -> ManifoldView:
    """`manifold_view` of a finished model, its latents the posterior means E[z | x] of the first
    ALIGN_POINTS points x (k, n) whose true latents are z_true (k, m)."""
    if x is None or z_true is None:
        return manifold_view(model, None, None)
    k = min(ALIGN_POINTS, len(x), len(z_true))
    return manifold_view(model, z_true[:k], posterior_means(model, x[:k], samples=256))
