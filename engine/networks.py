"""The decoder g_theta with its noise scale, and the VAE encoder q_phi(z | x).

sigma = sigma_min + softplus(rho): the Gaussian-decoder likelihood is unbounded as sigma -> 0
(Mattei & Frellsen 2018), even with one shared sigma, so a floor sigma_min > 0 keeps the MLE finite.

Preprocessing (`DecoderConfig.preprocess`) is part of the model: with y = (x - shift) / scale (centre:
scale 1; standardise: the training columns' means and standard deviations, fixed when the decoder is
built), the decoder is g_x(z) = shift + scale * g(z) and sigma_x = scale * sigma, so
    log N(x; g_x(z), diag sigma_x^2) = log N(y; g(z), diag sigma^2) - sum_j log scale_j,
every log-likelihood is in the data's own units (the change of variables included) and every consumer
(training, scoring, sampling, plots) sees x. sigma, sigma_min and the history's sigma are in y's units.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor, nn

from .config import DecoderConfig
from .mixing import activation_derivative, activation_fn
from .ppca import LinearStart, linear_start


def _softplus_inv(y: float) -> float:
    return y + math.log(-math.expm1(-y)) if y < 20 else y


class MLP(nn.Module):
    """in -> hidden... -> out, the activation between layers, a linear last layer; with hidden layers, plus a
    linear path beside them (`skip`, no bias): out = layers(h) + h skip^T. The linear path starts at zero
    (the function at a random start is the plain MLP's) and carries the linear start (`start_linear`)."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], d_out: int, activation: str):
        super().__init__()
        widths = [d_in, *hidden, d_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        # zeros, not nn.Linear: drawing its initial weights would shift every later module's random start
        self.skip = nn.Parameter(torch.zeros(d_out, d_in)) if hidden else None  # (d_out, d_in)
        self.activation = activation
        self._act = activation_fn(activation)
        self._act_grad = activation_derivative(activation)

    def forward(self, h: Tensor) -> Tensor:
        x = h
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self._act(h)
        return h if self.skip is None else h + x @ self.skip.T

    @torch.no_grad()
    def start_linear(self, weight: Tensor, bias: Tensor) -> None:
        """Make the net the affine map h -> weight h + bias: the linear path (or the one layer) takes it, the
        last layer of the nonlinear part starts at zero output (its gradient still reaches every layer once
        it moves). weight (d_out, d_in), bias (d_out,)."""
        last = self.layers[-1]
        if self.skip is None:
            last.weight.copy_(weight)
        else:
            self.skip.copy_(weight)
            last.weight.zero_()
        last.bias.copy_(bias)

    def forward_and_jacobian(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """The output and its Jacobian in one pass (forward mode by the chain rule, layer by layer):
        h (B, d_in) -> out (B, d_out), J (B, d_out, d_in)."""
        x, t = h, None  # t: d h / d input, (B, d_in, width); the first layer's is its weight
        for i, layer in enumerate(self.layers):
            u = layer(h)
            t = layer.weight.T.expand(h.shape[0], -1, -1) if t is None else t @ layer.weight.T
            if i < len(self.layers) - 1:
                h = self._act(u)
                t = t * self._act_grad(u, h).unsqueeze(1)
            else:
                h = u
        J = t.transpose(1, 2)  # (B, d_out, d_in)
        if self.skip is None:
            return h, J.contiguous()  # a copy: one layer's t is a view of its weight
        return h + x @ self.skip.T, J + self.skip


class Decoder(nn.Module):
    """p_theta(x | z) = N(x; shift + scale * g_theta(z), diag (scale * sigma)^2). A `LatentGaussianModel`."""

    def __init__(self, n: int, cfg: DecoderConfig, sigma_init: float, sigma_min: float,
                 shift: Tensor | None = None, scale: Tensor | None = None):
        super().__init__()
        self.n, self.m = n, cfg.m
        self.hidden = tuple(cfg.hidden)
        self.activation = cfg.activation
        self.sigma_mode = cfg.sigma_mode
        self.sigma_min = float(sigma_min)
        self.preprocess = cfg.preprocess
        self.net = MLP(cfg.m, self.hidden, n, cfg.activation)
        size = 1 if cfg.sigma_mode == "shared" else n
        rho = torch.full((size,), _softplus_inv(max(sigma_init - sigma_min, 1e-6)))
        self.rho = nn.Parameter(rho, requires_grad=cfg.learn_sigma)
        self.register_buffer("data_shift", torch.zeros(n) if shift is None else shift.float().clone())  # (n,)
        self.register_buffer("data_scale", torch.ones(n) if scale is None else scale.float().clone())  # (n,)

    def to_model_units(self, x: Tensor) -> Tensor:
        """y = (x - shift) / scale, the units g and sigma act in: (..., n) -> (..., n)."""
        if self.preprocess == "none":
            return x
        return x - self.data_shift if self.preprocess == "center" else (x - self.data_shift) / self.data_scale

    def _to_data(self, y: Tensor) -> Tensor:
        if self.preprocess == "none":
            return y
        return self.data_shift + y if self.preprocess == "center" else self.data_shift + self.data_scale * y

    def mean(self, z: Tensor) -> Tensor:
        """shift + scale * g_theta(z): (..., m) -> (..., n), through the net as one (rows, m) matrix (batched
        3-D inputs cost extra copies in the backward pass)."""
        return self._to_data(self.net(z.reshape(-1, self.m))).reshape(*z.shape[:-1], self.n)

    def forward(self, z: Tensor) -> Tensor:
        return self.mean(z)

    def mean_and_jacobian(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The mean and its Jacobian in one pass: z (B, m) -> (B, n), (B, n, m)."""
        g, J = self.net.forward_and_jacobian(z)
        if self.preprocess == "standardize":
            J = self.data_scale.view(1, -1, 1) * J
        return self._to_data(g), J

    def widths(self) -> list[int]:
        """Layer widths from the latent to the data: [m, *hidden, n]."""
        return [self.m, *self.hidden, self.n]

    def macs_per_row(self) -> int:
        """Multiply-adds of g_theta for one latent point."""
        skip = 0 if self.net.skip is None else self.m * self.n
        return skip + sum(layer.in_features * layer.out_features for layer in self.net.layers)

    def model_sigma(self) -> Tensor:
        """sigma in the model's units (those of y; the floor applies here): () shared, (n,) per dimension."""
        s = self.sigma_min + nn.functional.softplus(self.rho)
        return s[0] if self.sigma_mode == "shared" else s

    def sigma(self) -> Tensor:
        """sigma in the data's units: scale * the model's sigma, (n,) when standardising."""
        s = self.model_sigma()
        return self.data_scale * s if self.preprocess == "standardize" else s

    def sigma_mean(self) -> float:
        """sigma averaged over coordinates, as a float for the history: computed on the host from one read
        of rho (the trainer records it every step; tensor ops would cost several kernel launches)."""
        rho = self.rho.detach().tolist()
        return self.sigma_min + sum(max(r, 0.0) + math.log1p(math.exp(-abs(r))) for r in rho) / len(rho)

    def set_sigma(self, value: Tensor) -> None:
        """Set the model's sigma (in y's units, clamped just above the floor), e.g. to its closed-form optimum."""
        target = (value.detach() - self.sigma_min).clamp_min(1e-8)
        with torch.no_grad():
            self.rho.copy_((target + torch.log(-torch.expm1(-target))).expand_as(self.rho))

    def at_floor(self, rel: float = 0.01) -> bool:
        """True when sigma sits within 1% of the floor sigma_min (reported, never hidden)."""
        if self.sigma_min <= 0:
            return False
        return bool((self.model_sigma().detach() <= self.sigma_min * (1 + rel)).any())

    @property
    def is_linear(self) -> bool:
        return len(self.hidden) == 0

    @property
    def sigma_identified(self) -> bool:
        """A linear decoder with m >= n identifies only W W^T + sigma^2 I, not sigma."""
        return not (self.is_linear and self.m >= self.n)

    def describe(self) -> dict:
        """Architecture as JSON: enough to rebuild it in plain PyTorch (docs/formats.md)."""
        return {
            "kind": "decoder", "n": self.n, "m": self.m, "hidden": list(self.hidden),
            "activation": self.activation, "sigma_mode": self.sigma_mode, "sigma_min": self.sigma_min,
            "sigma": self.sigma().detach().cpu().reshape(-1).tolist(),
            "sigma_parameterisation": "sigma = sigma_min + softplus(rho), times data_scale when standardising",
            "preprocess": self.preprocess, "data_shift": self.data_shift.cpu().tolist(),
            "data_scale": self.data_scale.cpu().tolist(),
            "layers": [f"net.layers.{i}" for i in range(len(self.net.layers))],
            "linear_path": None if self.net.skip is None else "net.skip",
            "mean": "g(z) = layers(z) + z net.skip^T (the linear path, with hidden layers)",
        }


class Encoder(nn.Module):
    """q_phi(z | x) = N(z; mu_phi(x), diag s_phi(x)^2); an MLP outputs (mu, log s)."""

    def __init__(self, n: int, m: int, hidden: tuple[int, ...], activation: str,
                 shift: Tensor | None = None, scale: Tensor | None = None):
        super().__init__()
        self.n, self.m = n, m
        self.hidden = tuple(hidden)
        self.activation = activation
        self.net = MLP(n, self.hidden, 2 * m, activation)
        self.normalise = shift is not None
        self.register_buffer("data_shift", torch.zeros(n) if shift is None else shift.float().clone())  # (n,)
        self.register_buffer("data_scale", torch.ones(n) if scale is None else scale.float().clone())  # (n,)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, n) -> mu (B, m), log s (B, m); log s clamped to [-12, 6] for stability. With the decoder's
        preprocessing, the net sees (x - shift) / scale."""
        out = self.net((x - self.data_shift) / self.data_scale if self.normalise else x)
        return out[..., : self.m], out[..., self.m :].clamp(-12.0, 6.0)

    def describe(self) -> dict:
        return {"kind": "encoder", "n": self.n, "m": self.m, "hidden": list(self.hidden),
                "activation": self.activation, "normalise": self.normalise,
                "outputs": "mu = out[:, :m], log_s = out[:, m:]",
                "layers": [f"net.layers.{i}" for i in range(len(self.net.layers))],
                "linear_path": None if self.net.skip is None else "net.skip"}

    @torch.no_grad()
    def start_from(self, start: LinearStart) -> None:
        """q(z | x) = the linear model's exact posterior: mu = M^-1 W^T (y - mean), s = sqrt(sigma^2 / diag M)
        (diagonal for PPCA's W with R = I), y the units the decoder works in (this encoder's input)."""
        A = torch.as_tensor((start.W / start.posterior_precision_diag()).T)  # (m, n)
        weight = torch.zeros(2 * self.m, self.n, dtype=torch.float64)
        weight[: self.m] = A
        bias = torch.cat([-A @ torch.as_tensor(start.mean), torch.as_tensor(np.log(start.posterior_sd()))])
        self.net.start_linear(weight.to(self.net.layers[-1].weight.dtype), bias.to(self.net.layers[-1].bias.dtype))


def data_scale(x: Tensor) -> float:
    """Mean per-coordinate standard deviation of the data: the unit for sigma's defaults."""
    return float(x.std(0).mean().clamp_min(1e-12)) if x.shape[0] > 1 else 1.0


def preprocessing(x_train: Tensor, kind: str) -> tuple[Tensor | None, Tensor | None]:
    """shift and scale of y = (x - shift) / scale from the training points: none, centre (the column means),
    standardise (and the column standard deviations; a constant column keeps scale 1)."""
    if kind == "none":
        return None, None
    x = x_train.double()
    shift = x.mean(0)
    if kind == "center":
        return shift, torch.ones_like(shift)
    sd = x.std(0) if x.shape[0] > 1 else torch.ones_like(shift)
    return shift, torch.where(sd > 0, sd, torch.ones_like(sd))


def build_decoder(n: int, cfg: DecoderConfig, x_train: Tensor) -> Decoder:
    """Decoder with the documented defaults, in y's units: sigma_init = 0.5 * scale(y), sigma_min = 1e-3 *
    scale(y), g starting at y's mean."""
    shift, scale = preprocessing(x_train, cfg.preprocess)
    y = x_train if shift is None else ((x_train.double() - shift) / scale).to(x_train.dtype)
    unit = data_scale(y)
    sigma_min = 1e-3 * unit if cfg.sigma_min is None else cfg.sigma_min
    sigma_init = 0.5 * unit if cfg.sigma_init is None else cfg.sigma_init
    sigma_init = max(sigma_init, sigma_min * 1.5 + 1e-12)
    dec = Decoder(n, cfg, sigma_init, sigma_min, shift, scale)
    with torch.no_grad():  # start g at the data mean
        dec.net.layers[-1].bias.copy_(y.mean(0).to(dec.net.layers[-1].bias.dtype))
    return dec


def start_linear(decoder: Decoder, x_train: Tensor, keep_sigma: bool = False) -> tuple[LinearStart, np.ndarray]:
    """Put the decoder at the closed-form linear fit of its m (`ppca.linear_start`, in y's units): g(z) = W z +
    mean through the linear path, the nonlinear part's output zero, sigma from the fit (unless `keep_sigma`,
    a sigma the user set). Its log-likelihood is then PPCA's exactly. Returns the fit, whose exact posterior
    starts the estimators' per-point state, and the training points in y's units (N, n), float64."""
    y = decoder.to_model_units(x_train.double().to(decoder.data_shift.device)).cpu().numpy()
    sigma_now = float(decoder.model_sigma().detach().reshape(-1)[0])
    start = linear_start(y, decoder.m, sigma_now**2, (1.5 * decoder.sigma_min) ** 2)
    layer = decoder.net.layers[-1]
    decoder.net.start_linear(torch.as_tensor(start.W, dtype=layer.weight.dtype, device=layer.weight.device),
                             torch.as_tensor(start.mean, dtype=layer.bias.dtype, device=layer.bias.device))
    if keep_sigma:
        start.sigma2 = sigma_now**2  # W from the fit, sigma as set: no longer PPCA's optimum, still linear
    else:
        decoder.set_sigma(torch.tensor(math.sqrt(start.sigma2), dtype=decoder.rho.dtype, device=decoder.rho.device))
    return start, y
