"""What the GUI shows, computed without torch (the GUI thread never runs it).

`split_sizes` is the size of the training / held-out split that `trainer.split_indices` draws, and
`split_problem` the refusal the trainer would raise for it, so that a setting that cannot train is named at
its field before Start rather than in a failed run.

`graph_sign` aligns a fitted g to the true f for the plot of x against the latent (n = m = 1): the latent
of a fit is identified only up to the orthogonal maps of N(0, 1), z -> ±z, so a good fit may run against
the true z and its graph looks like the mirror image of f's.
"""

from __future__ import annotations

import numpy as np

from .config import ConfigError

MIN_TRAINING_POINTS = 2  # the trainer's minimum


def split_sizes(points: int, val_fraction: float) -> tuple[int, int]:
    """(training points, held-out points) of the split: a round(fraction) share held out, at least one and at
    most all but one (none for fraction 0). `trainer.split_indices` draws which rows."""
    held = min(points - 1, max(1, round(points * val_fraction))) if val_fraction > 0 else 0
    return points - held, held


def smallest_trainable(val_fraction: float) -> int:
    """The fewest points whose split leaves the trainer its minimum of training points."""
    points = MIN_TRAINING_POINTS
    while split_sizes(points, val_fraction)[0] < MIN_TRAINING_POINTS:
        points += 1
    return points


def split_problem(points: int, val_fraction: float, field: str) -> ConfigError | None:
    """The ConfigError (naming `field`, which holds `points` or the fraction) when the split of `points` by
    `val_fraction` leaves fewer training points than the trainer needs; None when it trains."""
    train, _held = split_sizes(points, val_fraction)
    if train >= MIN_TRAINING_POINTS:
        return None
    value = val_fraction if field.endswith("val_fraction") else points
    return ConfigError(field, value, f"{points} points with held-out fraction {val_fraction:g} leave {train} for "
                                     f"training; need at least {MIN_TRAINING_POINTS} (N >= "
                                     f"{smallest_trainable(val_fraction)}, or a smaller held-out fraction)")


def graph_sign(grid: np.ndarray, values: np.ndarray, true_grid: np.ndarray, true_values: np.ndarray) -> float:
    """The sign s (the one-dimensional orthogonal Procrustes map) for which the fitted graph, drawn as the
    points (s u, g(u)) over the latent grid u, lies closest to the true graph (z, f(z)): the s minimising
    the mean of (g(u) - f(s u))^2 over the grid points whose s u lie in the true grid's range (f there by
    linear interpolation). Grids (L, P, 1), values (L, P, 1); +1 for anything that is not a graph of
    R -> R on both sides."""
    if not all(a.ndim == 3 and a.shape[-1] == 1 for a in (grid, values, true_grid, true_values)):
        return 1.0
    u, g = grid.reshape(-1), values.reshape(-1)
    tz, f = true_grid.reshape(-1), true_values.reshape(-1)
    ok = np.isfinite(tz) & np.isfinite(f)
    order = np.argsort(tz[ok])
    tz, f = tz[ok][order], f[ok][order]
    if len(tz) < 2:
        return 1.0
    errors = []
    for s in (1.0, -1.0):
        at = s * u
        inside = (at >= tz[0]) & (at <= tz[-1]) & np.isfinite(g)
        errors.append(float(np.mean((g[inside] - np.interp(at[inside], tz, f)) ** 2)) if inside.any() else np.inf)
    return -1.0 if errors[1] < errors[0] else 1.0
