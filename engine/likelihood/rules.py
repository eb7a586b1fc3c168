"""Quadrature rules for N(0, I_m) in NumPy, no torch (the config counts their points): the probabilists'
Gauss-Hermite rule, and the compact fully symmetric rules that mle-adaptive takes instead of a tensor grid of
the same total degree."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import numpy as np


@functools.lru_cache(maxsize=32)
def hermite_rule_1d(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite rule for N(0, 1): nodes (ascending), log weights (sum w = 1).

    Nodes: eigenvalues of the Jacobi matrix of He_k (Golub-Welsch). Weights: Christoffel's
    w_i = 1 / sum_{k<n} p_k(u_i)^2 (p_k the orthonormal He_k), summed with a running scale, so that they
    stay accurate in log space far into the tails and for any node count; Golub-Welsch's eigenvector
    weights are accurate only to ~1e-16 absolute (wrong in log below about exp(-37)), and NumPy's
    hermegauss overflows beyond a few hundred nodes. Nodes whose weight is below exp(-700) are dropped."""
    if nodes == 1:
        return np.zeros(1), np.zeros(1)
    off = np.sqrt(np.arange(1, nodes, dtype=np.float64))
    u = np.linalg.eigvalsh(np.diag(off, 1) + np.diag(off, -1))
    u = 0.5 * (u - u[::-1])  # exactly symmetric
    prev, p, s = np.zeros(nodes), np.ones(nodes), np.ones(nodes)
    log_scale = np.zeros(nodes)
    for k in range(nodes - 1):
        prev, p = p, (u * p - np.sqrt(k) * prev) / np.sqrt(k + 1.0)
        s += p * p
        big = s > 1e200
        if big.any():
            p[big] *= 1e-100
            prev[big] *= 1e-100
            s[big] *= 1e-200
            log_scale[big] += 200.0 * np.log(10.0)
    logw = -(np.log(s) + log_scale)
    logw -= np.logaddexp.reduce(logw)
    keep = logw > -700.0
    return u[keep], logw[keep]


def symmetric_rule_2d_degree7() -> tuple[np.ndarray, np.ndarray]:
    """A 12-point fully symmetric rule of degree 7 for N(0, I_2): points u (12, 2), log weights (12,).

    Orbits (+-a, 0), (0, +-a) with a^2 = 6 and weight 1/36, (+-b, +-b) with b^2 = (9 + 3 sqrt 5) / 4 and
    weight (5 - 2 sqrt 5) / 45, (+-c, +-c) with c^2 = (9 - 3 sqrt 5) / 4 and weight (5 + 2 sqrt 5) / 45: the
    solution of the moment equations E 1 = 1, E x^2 = 1, E x^4 = 3, E x^2 y^2 = 1, E x^6 = 15,
    E x^4 y^2 = 3 (odd moments vanish by symmetry). Exact for every polynomial of total degree <= 7, as
    the 4 x 4 tensor grid is, in 12 points instead of 16."""
    r5 = np.sqrt(5.0)
    a, b, c = np.sqrt(6.0), np.sqrt((9 + 3 * r5) / 4), np.sqrt((9 - 3 * r5) / 4)
    u = np.array([[a, 0], [-a, 0], [0, a], [0, -a],
                  [b, b], [b, -b], [-b, b], [-b, -b], [c, c], [c, -c], [-c, c], [-c, -c]])
    w = np.array([1 / 36] * 4 + [(5 - 2 * r5) / 45] * 4 + [(5 + 2 * r5) / 45] * 4)
    return u, np.log(w)


def hexagon_rule_2d_degree5() -> tuple[np.ndarray, np.ndarray]:
    """A 7-point rule of degree 5 for N(0, I_2) (Radon's hexagon): points u (7, 2), log weights (7,).

    The centre with weight 1/2 and the six points 2 (cos k pi/3, sin k pi/3) with weight 1/12: over the
    hexagon sum cos^2 = 3, sum cos^4 = 9/4 and sum cos^2 sin^2 = 3/4, so E z_1^2 = 3 w r^2 = 1,
    E z_1^4 = 9/4 w r^4 = 3 and E z_1^2 z_2^2 = 3/4 w r^4 = 1 give r^2 = 4, w = 1/12; odd moments vanish by
    symmetry. Exact for every polynomial of total degree <= 5, as the 3 x 3 grid is, in 7 points."""
    t = np.arange(6) * np.pi / 3
    u = np.concatenate([np.zeros((1, 2)), 2.0 * np.stack([np.cos(t), np.sin(t)], axis=1)])
    w = np.array([1 / 2] + [1 / 12] * 6)
    return u, np.log(w)


