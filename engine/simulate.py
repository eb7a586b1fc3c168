"""Draws from the model  Z ~ N(0, I_m),  X | Z ~ N(f(Z), sigma^2 I_n), and the Dataset record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import SimulationConfig
from .mixing import Mixing, random_mixing


@dataclass
class TrueModel:
    """The generator of simulated data: f and sigma. A `LatentGaussianModel`."""

    mixing: Mixing
    noise_sigma: float

    @property
    def n(self) -> int:
        return self.mixing.n

    @property
    def m(self) -> int:
        return self.mixing.m

    def mean(self, z: Tensor) -> Tensor:
        return self.mixing(z)

    def sigma(self) -> Tensor:
        return torch.tensor(self.noise_sigma, dtype=torch.float64)

    @property
    def sigma_identified(self) -> bool:
        """Linear f with m >= n: only A A^T + sigma^2 I is identified, not sigma itself."""
        return not (self.mixing.family == "linear" and self.m >= self.n)


@dataclass
class Dataset:
    """Observed points x (N x n); for simulated data also the latents z (N x m) and the true model."""

    x: np.ndarray
    z: np.ndarray | None = None
    truth: TrueModel | None = None
    columns: tuple[str, ...] | None = None  # x's column names (a CSV header); None: x1..xn

    @property
    def names(self) -> tuple[str, ...]:
        """x's column names: the file's, else x1..xn."""
        return self.columns if self.columns is not None else tuple(f"x{j + 1}" for j in range(self.n))

    @property
    def n(self) -> int:
        return int(self.x.shape[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], None if self.z is None else self.z[idx], self.truth, self.columns)


def simulate(cfg: SimulationConfig) -> Dataset:
    """N draws of (z, x); reproducible from `cfg.seed` through a run-owned torch.Generator."""
    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    mixing = random_mixing(cfg, gen)
    z = torch.randn(cfg.samples, cfg.m, generator=gen, dtype=torch.float64)  # (N, m)
    eps = torch.randn(cfg.samples, cfg.n, generator=gen, dtype=torch.float64)  # (N, n)
    x = mixing(z) + cfg.sigma * eps
    return Dataset(x.numpy(), z.numpy(), TrueModel(mixing, float(cfg.sigma)))


def sample_model(model, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate `count` new (x, z) from any model (true or fitted): z ~ N(0, I), x = g(z) + sigma eps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dtype = torch.float64
        z = torch.randn(count, model.m, generator=gen, dtype=dtype)
        mean = model.mean(z.to(_dtype_of(model))).to(dtype)
        eps = torch.randn(count, model.n, generator=gen, dtype=dtype)
        x = mean + model.sigma().to(dtype) * eps
    return x.numpy(), z.numpy()


def _dtype_of(model) -> torch.dtype:
    params = getattr(model, "parameters", None)
    if params is not None:
        for p in params():
            return p.dtype
    return torch.float64
