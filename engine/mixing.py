"""The true mixing functions f: R^m -> R^n of the simulator.

Each family is a pure function of a few named arrays, so a true model is saved as plain arrays plus a
JSON description and rebuilt exactly (no pickling):

    linear      f(z) = A z + b
    polynomial  f(z) = b + sum_{p=1..d} C_p z^p           (z^p elementwise; C_p is n x m, per output)
    sigmoid     f(z) = s(A z + b),  s = logistic or tanh
    mlp         f(z) = W_L a(... a(W_1 z + b_1) ...) + b_L   (random weights, activation a)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import ACTIVATIONS, MIXINGS, SIGMOID_KINDS, SimulationConfig


def activation_fn(name: str):
    """The elementwise nonlinearity named in the config (leaky ReLU slope 0.2)."""
    return {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda u: torch.nn.functional.leaky_relu(u, 0.2),
        "elu": torch.nn.functional.elu,
        "softplus": torch.nn.functional.softplus,
        "sigmoid": torch.sigmoid,
    }[name]


def activation_derivative(name: str):
    """d act(u) / du as a function of the pre-activation u and the output a = act(u)."""
    return {
        "tanh": lambda u, a: 1.0 - a * a,
        "relu": lambda u, a: (u > 0).to(u.dtype),
        "leaky_relu": lambda u, a: 0.2 + 0.8 * (u > 0).to(u.dtype),
        "elu": lambda u, a: torch.where(u > 0, 1.0, a + 1.0).to(u.dtype),
        "softplus": lambda u, a: torch.sigmoid(u),
        "sigmoid": lambda u, a: a * (1.0 - a),
    }[name]


@dataclass
class Mixing:
    """f as a family name, its options (JSON) and its parameters (arrays)."""

    family: str
    n: int
    m: int
    options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Tensor] = field(default_factory=dict)

    def __call__(self, z: Tensor) -> Tensor:
        """f(z): (..., m) -> (..., n)."""
        p = {k: v.to(device=z.device, dtype=z.dtype) for k, v in self.params.items()}
        if self.family == "linear":
            return z @ p["A"].T + p["b"]
        if self.family == "polynomial":
            out = p["b"].expand(*z.shape[:-1], self.n)
            for k in range(self.options["degree"]):
                out = out + z.pow(k + 1) @ p[f"C{k + 1}"].T
            return out
        if self.family == "sigmoid":
            u = z @ p["A"].T + p["b"]
            return torch.sigmoid(u) if self.options["sigmoid_kind"] == "logistic" else torch.tanh(u)
        if self.family == "mlp":
            act = activation_fn(self.options["activation"])
            h = z
            depth = self.options["depth"]
            for i in range(depth + 1):
                h = h @ p[f"W{i}"].T + p[f"b{i}"]
                if i < depth:
                    h = act(h)
            return h
        raise ValueError(f"unknown mixing family {self.family!r}")

    def describe(self) -> dict[str, Any]:
        """JSON-able description; with `to_arrays()` it rebuilds the mixing exactly."""
        return {"family": self.family, "n": self.n, "m": self.m, "options": dict(self.options)}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.params.items()}

    @classmethod
    def from_arrays(cls, desc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Mixing:
        """Rebuild from `describe()` and `to_arrays()`; raises ValueError naming what is wrong."""
        family = desc.get("family")
        if family not in MIXINGS:
            raise ValueError(f"truth.family: got {family!r}; expected one of {', '.join(MIXINGS)}")
        n, m, options = int(desc["n"]), int(desc["m"]), dict(desc.get("options", {}))
        params = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()}
        mix = cls(family, n, m, options, params)
        for name, shape in mix.expected_shapes().items():
            if name not in params:
                raise ValueError(f"truth/{name}: missing; a {family} mixing needs {sorted(mix.expected_shapes())}")
            if tuple(params[name].shape) != shape:
                raise ValueError(f"truth/{name}: shape {tuple(params[name].shape)}, expected {shape}")
            if not torch.isfinite(params[name]).all():
                raise ValueError(f"truth/{name}: contains NaN or inf")
        return mix

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        n, m, o = self.n, self.m, self.options
        if self.family in ("linear", "sigmoid"):
            return {"A": (n, m), "b": (n,)}
        if self.family == "polynomial":
            return {"b": (n,), **{f"C{k + 1}": (n, m) for k in range(int(o["degree"]))}}
        widths = [m] + [int(o["width"])] * int(o["depth"]) + [n]
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(len(widths) - 1):
            shapes[f"W{i}"] = (widths[i + 1], widths[i])
            shapes[f"b{i}"] = (widths[i + 1],)
        return shapes


def random_mixing(cfg: SimulationConfig, gen: torch.Generator) -> Mixing:
    """Draw f's parameters from the run's generator.

    linear, sigmoid: A_jk ~ N(0, scale^2 / m) (times 2 for sigmoid, so that s is visibly curved),
    b ~ N(0, 0.5^2); polynomial: C_p ~ N(0, (scale / p)^2 / m), b = 0; mlp: W_i ~ N(0, gain^2 / fan_in)
    with the activation's gain, the last layer times `scale`, biases ~ N(0, 0.1^2).
    """
    n, m, s = cfg.n, cfg.m, cfg.scale

    def normal(*shape: int, std: float) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    if cfg.mixing == "linear":
        params = {"A": normal(n, m, std=s / math.sqrt(m)), "b": normal(n, std=0.5)}
        return Mixing("linear", n, m, {}, params)
    if cfg.mixing == "polynomial":
        params = {"b": torch.zeros(n, dtype=torch.float64)}
        for p in range(1, cfg.degree + 1):
            params[f"C{p}"] = normal(n, m, std=s / p / math.sqrt(m))
        return Mixing("polynomial", n, m, {"degree": cfg.degree}, params)
    if cfg.mixing == "sigmoid":
        assert cfg.sigmoid_kind in SIGMOID_KINDS
        params = {"A": normal(n, m, std=2.0 * s / math.sqrt(m)), "b": normal(n, std=0.5)}
        return Mixing("sigmoid", n, m, {"sigmoid_kind": cfg.sigmoid_kind}, params)
    assert cfg.mlp_activation in ACTIVATIONS
    gain = {"relu": math.sqrt(2), "leaky_relu": math.sqrt(2 / (1 + 0.2**2)), "tanh": 5 / 3}.get(
        cfg.mlp_activation, 1.0)
    widths = [m] + [cfg.mlp_width] * cfg.mlp_depth + [n]
    params = {}
    for i in range(len(widths) - 1):
        std = gain / math.sqrt(widths[i])
        if i == len(widths) - 2:
            std = s / math.sqrt(widths[i])
        params[f"W{i}"] = normal(widths[i + 1], widths[i], std=std)
        params[f"b{i}"] = normal(widths[i + 1], std=0.1)
    options = {"depth": cfg.mlp_depth, "width": cfg.mlp_width, "activation": cfg.mlp_activation}
    return Mixing("mlp", n, m, options, params)
