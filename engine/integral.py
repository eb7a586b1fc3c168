"""The integral p(x) = ∫ p(x | z) p(z) dz of one point, exactly and as the run's estimator sees it (m <= 2).

Exact: on a uniform grid z_g of spacings h_1..h_m over a box that holds the posterior's mass,

    log p(x) = log Σ_g h_1..h_m p(x, z_g),        p(z_g | x) = exp(log p(x, z_g) - log p(x)),

a Riemann sum, the trapezoidal rule up to the edge terms, which are negligible (below TAIL of the peak);
nodes doubled until log p(x) moves less than `tol`, or up to FINE_CAP nodes per axis (`grid_change` says
how far from `tol` that left it). The box follows the mass, wherever it is: it starts at the
hull of the Laplace approximation N(mu, H^-1) (global Gauss-Newton search, `engine.likelihood.laplace`)
and of where a coarse scan of the prior's region finds non-negligible mass, and it grows where an edge
is not negligible. The grid shown is the box where p(z | x) >= SHOWN of its peak (so its edges are
negligible to the eye), widened to hold what the estimator puts weight on.

The estimator's picture, one record per family, each from the code that estimator trains with:

    mle-quadrature   nodes u_g of the fixed Gauss-Hermite rule, posterior weights
                     w~_g = softmax_g(log w_g + log p(x | u_g)),  log p(x) ≈ log Σ_g w_g p(x | u_g)
    mle-adaptive     nodes z_g = mu + L u_g of the run's rule on the Gaussian N(mu, L L^T) that training's
                     refinements converge to (from the Laplace fit, refined REFINEMENTS times), w~_g = softmax_g(t_g),
                     t_g = log w_g + log p(x, z_g) - log N(u_g; 0, I) + log |det L|,  log p(x) ≈ log Σ_g e^t_g
    mle-importance   K draws z_k ~ q (the prior, or the Laplace approximation mixed defensively with it),
                     w_k = p(x, z_k) / q(z_k | x),  w~_k = w_k / Σ w,  ESS = 1 / Σ_k w~_k^2,
                     log p(x) ≈ log (1/K) Σ_k w_k
    mle-mcem         the states of the run's sampler (MALA or HMC, its transitions per visit, its step-size
                     adaptation) started at the mode, and its acceptance rate; no estimate of log p(x)
    vae, iwae        the encoder's q(z | x) = N(mu_phi(x), diag s_phi(x)^2) and ELBO = E_q log p(x | z) - KL(q ‖ p);
                     iwae also K draws from q, their weights, ESS and IWAE_K = log (1/K) Σ_k w_k

Each says its estimate beside the exact log p(x): the gap log p(x) - estimate is in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import EstimatorConfig, resolved_nodes
from .estimators.mcem import MonteCarloEM
from .estimators.vae import draw_latents, elbo_terms, iwae_bound_at, log_q
from .estimators.vae import log_weights as vae_log_weights
from .evaluate import ScoringStopped, StopFn, as_float64, mean_in_passes
from .likelihood.adaptive import refined_gaussian
from .likelihood.diagnostics import effective_sample_size
from .likelihood.importance import DEFENSIVE_WEIGHT, GaussianProposal, log_mean_exp, proposal_draws
from .likelihood.laplace import candidate_starts, laplace
from .likelihood.quadrature import (
    adaptive_rule,
    adaptive_terms,
    grid_terms,
    hermite_grid,
    log_marginal_dense,
)
from .likelihood.rules import rule_name
from .model import LatentGaussianModel, log_joint, log_likelihood, log_prior
from .networks import Encoder

F64 = torch.float64
TAIL = 1e-12  # the integration box ends where p(x, z) is below TAIL of its peak
SHOWN = 1e-3  # the grid shown ends where p(z | x) is below SHOWN of its peak
MARK_WEIGHT = 1e-3  # nodes and draws with at least this share of the largest weight are kept in view
LOCATE_NODES = {1: 241, 2: 49}  # the scan of starts for the mode search
SCAN_NODES = {1: 4001, 2: 201}  # the coarse scan for mass away from the mode
FINE_NODES = {1: 2001, 2: 201}  # the integration grid's first node count per axis (then doubled)
FINE_CAP = {1: 64001, 2: 801}
CHAIN_TRANSITIONS = 3000  # of the posterior view's chain (mle-mcem), burn-in included about
STOP_TRANSITIONS = 100  # of the view's chain between two calls of should_stop
EXACT_TOL = 1e-9  # nats: the exact log p(x) settles to this, within FINE_CAP
SHOWN_NODES = {1: 1001, 2: 161}
REFINEMENTS = 5  # of the Laplace fit by the adaptive rule's own nodes, as training's visits refine it
ELBO_DRAWS = 4096  # draws of the ELBO's Monte Carlo term for one point
IWAE_REPEATS = 256  # sets of K draws averaged for the IWAE_K bound itself (fewer where K is large: IWAE_DRAWS)
IWAE_DRAWS = 2**18  # draws of those sets at most


# ----------------------------------------------------------------------------------------------- records
@dataclass(kw_only=True)
class Approximation:
    """How one estimator approximates log p(x) for the point: its estimate (or bound) and what it is."""

    estimator: str  # the run's estimator name
    estimate: float | None  # its log p(x) estimate or bound for this point; None: it has none of its own
    estimate_name: str  # "log p(x)", "ELBO", "IWAE_16", ...
    note: str  # one sentence: what is drawn


@dataclass(kw_only=True)
class NodeRule(Approximation):
    """mle-quadrature (fixed nodes u_g) and mle-adaptive (z_g = mu + L u_g on the point's Gaussian)."""

    nodes: np.ndarray  # (G, m) where the integrand is evaluated
    weights: np.ndarray  # (G,) their posterior weights, sum 1
    density: np.ndarray  # (G,) the exact p(z_g | x)
    rule: str  # how many nodes (`likelihood.quadrature.rule_name`)
    adaptive: bool
    centre: np.ndarray | None = None  # (m,) the rule's centre mu (adaptive)
    chol: np.ndarray | None = None  # (m, m) L, the rule's scale (adaptive)


@dataclass(kw_only=True)
class ImportanceDraws(Approximation):
    """mle-importance: K draws from the proposal, their normalised weights and ESS."""

    draws: np.ndarray  # (K, m)
    weights: np.ndarray  # (K,) w~_k, sum 1
    density: np.ndarray  # (K,) the exact p(z_k | x)
    ess: float  # 1 / Σ w~_k^2, in [1, K]
    proposal: str  # "prior" or "laplace"


@dataclass(kw_only=True)
class ChainStates(Approximation):
    """mle-mcem: the chain's states (one per visit, after the run's transitions per visit)."""

    states: np.ndarray  # (T, m)
    density: np.ndarray  # (T,) the exact p(z_t | x)
    acceptance: float  # mean acceptance probability of the transitions kept
    step_size: float  # the adapted step size at the end
    sampler: str  # "langevin" or "hmc"
    transitions: int  # transitions made after the burn-in (visits x transitions per visit)
    burn_in: int  # transitions made before the states kept
    histogram: tuple[np.ndarray, np.ndarray] | None = None  # m = 1: bin edges (J+1,), the states' density (J,)


@dataclass(kw_only=True)
class EncoderQ(Approximation):
    """vae, iwae: the encoder's q(z | x), the ELBO; iwae's K draws from q with their weights and ESS."""

    mean: np.ndarray  # (m,) mu_phi(x)
    scale: np.ndarray  # (m,) s_phi(x)
    elbo: float  # E_q log p(x | z) - KL(q ‖ p), ELBO_DRAWS draws
    levels: tuple[float, ...]  # q's density on its 1- and 2-sd ellipses (contours of the m = 2 view)
    draws: np.ndarray | None = None  # (K, m) iwae
    weights: np.ndarray | None = None  # (K,)
    density: np.ndarray | None = None  # (K,) the exact p(z_k | x)
    ess: float | None = None
    iwae_bound: float | None = None  # mean log (1/K) Σ w_k over `iwae_sets` sets (`estimate`: the drawn set's)
    iwae_sets: int = 0  # IWAE_REPEATS, or IWAE_DRAWS // K where that is fewer


@dataclass
class PointPosterior:
    """p(z | x_i) of one point on a grid that holds its mass (m <= 2), the exact log p(x_i), and how the run's
    estimator approximates it."""

    index: int
    x: np.ndarray  # (n,) the point
    axis: np.ndarray  # (G,) z_1's grid coordinates
    exact: np.ndarray  # (G,) for m = 1, (G, G) for m = 2 indexed [z1, z2]
    encoder: np.ndarray | None = None  # q(z | x) on the same grid (vae, iwae)
    label: str = ""
    axis2: np.ndarray | None = None  # (G,) z_2's grid coordinates (m = 2)
    log_px: float = math.nan  # the exact log p(x), from the integration grid
    approximation: Approximation | None = None
    mode: np.ndarray | None = None  # (m,) the posterior mode found
    grid_nodes: int = 0  # nodes per axis of the integration grid
    grid_change: float = math.nan  # |log p(x)| change at the last doubling of its nodes

    @property
    def gap(self) -> float | None:
        """log p(x) - the estimator's estimate, in nats (>= 0 in expectation for the bounds)."""
        a = self.approximation
        return None if a is None or a.estimate is None else self.log_px - a.estimate


@dataclass
class ExactPosterior:
    """The exact posterior of one point on the grid shown, and log p(x) from the integration grid."""

    axes: list[np.ndarray]  # m arrays (G,), one per latent axis
    density: np.ndarray  # (G,) or (G, G) indexed [z1, z2]
    log_px: float
    mode: np.ndarray  # (m,)
    nodes: int  # of the integration grid, per axis
    change: float


# ----------------------------------------------------------------------------------------- the exact side
def _log_joint_rows(model: LatentGaussianModel, x: Tensor, z: Tensor, should_stop: StopFn | None = None) -> Tensor:
    """log p(x, z) for one point x (1, n) at many z (R, m) -> (R,), through the model in passes (`should_stop`
    asked before each)."""
    return log_likelihood(x, mean_in_passes(model, z, should_stop), model.sigma()) + log_prior(z)


def _box_grid(lo: np.ndarray, hi: np.ndarray, nodes: int) -> tuple[list[Tensor], Tensor, float]:
    """A uniform tensor grid over the box [lo, hi] (m,): axes (m of (nodes,)), points (nodes^m, m) indexed
    [z1, z2] in row-major order, and log h_1..h_m."""
    axes = [torch.linspace(float(a), float(b), nodes, dtype=F64) for a, b in zip(lo, hi, strict=True)]
    z = torch.cartesian_prod(*axes).reshape(-1, len(axes))
    return axes, z, float(sum(math.log((b - a) / (nodes - 1)) for a, b in zip(lo, hi, strict=True)))


def _edges(lj: Tensor, m: int) -> list[tuple[float, float]]:
    """The largest value of a grid's log values (nodes^m,) on each axis' low and high edge faces."""
    if m == 1:
        return [(float(lj[0]), float(lj[-1]))]
    g = lj.reshape(round(lj.numel() ** 0.5), -1)  # [z1, z2]
    return [(float(g[0].max()), float(g[-1].max())), (float(g[:, 0].max()), float(g[:, -1].max()))]


def _hull(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return z.min(0), z.max(0)


@torch.no_grad()
def locate(model: LatentGaussianModel, x: Tensor) -> tuple[Tensor, Tensor]:
    """The Laplace approximation of p(z | x) at its highest mode, for one point x (1, n): Gauss-Newton from the
    best (by log p(x, z)) of zero, the shared candidate starts and a scan of [-6, 6]^m (a global search: a
    posterior can have several modes); mode (1, m) and L (1, m, m) with L L^T = H^-1."""
    m = model.m
    scan = _box_grid(np.full(m, -6.0), np.full(m, 6.0), LOCATE_NODES[m])[1]  # (S, m)
    starts = torch.cat([torch.zeros(1, m, dtype=F64), candidate_starts(m).to(F64), scan])
    return laplace(model, x, torch.zeros(1, m, dtype=F64), starts, iters=30)


@torch.no_grad()
def exact_posterior(model: LatentGaussianModel, x: np.ndarray | Tensor, marks: np.ndarray | None = None,
                    tol: float = EXACT_TOL, shown_nodes: int | None = None,
                    located: tuple[Tensor, Tensor] | None = None, should_stop: StopFn | None = None) -> ExactPosterior:
    """p(z | x) of one point on a grid over its mass (m = 1 or 2) and log p(x) (module docstring).

    `marks` (P, m): points the grid shown must hold (the estimator's nodes or draws that carry weight);
    `located`: `locate(model, x)` when the caller has it already; `should_stop()` True raises ScoringStopped."""
    model = as_float64(model)
    m = model.m
    if m > 2:
        raise ValueError(f"the posterior grid needs m <= 2 (m = {m})")
    xt = torch.as_tensor(np.asarray(x), dtype=F64).reshape(1, -1)
    mode, chol = located if located is not None else locate(model, xt)
    mu = mode[0].numpy()
    sd = np.sqrt(np.diag((chol[0] @ chol[0].T).numpy()))  # (m,)
    log_tail = math.log(TAIL)
    peak = float(_log_joint_rows(model, xt, mode))

    # 1. where is the mass? the Laplace box, and whatever a coarse scan of the prior's region (and the mode's) finds
    lo, hi = np.minimum(-8.0, mu - 10 * sd), np.maximum(8.0, mu + 10 * sd)
    _, z, _ = _box_grid(lo, hi, SCAN_NODES[m])
    lj = _log_joint_rows(model, xt, z, should_stop)  # (S,)
    peak = max(peak, float(lj.max()))
    step = (hi - lo) / (SCAN_NODES[m] - 1)
    heavy = z[lj >= peak + log_tail].numpy()
    lo, hi = mu - 8 * sd, mu + 8 * sd
    if len(heavy):
        h_lo, h_hi = _hull(heavy)
        lo, hi = np.minimum(lo, h_lo - step), np.maximum(hi, h_hi + step)

    # 2. integrate: grow the box where an edge is not negligible, double the nodes until log p(x) settles
    nodes, change = FINE_NODES[m], math.inf
    for _ in range(40):
        axes, z, log_h = _box_grid(lo, hi, nodes)
        lj = _log_joint_rows(model, xt, z, should_stop)  # (nodes^m,)
        peak = max(peak, float(lj.max()))
        log_px = float(torch.logsumexp(lj, 0)) + log_h
        grown = False
        for j, (e_lo, e_hi) in enumerate(_edges(lj, m)):
            width = hi[j] - lo[j]
            if e_lo > peak + log_tail:
                lo[j] -= 0.5 * width
                grown = True
            if e_hi > peak + log_tail:
                hi[j] += 0.5 * width
                grown = True
        if grown:
            continue
        # the same rule on every other node (spacing 2h): how far the grid is from convergence
        sub = lj.reshape((nodes,) * m)[(slice(None, None, 2),) * m].reshape(-1)
        change = abs(float(torch.logsumexp(sub, 0)) + log_h + m * math.log(2.0) - log_px)
        if change < tol or 2 * nodes - 1 > FINE_CAP[m]:
            break
        nodes = 2 * nodes - 1

    # 3. the grid shown: where p(z | x) >= SHOWN of its peak, and the marks, with a margin
    heavy = z[lj >= float(lj.max()) + math.log(SHOWN)].numpy()
    s_lo, s_hi = _hull(heavy) if len(heavy) else (mu - 4 * sd, mu + 4 * sd)
    if marks is not None and len(marks):
        s_lo, s_hi = np.minimum(s_lo, marks.min(0)), np.maximum(s_hi, marks.max(0))
    pad = 0.12 * np.maximum(s_hi - s_lo, 1e-9)
    shown = shown_nodes or SHOWN_NODES[m]
    axes, z, _ = _box_grid(s_lo - pad, s_hi + pad, shown)
    density = (_log_joint_rows(model, xt, z, should_stop) - log_px).exp().reshape((shown,) * m)
    return ExactPosterior([a.numpy() for a in axes], density.numpy(), log_px, mu, nodes, change)


@torch.no_grad()
def posterior_density(model: LatentGaussianModel, x: Tensor, z: np.ndarray, log_px: float) -> np.ndarray:
    """p(z | x) = exp(log p(x, z) - log p(x)) at points z (P, m) -> (P,)."""
    if len(z) == 0:
        return np.zeros(0)
    return (_log_joint_rows(model, x, torch.as_tensor(z, dtype=F64)) - log_px).exp().numpy()


# ------------------------------------------------------------------------------------ the estimator's side
def _heavy(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The points whose weight is at least MARK_WEIGHT of the largest (the ones the view must hold)."""
    return points[weights >= MARK_WEIGHT * weights.max()] if len(weights) else points


@torch.no_grad()
def quadrature_nodes(model: LatentGaussianModel, x: Tensor, est: EstimatorConfig) -> NodeRule:
    """mle-quadrature: the fixed Gauss-Hermite rule of the run (`engine.estimators.quadrature.GaussHermiteMLE`)."""
    nodes = resolved_nodes(est, model.m)
    u, logw = hermite_grid(model.m, nodes)  # (G, m), (G,)
    estimate = float(log_marginal_dense(model, x, u, logw)[0])
    weights = torch.softmax(grid_terms(x, model.mean(u), model.sigma(), logw)[0][0], -1)  # (G,)
    return NodeRule(estimator=est.name, estimate=estimate, estimate_name="log p(x)", nodes=u.numpy(),
                    weights=weights.numpy(), density=np.zeros(0),
                    rule=rule_name(model.m, nodes, adaptive=False), adaptive=False,
                    note=f"the {nodes}^{model.m} fixed Gauss-Hermite nodes of the prior, area ∝ posterior weight")


@torch.no_grad()
def adaptive_nodes(model: LatentGaussianModel, x: Tensor, est: EstimatorConfig,
                   located: tuple[Tensor, Tensor] | None = None) -> NodeRule:
    """mle-adaptive: the run's rule on the Gaussian its visits converge to (`engine.likelihood.adaptive`):
    from the Laplace fit at the mode, found afresh, refined REFINEMENTS times as a visit refines it."""
    nodes = resolved_nodes(est, model.m)
    u, logw = adaptive_rule(model.m, nodes)  # (G, m), (G,)
    centre, chol = located if located is not None else locate(model, x)  # (1, m), (1, m, m)
    for _ in range(REFINEMENTS):
        _, mean, _ = adaptive_terms(model, x, centre, chol, u, logw)
        centre, chol = refined_gaussian(x, centre, chol, mean, u, logw, model.sigma())
    z, _, terms = adaptive_terms(model, x, centre, chol, u, logw)  # (1, G, m), (1, G): the training code's summands
    estimate = float(torch.logsumexp(terms[0], 0))
    return NodeRule(estimator=est.name, estimate=estimate, estimate_name="log p(x)", nodes=z[0].numpy(),
                    weights=torch.softmax(terms[0], 0).numpy(), density=np.zeros(0),
                    rule=rule_name(model.m, nodes, adaptive=True), adaptive=True,
                    centre=centre[0].numpy(), chol=chol[0].numpy(),
                    note=f"the rule's {rule_name(model.m, nodes, adaptive=True)} on the linearised posterior, "
                         "area ∝ weight")


@torch.no_grad()
def importance_draws(model: LatentGaussianModel, x: Tensor, est: EstimatorConfig, seed: int = 0,
                     located: tuple[Tensor, Tensor] | None = None) -> ImportanceDraws:
    """mle-importance: K draws from the run's proposal (`engine.estimators.importance.ImportanceSamplingMLE`),
    seeded; the Laplace proposal's mode found afresh."""
    proposal = None
    if est.proposal == "laplace":
        mode, chol = located if located is not None else locate(model, x)
        proposal = GaussianProposal(mode, chol, DEFENSIVE_WEIGHT)
    z, lq = proposal_draws(x, model.m, proposal, est.samples, torch.Generator().manual_seed(seed))  # as in training
    lw = (log_joint(model, x, z) - lq)[0]  # (K,) log w_k, as `log_weights` forms them
    ess = float(effective_sample_size(lw.numpy()[None])[0])
    where = "the prior" if proposal is None else "the Laplace approximation mixed with the prior"
    return ImportanceDraws(estimator=est.name, estimate=float(log_mean_exp(lw)), estimate_name="log p(x)",
                           draws=z[0].numpy(), weights=torch.softmax(lw, 0).numpy(), density=np.zeros(0),
                           ess=ess, proposal=est.proposal,
                           note=f"K = {est.samples} draws from {where}, area ∝ normalised weight")


@torch.no_grad()
def chain_states(model: LatentGaussianModel, x: Tensor, est: EstimatorConfig, seed: int = 0, visits: int = 150,
                 burn_in: int = 30, located: tuple[Tensor, Tensor] | None = None,
                 should_stop: StopFn | None = None) -> ChainStates:
    """mle-mcem: the run's sampler (`engine.estimators.mcem.MonteCarloEM`: MALA or HMC, `mcmc_steps`
    transitions per visit, `leapfrog_steps`, the step size adapted towards `target_accept`) on this point,
    started at its mode; `burn_in` visits, then the states after each of `visits` visits, at most
    CHAIN_TRANSITIONS transitions in all or 6 visits (a run with many transitions a visit shows fewer states)."""
    visits = max(5, min(visits, CHAIN_TRANSITIONS // est.mcmc_steps))
    burn_in = min(burn_in, max(1, visits // 5))
    sampler = MonteCarloEM(model, 1, est.sampler, est.mcmc_steps, est.leapfrog_steps, est.target_accept,
                           torch.Generator().manual_seed(seed)).to(F64)
    mode, _ = located if located is not None else locate(model, x)
    sampler.chains[0] = mode[0]
    idx = torch.zeros(1, dtype=torch.long)
    states, accepts = [], []
    for t in range(burn_in + visits):
        accepted = 0.0
        for done in range(0, est.mcmc_steps, STOP_TRANSITIONS):  # a visit in parts, each after a should_stop
            if should_stop is not None and should_stop():
                raise ScoringStopped
            sampler.mcmc_steps = min(STOP_TRANSITIONS, est.mcmc_steps - done)  # the same chain as in one part
            accepted += sampler.objective(x, idx, t).logs["accept"] * sampler.mcmc_steps
        if t >= burn_in:
            states.append(sampler.chains[0].clone())
            accepts.append(accepted / est.mcmc_steps)
    z = torch.stack(states).numpy()  # (T, m)
    histogram = None
    if model.m == 1:
        dens, edges = np.histogram(z[:, 0], bins=max(8, min(40, visits // 8)), density=True)
        histogram = (edges, dens)
    kind = "MALA" if est.sampler == "langevin" else f"HMC ({est.leapfrog_steps} leapfrog steps)"
    return ChainStates(estimator=est.name, estimate=None, estimate_name="log p(x)", states=z, density=np.zeros(0),
                       acceptance=float(np.mean(accepts)), step_size=float(sampler.log_step[0].exp()),
                       sampler=est.sampler, transitions=visits * est.mcmc_steps, burn_in=burn_in * est.mcmc_steps,
                       histogram=histogram,
                       note=f"{visits} states of the {kind} chain, {est.mcmc_steps} transitions apart; MCEM "
                            "estimates the gradient, not log p(x)")


@torch.no_grad()
def encoder_q(model: LatentGaussianModel, encoder: Encoder, x: Tensor, est: EstimatorConfig,
              seed: int = 0) -> EncoderQ:
    """vae, iwae: the encoder's q(z | x) and the ELBO (`engine.estimators.vae`); for iwae K draws from q, their
    weights, ESS, the drawn set's log (1/K) Σ w_k and the IWAE_K bound (its mean over IWAE_REPEATS sets, or as
    many as IWAE_DRAWS draws hold)."""
    enc = as_float64(encoder).cpu()
    gen = torch.Generator().manual_seed(seed)
    rec, kl = elbo_terms(model, x, draw_latents(enc, x, ELBO_DRAWS, gen))
    mu, log_s = enc(x)  # (1, m) each
    s = log_s.exp()[0]
    top = float((-log_s.sum() - 0.5 * model.m * math.log(2 * math.pi)).exp())  # q at its mean
    levels = tuple(top * math.exp(-0.5 * r * r) for r in (2.0, 1.0))
    elbo = float(rec[0] - kl[0])
    if est.name != "iwae":
        return EncoderQ(estimator=est.name, estimate=elbo, estimate_name="ELBO", mean=mu[0].numpy(), scale=s.numpy(),
                        elbo=elbo, levels=levels, note="the encoder's q(z | x); the ELBO is below log p(x) by "
                                                       "KL(q ‖ p(z | x))")
    K = est.samples
    d = draw_latents(enc, x, K, gen)  # (1, K, m)
    lw = vae_log_weights(model, x, d)[0]  # (K,)
    sets = max(1, min(IWAE_REPEATS, IWAE_DRAWS // K))
    xr = x.expand(sets, -1)
    bound = float(iwae_bound_at(model, xr, draw_latents(enc, xr, K, gen)).mean())
    return EncoderQ(estimator=est.name, estimate=float(log_mean_exp(lw)), estimate_name=f"IWAE_{K}",
                    mean=mu[0].numpy(), scale=s.numpy(), elbo=elbo, levels=levels, draws=d.z[0].numpy(),
                    weights=torch.softmax(lw, 0).numpy(), density=np.zeros(0),
                    ess=float(effective_sample_size(lw.numpy()[None])[0]), iwae_bound=bound, iwae_sets=sets,
                    note=f"the encoder's q(z | x) and K = {K} draws from it, area ∝ normalised weight")


def approximation(model: LatentGaussianModel, x: Tensor, est: EstimatorConfig, encoder: Encoder | None = None,
                  seed: int = 0, located: tuple[Tensor, Tensor] | None = None,
                  should_stop: StopFn | None = None) -> Approximation:
    """The record of how the estimator `est.name` approximates log p(x) for the point x (1, n); `located`:
    `locate(model, x)` when the caller has it already; `should_stop()` (asked every STOP_TRANSITIONS of the
    chain) True raises ScoringStopped."""
    if est.name == "mle-quadrature":
        return quadrature_nodes(model, x, est)
    if est.name == "mle-adaptive":
        return adaptive_nodes(model, x, est, located)
    if est.name == "mle-importance":
        return importance_draws(model, x, est, seed, located)
    if est.name == "mle-mcem":
        return chain_states(model, x, est, seed, located=located, should_stop=should_stop)
    if encoder is None:
        raise ValueError(f"{est.name} needs the run's encoder")
    return encoder_q(model, encoder, x, est, seed)


def _marks(a: Approximation) -> np.ndarray | None:
    """What of the approximation the grid shown must hold."""
    if isinstance(a, NodeRule):
        return _heavy(a.nodes, a.weights)
    if isinstance(a, ImportanceDraws):
        return _heavy(a.draws, a.weights)
    if isinstance(a, ChainStates):
        return a.states
    if isinstance(a, EncoderQ):
        ellipse = np.stack([a.mean - 4 * a.scale, a.mean + 4 * a.scale])  # q's mass, all but 1e-4
        return ellipse if a.draws is None else np.concatenate([ellipse, _heavy(a.draws, a.weights)])
    return None


@torch.no_grad()
def point_posterior(decoder: LatentGaussianModel, x: np.ndarray, est: EstimatorConfig,
                    encoder: Encoder | None = None, *, seed: int = 0, index: int = 0,
                    label: str = "", should_stop: StopFn | None = None) -> PointPosterior:
    """The exact posterior of one point x (n,) on a grid that holds its mass, the exact log p(x), and the
    record of how the run's estimator approximates it (with the exact density at its marks).
    `should_stop()` is asked between passes through the model and every STOP_TRANSITIONS of a chain: True
    raises ScoringStopped."""
    model = as_float64(decoder)
    if isinstance(model, torch.nn.Module):
        model = model.cpu()
    xt = torch.as_tensor(np.asarray(x), dtype=F64).reshape(1, -1)
    located = locate(model, xt)  # the highest mode's Laplace approximation: one global search, for both sides
    a = approximation(model, xt, est, encoder, seed, located, should_stop)
    post = exact_posterior(model, xt, _marks(a), located=located, should_stop=should_stop)
    for name in ("nodes", "draws", "states"):  # the exact p(z | x) at the marks, to draw them on its curve
        points = getattr(a, name, None)
        if points is not None:
            a.density = posterior_density(model, xt, points, post.log_px)
    q = None
    if isinstance(a, EncoderQ):
        z = torch.cartesian_prod(*[torch.as_tensor(ax) for ax in post.axes]).reshape(1, -1, model.m)
        mu, log_s = torch.as_tensor(a.mean).reshape(1, -1), torch.as_tensor(np.log(a.scale)).reshape(1, -1)
        q = log_q(z, mu, log_s)[0].exp().reshape(post.density.shape).numpy()  # q(z | x) from the record
    return PointPosterior(index, np.asarray(x, dtype=float).reshape(-1).copy(), post.axes[0], post.density, q, label,
                          post.axes[1] if model.m == 2 else None, post.log_px, a, post.mode, post.nodes, post.change)
