"""The NumPy replacements of the two SciPy routines the engine used: the Gauss-Hermite rule
(engine.likelihood.rules.hermite_rule_1d) and the assignment behind the MCC score
(engine.latents.linear_sum_assignment)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from engine.latents import linear_sum_assignment, mean_corr_coef
from engine.likelihood.quadrature import hermite_grid
from engine.likelihood.rules import hermite_rule_1d

# ------------------------------------------------------------------------------------- Gauss-Hermite rule


def _golub_welsch(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: eigenvalues of the Jacobi matrix of He_k and squared first eigenvector components."""
    off = np.sqrt(np.arange(1, nodes, dtype=np.float64))
    u, vec = np.linalg.eigh(np.diag(off, 1) + np.diag(off, -1))
    w = vec[0] ** 2
    return u, w / w.sum()


@pytest.mark.parametrize("nodes", range(1, 201))
def test_hermite_rule_matches_golub_welsch_and_hermegauss(nodes: int) -> None:
    """1..200 nodes (the configurable range): the nodes and weights of the Golub-Welsch rule that
    scipy.linalg.eigh_tridiagonal gave, and NumPy's hermegauss in log space, tails included."""
    u, lw = hermite_rule_1d(nodes)
    assert u.shape == lw.shape == (nodes,)  # no weight of a rule up to 200 nodes is below exp(-700)
    assert np.all(np.diff(u) > 0)
    np.testing.assert_array_equal(u, -u[::-1])
    assert np.logaddexp.reduce(lw) == pytest.approx(0.0, abs=1e-13)
    u_ref, w_ref = _golub_welsch(nodes)
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(lw), w_ref, rtol=0, atol=1e-14)
    # log weights down to exp(-375), where Golub-Welsch's eigenvector weights are noise
    x, w = hermegauss(nodes)
    np.testing.assert_allclose(u, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(lw, np.log(w) - np.log(w.sum()), rtol=0, atol=1e-10)


@pytest.mark.parametrize("nodes", [300, 1024])
def test_hermite_rule_many_nodes_against_high_precision(nodes: int) -> None:
    """Beyond hermegauss's range (it overflows): log weights against a 50-digit Christoffel sum."""
    mp = pytest.importorskip("mpmath")
    u, lw = hermite_rule_1d(nodes)
    assert len(u) <= nodes and np.all(np.diff(u) > 0) and lw.min() > -700.0
    assert np.logaddexp.reduce(lw) == pytest.approx(0.0, abs=1e-12)
    u_ref, w_ref = _golub_welsch(nodes)
    keep = np.abs(u_ref) <= u.max() + 1e-9  # the nodes whose weight is above exp(-700)
    np.testing.assert_allclose(u, u_ref[keep], rtol=0, atol=1e-11)
    np.testing.assert_allclose(np.exp(lw), w_ref[keep], rtol=0, atol=1e-14)
    with mp.workdps(50):
        for i in (0, len(u) // 5, len(u) // 2):
            x = mp.mpf(float(u[i]))
            for _ in range(3):  # Newton on He_n: the exact node next to u_i
                p0, p1 = mp.mpf(1), x
                for k in range(1, nodes):
                    p0, p1 = p1, x * p1 - k * p0
                x -= p1 / (nodes * p0)
            prev, p, s = mp.mpf(0), mp.mpf(1), mp.mpf(1)
            for k in range(nodes - 1):  # w = 1 / sum_k p_k(x)^2, p_k the orthonormal He_k
                prev, p = p, (x * p - mp.sqrt(k) * prev) / mp.sqrt(k + 1)
                s += p * p
            assert lw[i] == pytest.approx(float(-mp.log(s)), abs=1e-9)  # the exact weights sum to 1


@pytest.mark.parametrize("nodes", [1, 2, 3, 5, 8, 20, 60, 200])
def test_hermite_rule_integrates_moments_exactly(nodes: int) -> None:
    u, lw = hermite_rule_1d(nodes)
    w = np.exp(lw)
    for k in range(min(2 * nodes - 1, 16) + 1):
        exact = 0.0 if k % 2 else float(math.prod(range(k - 1, 0, -2)))  # (k - 1)!! for even k
        scale = float(w @ np.abs(u) ** k)  # odd moments cancel: compare against the sum of |terms|
        assert float(w @ u**k) == pytest.approx(exact, rel=1e-10, abs=1e-13 * scale), k


def test_hermite_rule_small_closed_forms() -> None:
    u, lw = hermite_rule_1d(2)
    np.testing.assert_allclose(u, [-1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(np.exp(lw), [0.5, 0.5], atol=1e-15)
    u, lw = hermite_rule_1d(3)
    np.testing.assert_allclose(u, [-math.sqrt(3), 0.0, math.sqrt(3)], atol=1e-14)
    np.testing.assert_allclose(np.exp(lw), [1 / 6, 2 / 3, 1 / 6], atol=1e-15)


def test_hermite_grid_tensor_product() -> None:
    u, lw = hermite_grid(2, 5)
    assert u.shape == (25, 2) and lw.shape == (25,) and u.dtype == torch.float64
    assert float(torch.logsumexp(lw, 0)) == pytest.approx(0.0, abs=1e-13)
    # E[z1^2 z2^2] = 1, E[z1^4] = 3 under N(0, I_2)
    w = lw.exp()
    assert float(w @ (u[:, 0] ** 2 * u[:, 1] ** 2)) == pytest.approx(1.0, rel=1e-12)
    assert float(w @ u[:, 0] ** 4) == pytest.approx(3.0, rel=1e-12)


# ----------------------------------------------------------------------------------------- assignment


def _brute_force(cost: np.ndarray, maximize: bool) -> float:
    r, c = cost.shape
    if r > c:
        return _brute_force(cost.T, maximize)
    perms = np.array(list(itertools.permutations(range(c), r)), dtype=np.intp).reshape(-1, r)
    totals = cost[np.arange(r), perms].sum(-1)
    return float(totals.max() if maximize else totals.min())


def _check(cost: np.ndarray, maximize: bool) -> None:
    rows, cols = linear_sum_assignment(cost, maximize=maximize)
    r, c = cost.shape
    assert len(rows) == len(cols) == min(r, c)
    assert np.all(np.diff(rows) > 0) and len(set(cols.tolist())) == len(cols)  # one-to-one, rows ascending
    assert rows.min(initial=0) >= 0 and rows.max(initial=0) < max(r, 1) and cols.max(initial=0) < max(c, 1)
    assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost, maximize), abs=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_assignment_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in range(1, 8):
        _check(rng.normal(size=(n, n)), maximize=seed % 2 == 0)
        # ties: few distinct values
        _check(rng.integers(0, 3, size=(n, n)).astype(float), maximize=seed % 2 == 1)
    # rectangular, both ways
    r, c = rng.integers(1, 8, size=2)
    _check(np.abs(rng.normal(size=(r, c))), maximize=True)
    _check(rng.integers(-2, 3, size=(c, r)).astype(float), maximize=False)


def test_assignment_edge_cases() -> None:
    _check(np.zeros((4, 4)), maximize=True)  # all tied
    _check(np.ones((3, 5)), maximize=False)
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert rows.shape == cols.shape == (0,)
    with pytest.raises(ValueError, match="non-finite"):
        linear_sum_assignment(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))


def test_assignment_large_is_optimal_against_a_planted_permutation() -> None:
    rng = np.random.default_rng(1)
    m = 100
    perm = rng.permutation(m)
    cost = rng.random((m, m)) * 0.5
    cost[np.arange(m), perm] = 1.0  # the planted matching is the unique best
    rows, cols = linear_sum_assignment(cost, maximize=True)
    np.testing.assert_array_equal(rows, np.arange(m))
    np.testing.assert_array_equal(cols, perm)


def test_mcc_is_the_best_matching_of_abs_correlations() -> None:
    rng = np.random.default_rng(2)
    for m in range(1, 6):
        z = rng.normal(size=(300, m))
        z_hat = z @ rng.normal(size=(m, m)) + 0.3 * rng.normal(size=(300, m))
        c = np.abs(np.corrcoef(z.T, z_hat.T)[:m, m:])
        assert mean_corr_coef(z, z_hat) == pytest.approx(_brute_force(c, maximize=True) / m, abs=1e-12)
    z = rng.normal(size=(500, 4))
    assert mean_corr_coef(z, -z[:, [2, 0, 3, 1]]) == pytest.approx(1.0, abs=1e-12)

