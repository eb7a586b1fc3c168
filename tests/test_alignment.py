"""engine.alignment and latents.procrustes_map: a fit that equals the truth up to an orthogonal map of its
latents draws exactly on the truth once aligned (the views' "Align fits to the truth")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.alignment import fitted_manifold_view, latent_grid, manifold, manifold_view
from engine.config import SimulationConfig
from engine.latents import procrustes_map
from engine.simulate import simulate


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


@pytest.mark.parametrize(("Q", "words"), [(_rotation(0.6), "rotated 34°"),
                                          (np.diag([1.0, -1.0]) @ _rotation(0.3), "mirrored")])
def test_procrustes_map_recovers_an_orthogonal_map_and_its_shift(Q, words):
    z = np.random.default_rng(0).normal(size=(400, 2))
    z_hat = z @ Q.T + np.array([0.3, -0.2])  # the fit's latents: z_hat = Q z + c
    mp = procrustes_map(z, z_hat)
    np.testing.assert_allclose(mp.to_truth(z_hat), z, atol=1e-12)
    assert np.abs(procrustes_map(z, z_hat, centre=False).to_truth(z_hat) - z).max() > 0.1  # the shift stays
    np.testing.assert_allclose(mp.to_model(z), z_hat, atol=1e-12)
    np.testing.assert_allclose(mp.rotation, Q, atol=1e-12)  # z = (z_hat - c) Q
    assert words in mp.describe()


def test_mirrored_one_dimensional_fit_is_described_and_undone():
    z = np.random.default_rng(1).normal(size=(300, 1))
    mp = procrustes_map(z, -z)
    assert mp.describe() == "z ↦ −z"
    np.testing.assert_allclose(mp.to_truth(-z), z, atol=1e-12)


class _Rotated(torch.nn.Module):
    """g(z) = f(Q^T z): the true model seen through latents rotated by Q (the same distribution of x)."""

    def __init__(self, truth, Q: np.ndarray):
        super().__init__()
        self.truth, self.m, self.n = truth, truth.m, truth.n
        self.register_buffer("Q", torch.as_tensor(Q, dtype=torch.float64))
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the module a dtype

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.truth.mean(z.double() @ self.Q)  # rows: z Q = (Q^T z)^T

    def sigma(self) -> torch.Tensor:
        return self.truth.sigma()


def test_a_rotated_truth_draws_on_the_truth_once_aligned():
    ds = simulate(SimulationConfig(mixing="mlp", n=3, m=2, sigma=0.05, samples=600, seed=4))
    Q = _rotation(1.1)
    fit = _Rotated(ds.truth, Q)
    z_hat = ds.z @ Q.T  # the fit's latents of the same points: z_hat = Q z
    view = manifold_view(fit, ds.z, z_hat)
    true = manifold(ds.truth, latent_grid(2))
    np.testing.assert_allclose(view.aligned_values, true, atol=1e-9)  # aligned: f's own grid lines
    assert np.abs(view.values - true).max() > 0.1  # raw: the same surface, other grid lines
    grid, values = view.shown(aligned=False)
    assert values is view.values and grid.shape == latent_grid(2).shape


def test_fitted_view_of_a_mirrored_cubic_finds_the_sign_from_posterior_means():
    """n = m = 1: g(z) = f(-z) is a perfect fit whose graph is f's mirror image until aligned."""
    ds = simulate(SimulationConfig(mixing="polynomial", n=1, m=1, sigma=0.1, degree=3, samples=500, seed=2))
    fit = _Rotated(ds.truth, -np.eye(1))
    view = fitted_manifold_view(fit, ds.x, ds.z)
    assert view.latent_map is not None and view.latent_map.describe() == "z ↦ −z"
    true = manifold(ds.truth, latent_grid(1))
    scale = np.abs(true).max()
    assert np.abs(view.aligned_values - true).max() < 0.02 * scale  # the posterior means' shift, at most
    assert np.abs(view.values - true).max() > 0.3 * scale
    assert fitted_manifold_view(fit, None, None).latent_map is None  # no true latents: raw only


def test_a_map_between_latent_spaces_of_different_dimensions_is_semi_orthogonal():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(500, 2))
    Q = np.linalg.qr(rng.normal(size=(3, 3)))[0][:, :2]  # (3, 2) orthonormal columns: a fit with m_hat = 3
    z_hat = z @ Q.T  # the true latents embedded in a 3-D latent space
    mp = procrustes_map(z, z_hat, centre=False)
    assert mp.rotation.shape == (3, 2) and mp.describe() == "rotated by Procrustes"
    np.testing.assert_allclose(mp.to_truth(z_hat), z, atol=1e-10)
    np.testing.assert_allclose(mp.to_truth(mp.to_model(z)), z, atol=1e-10)  # m_hat > m: a left inverse
    back = procrustes_map(z_hat, z, centre=False)  # m_hat = 2 < m = 3: the best 2-D view of 3-D latents
    assert back.rotation.shape == (2, 3)
    np.testing.assert_allclose(back.to_truth(z), z_hat, atol=1e-10)