def symmetric_rule_degree5(m: int) -> tuple[np.ndarray, np.ndarray]:
    """A fully symmetric rule of degree 5 for N(0, I_m), m >= 3, with positive weights: points u (G, m), log
    weights (G,), G = 2m + 2^m plus the centre for m < 6.

    Orbits: the centre with weight w0, (+-a e_i) with weight 1/a^4, and the 2^m sign vectors
    sqrt(s) (+-1, ..., +-1) with weight 1 / (2^m s^2), where a^2 = 2s / (s - 1); the moment equations
    E z_i^2 = 1, E z_i^4 = 3, E z_i^2 z_j^2 = 1 and E 1 = 1 give these weights and
    w0 = 1 - m (s - 1)^2 / (2 s^2) - 1 / s^2, which is >= 0 for s <= (m + 2) / (m - 2). s = 2 (a^2 = 4)
    while that holds (m <= 6; from m = 6 the centre's weight is 0 and it is dropped), then
    s = (m + 2) / (m - 2). Odd moments vanish by symmetry, so every polynomial of total degree <= 5 is
    integrated exactly, as by the 3^m tensor grid, in 1 + 2m + 2^m points (15 for m = 3, 25 for m = 4)."""
    s = min(2.0, (m + 2) / (m - 2))
    a = np.sqrt(2 * s / (s - 1))
    axes = np.concatenate([a * np.eye(m), -a * np.eye(m)])  # (2m, m)
    signs = np.sqrt(s) * np.array(list(itertools.product((1.0, -1.0), repeat=m)))  # (2^m, m)
    u = np.concatenate([axes, signs])
    w = np.concatenate([np.full(2 * m, 1 / a**4), np.full(2**m, 1 / (2**m * s**2))])
    if m < 6:  # the centre's weight, 0 from m = 6
        w0 = 1 - m * (s - 1) ** 2 / (2 * s**2) - 1 / s**2
        u, w = np.concatenate([np.zeros((1, m)), u]), np.concatenate([[w0], w])
    return u, np.log(w)


def compact_rule(m: int, nodes: int) -> tuple[int, Callable[[], tuple[np.ndarray, np.ndarray]]] | None:
    """The rule that replaces the `nodes`^m tensor grid for mle-adaptive with the same total degree
    2 nodes - 1 in fewer points, as (its points, its builder), None where there is none: for m = 2, 7 points
    with 3 nodes (degree 5) and 12 with 4 (degree 7); for m >= 3 and 3 nodes the degree-5 rule's
    1 + 2m + 2^m (2m + 2^m from m = 6)."""
    if (m, nodes) == (2, 3):
        return 7, hexagon_rule_2d_degree5
    if (m, nodes) == (2, 4):
        return 12, symmetric_rule_2d_degree7
    if m >= 3 and nodes == 3:
        return 2 * m + 2**m + (m < 6), functools.partial(symmetric_rule_degree5, m)
    return None


def rule_points(m: int, nodes: int, adaptive: bool) -> int:
    """How many points a run's rule has, without building it (no node's weight underflows up to the 200
    nodes a run may ask for, so the tensor grid has nodes^m)."""
    compact = compact_rule(m, nodes) if adaptive else None
    return compact[0] if compact is not None else nodes**m


def rule_name(m: int, nodes: int, adaptive: bool) -> str:
    """How many nodes a run's rule has: "16 nodes", "4 nodes per axis (16)", "12 nodes of degree 7"."""
    points = rule_points(m, nodes, adaptive)
    if adaptive and compact_rule(m, nodes) is not None:
        return f"{points} nodes of degree {2 * nodes - 1}"
    return f"{nodes} nodes per axis ({points})" if m > 1 else f"{points} nodes"
