"""The latent Gaussian model shared by the true generator and every fitted decoder.

    p(z) = N(z; 0, I_m),   p(x | z) = N(x; g(z), diag(sigma^2)),   p(x) = ∫ p(x | z) p(z) dz.

Anything with `n`, `m`, `mean(z)` and `sigma()` is a model: the simulator's `TrueModel` and the fitted
`Decoder` alike, so the one evaluator scores both the same way.
"""

from __future__ import annotations

import math
from typing import Protocol

from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


class LatentGaussianModel(Protocol):
    n: int
    m: int

    def mean(self, z: Tensor) -> Tensor:
        """g(z): (..., m) -> (..., n)."""
        ...

    def sigma(self) -> Tensor:
        """Noise standard deviation: shape () for a shared sigma or (n,) for one per coordinate."""
        ...


def log_prior(z: Tensor) -> Tensor:
    """log N(z; 0, I_m), summed over the last axis: (..., m) -> (...)."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)


def log_likelihood(x: Tensor, mean: Tensor, sigma: Tensor) -> Tensor:
    """log N(x; mean, diag sigma^2), summed over the last axis; x and mean broadcast: (..., n) -> (...)."""
    n = x.shape[-1]
    sigma = sigma.expand(n) if sigma.dim() == 0 else sigma
    r = (x - mean) / sigma
    return -0.5 * r.pow(2).sum(-1) - sigma.log().sum() - 0.5 * n * LOG_2PI


def log_joint(model: LatentGaussianModel, x: Tensor, z: Tensor) -> Tensor:
    """log p(x, z) = log p(x | z) + log p(z).  x: (B, n), z: (B, K, m) -> (B, K)."""
    return log_likelihood(x.unsqueeze(-2), model.mean(z), model.sigma()) + log_prior(z)
