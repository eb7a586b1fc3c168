"""Every setting of a run, as dataclasses, with validation and a JSON round trip.

One `RunConfig` flows from the GUI panels (or the CLI flags) to the worker and the engine. `validate()`
raises `ConfigError` naming the field, the value and the allowed range; it never raises anything else.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .estimator_table import ESTIMATORS, GRID_ESTIMATORS
from .likelihood.rules import rule_points

MIXINGS = ("linear", "polynomial", "sigmoid", "mlp")
SIGMOID_KINDS = ("logistic", "tanh")
ACTIVATIONS = ("tanh", "relu", "leaky_relu", "elu", "softplus", "sigmoid")
PROPOSALS = ("prior", "laplace")
SAMPLERS = ("langevin", "hmc")
SIGMA_MODES = ("shared", "per_dim")
PREPROCESS = ("none", "center", "standardize")
VAE_SIGMA_UPDATES = ("learned", "closed_form")
SCHEDULES = ("plateau", "cosine", "constant")
INITS = ("ppca", "random")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A setting outside its allowed range. `field` is the dotted path, e.g. `simulation.sigma`."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = repr(value)
        super().__init__(f"{field}: got {shown if len(shown) <= 60 else shown[:57] + '...'}; {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond the float range (JSON integers have any size)
        return False


def _int_in(path: str, v: Any, lo: int, hi: int) -> None:
    if not _is_int(v) or not lo <= v <= hi:
        raise ConfigError(path, v, f"expected an integer from {lo} to {hi}")


def _real_in(path: str, v: Any, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = _is_real(v) and (v > lo if open_lo else v >= lo) and v <= hi
    if not ok:
        bracket = "(" if open_lo else "["
        raise ConfigError(path, v, f"expected a number in {bracket}{lo:g}, {hi:g}]")


def _choice(path: str, v: Any, options: tuple[str, ...]) -> None:
    if v not in options:
        raise ConfigError(path, v, f"expected one of {', '.join(options)}")


def _bool(path: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise ConfigError(path, v, "expected true or false")


def _layers(path: str, v: Any, *, allow_empty: bool) -> None:
    ok = isinstance(v, (tuple, list)) and all(_is_int(h) and 1 <= h <= 4096 for h in v) and len(v) <= 8
    if not ok or (not allow_empty and len(v) == 0):
        need = "" if allow_empty else "at least one, "
        raise ConfigError(path, v, f"expected {need}at most 8 layer widths, each an integer from 1 to 4096")


@dataclass
class SimulationConfig:
    """The true model Z ~ N(0, I_m), X | Z ~ N(f(Z), sigma^2 I_n) and how many points to draw."""

    mixing: str = "polynomial"  # f: linear | polynomial | sigmoid | mlp
    n: int = 1  # data dimension
    m: int = 1  # latent dimension
    sigma: float = 0.1  # observation noise standard deviation
    samples: int = 2000  # number of points N
    seed: int = 0
    degree: int = 3  # polynomial degree d
    sigmoid_kind: str = "logistic"  # logistic | tanh
    mlp_depth: int = 2  # hidden layers of the random MLP
    mlp_width: int = 16
    mlp_activation: str = "leaky_relu"
    scale: float = 1.0  # overall scale of the random coefficients

    def validate(self, prefix: str = "simulation") -> None:
        _choice(f"{prefix}.mixing", self.mixing, MIXINGS)
        _int_in(f"{prefix}.n", self.n, 1, 1000)
        _int_in(f"{prefix}.m", self.m, 1, 100)
        _real_in(f"{prefix}.sigma", self.sigma, 0.0, 1e3, open_lo=True)
        _int_in(f"{prefix}.samples", self.samples, 2, 10_000_000)
        _int_in(f"{prefix}.seed", self.seed, 0, 2**63 - 1)
        _int_in(f"{prefix}.degree", self.degree, 1, 9)
        _choice(f"{prefix}.sigmoid_kind", self.sigmoid_kind, SIGMOID_KINDS)
        _int_in(f"{prefix}.mlp_depth", self.mlp_depth, 1, 8)
        _int_in(f"{prefix}.mlp_width", self.mlp_width, 1, 1024)
        _choice(f"{prefix}.mlp_activation", self.mlp_activation, ACTIVATIONS)
        _real_in(f"{prefix}.scale", self.scale, 0.0, 1e3, open_lo=True)


@dataclass
class DecoderConfig:
    """g_theta: an MLP from R^m to R^n (no hidden layers = linear), and the noise scale sigma."""

    m: int = 1  # latent dimension of the fitted model
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    sigma_mode: str = "shared"  # one sigma, or one per output dimension
    learn_sigma: bool = True
    sigma_init: float | None = None  # None: the linear start's (init ppca), else half the data's mean spread
    sigma_min: float | None = None  # floor; None: 1e-3 times the data's mean standard deviation; 0: none
    preprocess: str = "none"  # none | center | standardize: g and sigma act on (x - shift) / scale (networks.py)
    init: str = "ppca"  # ppca: start at the closed-form linear fit of this m (networks.start_linear); random

    def validate(self, prefix: str = "decoder") -> None:
        _int_in(f"{prefix}.m", self.m, 1, 100)
        _layers(f"{prefix}.hidden", self.hidden, allow_empty=True)
        _choice(f"{prefix}.activation", self.activation, ACTIVATIONS)
        _choice(f"{prefix}.sigma_mode", self.sigma_mode, SIGMA_MODES)
        _choice(f"{prefix}.preprocess", self.preprocess, PREPROCESS)
        _choice(f"{prefix}.init", self.init, INITS)
        _bool(f"{prefix}.learn_sigma", self.learn_sigma)
        if self.sigma_init is not None:
            _real_in(f"{prefix}.sigma_init", self.sigma_init, 0.0, 1e3, open_lo=True)
        if self.sigma_min is not None:
            _real_in(f"{prefix}.sigma_min", self.sigma_min, 0.0, 1e3)
        if self.sigma_init is not None and self.sigma_min is not None and self.sigma_init <= self.sigma_min:
            raise ConfigError(f"{prefix}.sigma_init", self.sigma_init, f"must exceed sigma_min={self.sigma_min:g}")


@dataclass
class EstimatorConfig:
    """Which objective is maximised, and the settings of that estimator of log p(x)."""

    name: str = "mle-adaptive"
    nodes: int | None = None  # Gauss-Hermite nodes per latent dimension; None: by m (default_nodes)
    samples: int = 16  # K: importance samples (mle-importance, iwae)
    proposal: str = "laplace"  # mle-importance: prior | laplace
    sampler: str = "langevin"  # mle-mcem: langevin (MALA) | hmc
    mcmc_steps: int = 5  # MCMC transitions per training step (mle-mcem)
    leapfrog_steps: int = 5  # HMC leapfrog steps per transition
    target_accept: float = 0.6  # step size adapted towards this acceptance rate
    encoder_hidden: tuple[int, ...] = (64, 64)
    beta: float = 1.0  # KL weight of the ELBO
    warmup_steps: int = 0  # KL weight ramps linearly from 0 to beta over these steps
    dreg: bool = False  # doubly-reparameterised encoder gradient (iwae)
    vae_sigma: str = "learned"  # learned | closed_form (sigma^2 = mean squared reconstruction error)

    def validate(self, prefix: str = "estimator") -> None:
        _choice(f"{prefix}.name", self.name, ESTIMATORS)
        if self.nodes is not None:
            _int_in(f"{prefix}.nodes", self.nodes, 2, 200)
        _int_in(f"{prefix}.samples", self.samples, 1, 100_000)
        _choice(f"{prefix}.proposal", self.proposal, PROPOSALS)
        _choice(f"{prefix}.sampler", self.sampler, SAMPLERS)
        _int_in(f"{prefix}.mcmc_steps", self.mcmc_steps, 1, 1000)
        _int_in(f"{prefix}.leapfrog_steps", self.leapfrog_steps, 1, 100)
        _real_in(f"{prefix}.target_accept", self.target_accept, 0.05, 0.99)
        _layers(f"{prefix}.encoder_hidden", self.encoder_hidden, allow_empty=True)
        _real_in(f"{prefix}.beta", self.beta, 0.0, 100.0)
        _int_in(f"{prefix}.warmup_steps", self.warmup_steps, 0, 10_000_000)
        _bool(f"{prefix}.dreg", self.dreg)
        _choice(f"{prefix}.vae_sigma", self.vae_sigma, VAE_SIGMA_UPDATES)


DEFAULT_MAX_STEPS = 100_000  # the step cap of a run given neither steps nor a time limit


@dataclass
class TrainingConfig:
    """The one training loop: optimiser, when it stops, validation split, device and seed.

    A run stops when it has converged (trainer.Convergence: the held-out estimate gained less than `tol`
    nats per point over `patience` evaluations at the plateau schedule's smallest learning rate), or at a cap:
    `steps`, `time_limit`, whichever comes first; with neither, DEFAULT_MAX_STEPS steps. The cosine schedule is
    laid over the caps and runs to them (it needs one)."""

    steps: int | None = None  # step cap; None: DEFAULT_MAX_STEPS without a time limit, none with one
    batch_size: int = 256
    lr: float = 3e-3
    schedule: str = "plateau"  # plateau: lr halved after `patience` evaluations without gain | cosine | constant
    tol: float = 1e-3  # nats per point: a smaller gain of the held-out estimate over the window is no gain
    val_fraction: float = 0.2
    eval_every: int = 200  # held-out log-likelihood every this many steps
    patience: int = 10  # evaluations in the convergence window; 0: no test (train to the cap, keep the last state)
    snapshot_every: int = 25  # progress callback every this many steps (capped at trainer.MAX_PROGRESS_RATE a second)
    time_limit: float | None = None  # time cap in seconds; the cosine schedule ends with it
    threads: int = 0  # torch intra-op threads; 0: auto (engine/threads.py)
    device: str = "auto"
    seed: int = 0

    def validate(self, prefix: str = "training") -> None:
        if self.steps is not None:
            _int_in(f"{prefix}.steps", self.steps, 1, 10_000_000)
        _int_in(f"{prefix}.batch_size", self.batch_size, 1, 1_000_000)
        _real_in(f"{prefix}.lr", self.lr, 0.0, 10.0, open_lo=True)
        _choice(f"{prefix}.schedule", self.schedule, SCHEDULES)
        _real_in(f"{prefix}.tol", self.tol, 0.0, 1e3)
        _real_in(f"{prefix}.val_fraction", self.val_fraction, 0.0, 0.9)
        _int_in(f"{prefix}.eval_every", self.eval_every, 1, 10_000_000)
        _int_in(f"{prefix}.patience", self.patience, 0, 100_000)
        _int_in(f"{prefix}.snapshot_every", self.snapshot_every, 1, 10_000_000)
        if self.time_limit is not None:
            _real_in(f"{prefix}.time_limit", self.time_limit, 0.0, 1e7, open_lo=True)
        _int_in(f"{prefix}.threads", self.threads, 0, 1024)
        _choice(f"{prefix}.device", self.device, DEVICES)
        _int_in(f"{prefix}.seed", self.seed, 0, 2**63 - 1)
        if self.schedule == "cosine" and self.steps is None and self.time_limit is None:
            raise ConfigError(f"{prefix}.schedule", self.schedule, "the cosine schedule is laid over a budget: "
                              "set training.steps or training.time_limit, or take the plateau schedule")

    @property
    def max_steps(self) -> int | None:
        """The step cap in force: `steps`, else DEFAULT_MAX_STEPS when there is no time limit either."""
        if self.steps is not None:
            return self.steps
        return DEFAULT_MAX_STEPS if self.time_limit is None else None


@dataclass
class RunConfig:
    """Everything a run needs: where the data come from, the model, the estimator, the training."""

    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def validate(self) -> None:
        self.simulation.validate()
        self.decoder.validate()
        self.estimator.validate()
        self.training.validate()
        validate_estimator_for_latent_dim(self.estimator, self.decoder.m)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: Any, validate: bool = True) -> RunConfig:
        """From a dict (unknown keys refused, missing ones default); `validate=False` leaves the range checks
        to the caller (the CLI applies its flags first)."""
        if not isinstance(d, dict):
            raise ConfigError("config", type(d).__name__, "expected a JSON object")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"config.{sorted(map(str, unknown))[0]}", "...", "unknown section; expected " + ", ".join(
                f.name for f in dataclasses.fields(cls)))
        parts = {}
        for f in dataclasses.fields(cls):
            sub_cls = {"simulation": SimulationConfig, "decoder": DecoderConfig,
                       "estimator": EstimatorConfig, "training": TrainingConfig}[f.name]
            parts[f.name] = section_from_dict(sub_cls, d.get(f.name, {}), f.name, validate)
        cfg = cls(**parts)
        if validate:
            cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, text: str, validate: bool = True) -> RunConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"line {e.lineno}", f"not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer over 4300 digits, nesting too deep
            raise ConfigError("config", "...", f"not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
        return cls.from_dict(d, validate)


def section_from_dict(cls: type, d: Any, prefix: str, validate: bool = True) -> Any:
    """Build one config section from a dict; unknown keys are refused, missing keys take defaults."""
    if not isinstance(d, dict):
        raise ConfigError(prefix, type(d).__name__, "expected a JSON object")
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k in d:
        if k not in names:
            raise ConfigError(f"{prefix}.{k}", d[k], "unknown setting; expected one of " + ", ".join(names))
    kwargs = {}
    for k, v in d.items():
        if k in ("hidden", "encoder_hidden") and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    obj = cls(**kwargs)
    if validate:
        obj.validate(prefix)
    return obj


# Grid points per batch that mle-quadrature's default node count may use (its fixed grid, once per batch).
FIXED_GRID_BUDGET = 256
MAX_GRID_POINTS = 20_000
# mle-adaptive's default rule: 16 Gauss-Hermite nodes for m = 1, the compact degree-5 rule (3 nodes) for m >= 2;
# degree 3 (the 2^m grid) lets the fit fold, and degree 7 costs more than it gains (docs/math.md §3.2).
ADAPTIVE_NODES_1D = 16
ADAPTIVE_NODES = 3


def default_nodes(name: str, m: int) -> int:
    """Gauss-Hermite nodes per dimension taken when `nodes` is None. mle-quadrature: the most, up to 200,
    whose tensor grid has at most 256 points a batch (200 for m = 1, 16 for m = 2, 6 for m = 3).
    mle-adaptive: 16 for m = 1; 3 for m >= 2, the compact rule of degree 5 (`likelihood.rules`): 7 points
    for m = 2, 1 + 2m + 2^m for m >= 3 (15 for m = 3, 25 for m = 4)."""
    if name != "mle-quadrature":
        return ADAPTIVE_NODES_1D if m == 1 else ADAPTIVE_NODES
    nodes = 2
    while nodes < 200 and rule_points(m, nodes + 1, adaptive=False) <= FIXED_GRID_BUDGET:
        nodes += 1
    return nodes


def resolved_nodes(est: EstimatorConfig, m: int) -> int:
    """The node count a run uses: the configured one, else `default_nodes`."""
    return est.nodes if est.nodes is not None else default_nodes(est.name, m)


def validate_estimator_for_latent_dim(est: EstimatorConfig, m: int) -> None:
    """Quadrature costs a decoder pass per rule point (nodes^m, or a compact rule's for mle-adaptive):
    mle-quadrature for m <= 3, and at most MAX_GRID_POINTS points for either quadrature."""
    if est.name == "mle-quadrature" and m > 3:
        raise ConfigError("estimator.name", est.name,
                          f"tensor-grid quadrature needs latent dimension m <= 3 (m = {m}); "
                          "use mle-adaptive, mle-importance or mle-mcem")
    if est.name in GRID_ESTIMATORS:
        nodes = resolved_nodes(est, m)
        adaptive = est.name == "mle-adaptive"
        points = rule_points(m, nodes, adaptive)
        if points > MAX_GRID_POINTS:
            fewer_fit = est.nodes is not None and rule_points(m, 2, adaptive) <= MAX_GRID_POINTS
            fix = "lower the nodes" if fewer_fit else "use mle-importance"
            raise ConfigError("estimator.nodes", est.nodes,
                              f"{nodes} nodes for m = {m} make a rule of {points} points; expected at most "
                              f"{MAX_GRID_POINTS} ({fix})")
