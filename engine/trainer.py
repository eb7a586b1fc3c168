"""The one training loop, for every estimator (direct MLE and VAE alike). No Qt here.

    train(config, data, test=None, on_progress=None, should_stop=None) -> RunResult

Minibatch Adam ascent of the estimator's objective from the closed-form linear fit (`decoder.init`), with a
learning-rate schedule; a held-out estimate at the start and every `eval_every` steps feeds the convergence
test and the plateau schedule (`Convergence`); the run ends converged or at its cap and keeps the best
evaluated state (`TrainingConfig`'s docstring says when it stops); a progress record every
`snapshot_every` steps, but at most MAX_PROGRESS_RATE a second (and always at the last step): a
`progress.TrainingProgress` with the history rows since the previous one and, at most SNAPSHOT_RATE a second
(always the first and the last), a `progress.Snapshot` for the plots; `should_stop()` checked every step.
A non-finite objective or gradient stops the run with a message and the last good parameters.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import __version__
from .alignment import manifold_view
from .config import ConfigError, RunConfig, TrainingConfig
from .display import split_sizes
from .estimators import Estimator, build_estimator
from .evaluate import quick_loglik
from .memory import require
from .networks import Decoder, Encoder, build_decoder, start_linear
from .progress import ProgressFn, RunSetup, Snapshot, TrainingProgress
from .simulate import Dataset
from .threads import apply_threads

StopFn = Callable[[], bool]
FINISHED = ("converged", "cap_reached")  # the statuses of a run that ended as planned (not stopped, not failed)
DISPLAY_POINTS = 500  # training points whose inferred latents are sent to the live plots
MAX_PROGRESS_RATE = 20.0  # progress records per second at most: the curves redraw at 15 Hz
SNAPSHOT_RATE = 5.0  # plot snapshots (learned manifold, inferred latents) per second at most
MONITOR_POINTS = 256  # validation points (a fixed seeded subsample) that the periodic estimate scores
CHECK_POINTS = 4096  # validation points on which the kept state meets the linear start at the end
MAX_ABS_DATA = 1e15  # larger data values overflow the float32 sums of squares of a step
EVAL_SHARE = 0.03  # the periodic estimate's share of the training time, at most (unless patience is on)


@dataclass
class RunResult:
    """What a run leaves: the fitted model, its history and metrics, and how it ended."""

    config: RunConfig
    decoder: Decoder
    encoder: Encoder | None
    history: list[dict[str, float]]
    status: str  # converged | cap_reached | stopped | failed
    message: str
    device: str
    seed: int
    train_idx: np.ndarray
    heldout_idx: np.ndarray
    wall_time: float
    steps_done: int
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    threads: int = 1  # torch intra-op threads it trained with
    heldout_per_point: np.ndarray | None = None  # the last scoring's per-point log p(x) (not saved)
    ppca_per_point: np.ndarray | None = None  # the linear MLE's on the same points (not saved)
    columns: tuple[str, ...] | None = None  # the data's column names, if the file had them
    convergence: dict[str, Any] = field(default_factory=dict)  # `convergence_record`


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when available, else CPU. Asking for CUDA where there is none is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device: cuda requested but torch.cuda.is_available() is False "
                           f"(torch {torch.__version__} is a CPU build or no GPU is visible); use cpu or auto")
    return torch.device(name)


def split_indices(N: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of N rows into training and held-out rows (at least one of each)."""
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed)).numpy()
    n_val = split_sizes(N, val_fraction)[1]
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def monitor_points(x_val: np.ndarray, seed: int, count: int = MONITOR_POINTS) -> np.ndarray:
    """The periodic estimate's points: all validation points, or a seeded subsample of `count`."""
    if len(x_val) <= count:
        return x_val
    rows = np.random.default_rng(seed).choice(len(x_val), count, replace=False)
    return x_val[np.sort(rows)]


def cosine_factor(fraction: float) -> float:
    """Learning-rate factor of the cosine schedule at a fraction of the run done: 1 at 0, 0.05 at 1."""
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def run_fraction(step: int, steps: int | None, elapsed: float, time_limit: float | None) -> float:
    """How much of the budget is spent: steps taken of `steps`, or seconds of `time_limit`, whichever is
    further (0 without either: an open-ended run)."""
    done = step / steps if steps is not None else 0.0
    return max(done, elapsed / time_limit) if time_limit is not None else done


PLATEAU_FACTOR = 0.5  # the plateau schedule's learning-rate cut
MIN_LR_FACTOR = 1 / 32  # its smallest factor (five cuts): a plateau there is convergence
PLATEAU_CUTS = round(math.log(MIN_LR_FACTOR) / math.log(PLATEAU_FACTOR))


@dataclass
class Convergence:
    """The convergence test and the plateau schedule, fed every periodic held-out estimate h_t.

    The window is the last `patience` evaluations; its gain is the mean of h over it minus the mean over the
    `patience` evaluations before (means of noisy estimates: a single lucky evaluation neither hides progress
    nor fakes it). A gain below `tol` nats per point is a plateau, once `patience` evaluations have passed
    since the start or the last cut. At a plateau the plateau schedule multiplies the learning rate by
    PLATEAU_FACTOR, until the factor is MIN_LR_FACTOR, where a plateau is convergence (scikit-learn's `tol` /
    `n_iter_no_change` with PyTorch's ReduceLROnPlateau); under the constant schedule any plateau is. The
    cosine schedule's end is its cap: it records the gains, never converges. `patience` 0: never."""

    schedule: str
    tol: float
    patience: int
    factor: float = 1.0  # the plateau schedule's learning-rate factor now
    best: float = -math.inf
    values: list[float] = field(default_factory=list)  # h_0, h_1, ...
    cuts: list[int] = field(default_factory=list)  # steps at which the learning rate was cut
    converged_at: int | None = None
    since_cut: int = 0  # evaluations since the start or the last cut

    def gain(self) -> float:
        """Mean of the last `patience` estimates minus the mean of the `patience` before (NaN before 2 windows)."""
        w = self.patience
        if w < 1 or len(self.values) < 2 * w:
            return math.nan
        return float(np.mean(self.values[-w:]) - np.mean(self.values[-2 * w: -w]))

    def update(self, step: int, heldout: float) -> bool:
        """Take an evaluation at `step`; True when it improved on the best (the caller keeps that state). A
        non-finite estimate is no evidence either way and is left out."""
        if not math.isfinite(heldout):
            return False
        improved = heldout > self.best
        self.best = max(self.best, heldout)
        self.values.append(heldout)
        self.since_cut += 1
        gain = self.gain()
        if self.schedule != "cosine" and self.since_cut > self.patience and gain <= self.tol:  # NaN: False
            if self.schedule == "plateau" and self.factor > MIN_LR_FACTOR * (1 + 1e-9):
                self.factor *= PLATEAU_FACTOR
                self.cuts.append(step)
                self.since_cut = 0
            else:
                self.converged_at = step
        return improved


class FiniteGuard:
    """The NaN guard: checks that every gradient is finite (one fused kernel and one host read) and keeps a
    copy of the parameters before each update, to restore the last good ones when a step goes non-finite.

    The check is the one `torch.amp.GradScaler` uses (`_amp_foreach_non_finite_check_and_unscale_` with an
    unscale factor of 1): one fused kernel instead of a reduction per parameter tensor (bench/RESULTS.md).
    """

    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.backup = [p.detach().clone() for p in params]
        device = params[0].device if params else torch.device("cpu")
        self.found = torch.zeros(1, device=device)
        self.one = torch.ones(1, device=device)

    def gradients_finite(self) -> bool:
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return True
        self.found.zero_()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found, self.one)
        return not bool(self.found)

    def keep(self) -> None:
        torch._foreach_copy_(self.backup, [p.detach() for p in self.params])

    @torch.no_grad()
    def restore(self) -> None:
        torch._foreach_copy_([p.detach() for p in self.params], self.backup)


def check_range(x: np.ndarray, field: str) -> None:
    """Refuse data beyond what a step computes: float32, whose squares overflow beyond about MAX_ABS_DATA."""
    largest = float(np.abs(x).max())
    if largest > MAX_ABS_DATA:
        raise ConfigError(field, f"values up to {largest:.3g}", f"training computes in float32, whose squares "
                          f"overflow beyond about {MAX_ABS_DATA:g}: rescale the data (for example divide each "
                          "column by its standard deviation)")


def preflight(config: RunConfig, data: Dataset) -> None:
    """Refuse, before any work, what `train` cannot do (a ConfigError naming the setting): an invalid config,
    data beyond float32's range, too few training points, a step that does not fit in memory. The CLI calls it
    before drawing its progress bar; `train` calls it first."""
    config.validate()
    check_range(data.x, "data")
    tc = config.training
    train_idx, _ = split_indices(len(data), tc.val_fraction, tc.seed)
    if len(train_idx) < 2:
        raise ConfigError("training.val_fraction", tc.val_fraction,
                          f"leaves {len(train_idx)} training points of {len(data)}; need at least 2 (more data, or a "
                          "smaller val_fraction)")
    x = torch.as_tensor(data.x[train_idx], dtype=torch.float32)
    est = build_estimator(config.estimator, build_decoder(data.n, config.decoder, x), len(train_idx),
                          torch.Generator())
    B = min(tc.batch_size, len(train_idx))
    require(est.step_bytes(B), "training.batch_size", tc.batch_size, "a training step",
            "lower training.batch_size, estimator.samples or estimator.nodes, or the decoder's widths")


def train(config: RunConfig, data: Dataset, test: Dataset | None = None, on_progress: ProgressFn | None = None,
          should_stop: StopFn | None = None, snapshots: bool = True) -> RunResult:
    """Fit the decoder (and encoder) by the configured estimator. See the module docstring; `snapshots=False`
    leaves the plot snapshots out of the progress records (the terminal draws none)."""
    preflight(config, data)
    tc = config.training
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)  # only for modules' default initialisation; sampling uses run generators
    train_idx, val_idx = split_indices(len(data), tc.val_fraction, tc.seed)
    if len(val_idx) == 0:  # no validation split: monitor (and, without a test set, score) on training points
        val_idx = train_idx
    x_train = torch.as_tensor(data.x[train_idx], dtype=torch.float32, device=device)  # (N_train, n)
    x_val = data.x[val_idx]  # monitoring and the convergence test; the test set is kept for the final score
    decoder = build_decoder(data.n, config.decoder, x_train.cpu()).to(device)
    gen = torch.Generator(device=device).manual_seed(tc.seed + 1)
    est = build_estimator(config.estimator, decoder, len(train_idx), gen).to(device)
    if config.decoder.init == "ppca":
        start, y_train = start_linear(decoder, x_train, keep_sigma=config.decoder.sigma_init is not None)
        est.start_from(start, y_train)
    B = min(tc.batch_size, len(train_idx))
    threads = apply_threads(tc.threads, est.step_flops(B))
    params = est.trainable_parameters()
    opt = torch.optim.Adam(params, lr=tc.lr, fused=True)  # one kernel for the whole update of all tensors
    guard = FiniteGuard(params)
    batch_gen = torch.Generator().manual_seed(tc.seed + 2)

    # fixed views for the live plots
    shown = min(DISPLAY_POINTS, len(train_idx))
    z_shown = data.z[train_idx[:shown]] if data.z is not None else None
    setup = RunSetup(None if z_shown is None else z_shown.copy(), est.value_label, config.estimator.name)

    history: list[dict[str, float]] = []
    conv = Convergence(tc.schedule, tc.tol, tc.patience)
    x_monitor = monitor_points(x_val, tc.seed)
    keep_best = tc.patience > 0  # with the test off, the run keeps its last state
    heldout_now = start_estimate = quick_loglik(decoder, x_monitor, seed=tc.seed)  # step 0: the start is a candidate
    conv.update(0, heldout_now)
    best_state, best_step = (copy.deepcopy(est.state_dict()) if keep_best else None), 0
    start_state = best_state  # the linear start, for the final check (`linear_start_check`)
    status, message = "cap_reached", ""
    every_eval = tc.schedule != "cosine" and keep_best  # the convergence test needs every evaluation
    eval_time, eval_cost = 0.0, 0.0  # seconds spent on the periodic estimate; the last one's cost
    cap = tc.max_steps
    perm = torch.randperm(len(train_idx), generator=batch_gen)
    cursor, step, reported, last_report, last_snapshot = 0, 0, 0, -math.inf, -math.inf
    t0 = time.perf_counter()
    fraction = 0.0
    for step in itertools.count(1) if cap is None else range(1, cap + 1):
        if should_stop is not None:
            asked = time.perf_counter()
            stop = should_stop()  # blocks while the GUI has the run paused: that time is not the run's
            t0 += time.perf_counter() - asked
            if stop:
                status, message, step = "stopped", f"stopped by the user at step {step - 1}", step - 1
                break
        if cursor + B > len(perm):
            perm, cursor = torch.randperm(len(train_idx), generator=batch_gen), 0
        idx = perm[cursor: cursor + B].to(device)
        cursor += B
        obj = est.objective(x_train[idx], idx, step)
        opt.zero_grad(set_to_none=True)
        (-obj.surrogate).backward()
        if not math.isfinite(obj.value) or not guard.gradients_finite():
            guard.restore()
            what = "objective" if not math.isfinite(obj.value) else "gradient"
            status = "failed"
            message = (f"the {what} became {obj.value if what == 'objective' else 'non-finite'} at step {step}; "
                       "stopped with the last good parameters (lower the learning rate or raise the sigma floor)")
            step -= 1
            break
        guard.keep()
        lr_factor = cosine_factor(fraction) if tc.schedule == "cosine" else conv.factor
        for group in opt.param_groups:
            group["lr"] = tc.lr * lr_factor
        opt.step()
        now = time.perf_counter()
        fraction = run_fraction(step, cap, now - t0, tc.time_limit)
        last = fraction >= 1.0
        row = {"step": step, "objective": obj.value, "sigma": decoder.sigma_mean(),
               "lr": opt.param_groups[0]["lr"], "heldout": float("nan"), "time": now - t0, **obj.logs}
        # the periodic estimate: every eval_every steps (under the cosine schedule only while it has cost at
        # most EVAL_SHARE of the time), and at the last step
        due = step % tc.eval_every == 0 and (every_eval or eval_time + eval_cost <= EVAL_SHARE * (now - t0))
        if due or last:
            heldout_now = quick_loglik(decoder, x_monitor, seed=tc.seed)
            row["heldout"] = heldout_now
            eval_cost = time.perf_counter() - now
            eval_time += eval_cost
            if conv.update(step, heldout_now) and keep_best:
                best_state, best_step = copy.deepcopy(est.state_dict()), step
        history.append(row)
        done = conv.converged_at is not None
        if (on_progress is not None and (step % tc.snapshot_every == 0 or last or done)
                and (last or done or now - last_report >= 1.0 / MAX_PROGRESS_RATE)):
            snapshot = None
            if snapshots and (last or done or now - last_snapshot >= 1.0 / SNAPSHOT_RATE):
                snapshot, last_snapshot = _snapshot(est, decoder, x_train[:shown], z_shown), now
            on_progress(_progress(step, tc, fraction, history[reported:], heldout_now, decoder,
                                  setup if reported == 0 else None, snapshot, t0, conv))
            reported, last_report = step, now
        if done:
            status = "converged"
            at_lr = f" at the smallest learning rate ({tc.lr * conv.factor:.3g})" if tc.schedule == "plateau" else ""
            message = (f"converged at step {step}: the held-out estimate gained less than {tc.tol:g} nats/point "
                       f"over {tc.patience} evaluations{at_lr}")
            break
        if last:
            break
    if status == "cap_reached":
        message = cap_message(tc, step, conv)
    check: dict[str, Any] = {}
    if status in FINISHED and best_state is not None and math.isfinite(conv.best):
        if best_step != step:
            est.load_state_dict(best_state)
            message += f"; kept the best state (step {best_step}, held-out estimate {conv.best:.4f})"
        if config.decoder.init == "ppca" and best_step != 0:
            check = linear_start_check(est, decoder, start_state, x_val, tc.seed)
            if check["kept"] == "start":
                best_step = 0
                message += (f"; the linear start scored higher on {check['points']} validation points "
                            f"({check['start']:.4f} against {check['best']:.4f}): kept the start")
    wall = time.perf_counter() - t0
    return RunResult(config=config, decoder=decoder, encoder=getattr(est, "encoder", None), history=history,
                     status=status, message=message, device=str(device), seed=tc.seed, train_idx=train_idx,
                     heldout_idx=val_idx if test is None else np.arange(0), wall_time=wall, steps_done=step,
                     versions=versions(), threads=threads, columns=data.columns,
                     convergence={**convergence_record(conv, best_step), "start_heldout_estimate": start_estimate,
                                  "start_check": check or None,
                                  "cap": cap_hit(tc, step) if status == "cap_reached" else None})


def linear_start_check(est: Estimator, decoder: Decoder, start_state: dict[str, Any], x_val: np.ndarray,
                       seed: int) -> dict[str, Any]:
    """The kept state against the linear start, on up to CHECK_POINTS validation points (one comparison, not
    the maximum over the run's evaluations on MONITOR_POINTS, whose selection favours a state that got lucky
    on those points): the estimator keeps whichever scores higher. Returns the two estimates and the choice."""
    x_check = monitor_points(x_val, seed + 3, CHECK_POINTS)
    kept_state = copy.deepcopy(est.state_dict())
    best = quick_loglik(decoder, x_check, seed=seed)
    est.load_state_dict(start_state)
    start = quick_loglik(decoder, x_check, seed=seed)
    if not start > best:
        est.load_state_dict(kept_state)
    return {"points": len(x_check), "best": best, "start": start, "kept": "start" if start > best else "best"}


def cap_hit(tc: TrainingConfig, step: int) -> str:
    """Which cap ended a run at `step`: the setting that raises it, training.time_limit or training.steps."""
    by_time = tc.time_limit is not None and (tc.max_steps is None or step < tc.max_steps)
    return "training.time_limit" if by_time else "training.steps"


def cap_message(tc: TrainingConfig, step: int, conv: Convergence) -> str:
    """Why a run ended at a cap, and (but under the cosine schedule, which runs to its cap) that it had not
    converged: its last window's gain and the setting that raises the cap."""
    raise_it = cap_hit(tc, step)
    if raise_it == "training.time_limit":
        what = f"the time limit of {tc.time_limit:g} s"
    else:
        what = f"the {'default ' if tc.steps is None else ''}cap of {tc.max_steps} steps"
    if tc.schedule == "cosine":
        return f"cap reached at step {step}: {what}, where the cosine schedule ends"
    gain = conv.gain()
    shown = "" if math.isnan(gain) else f" (the held-out estimate still gained {gain:.4f} nats/point over " \
                                       f"the last {tc.patience} evaluations)"
    return f"cap reached at step {step}: {what} before convergence{shown}; {raise_it} raises it"


def convergence_record(conv: Convergence, best_step: int) -> dict[str, Any]:
    """run.json's `convergence`: the test's settings and what it saw."""
    return {"schedule": conv.schedule, "tol": conv.tol, "patience": conv.patience,
            "converged_at": conv.converged_at, "lr_cuts": list(conv.cuts), "best_step": best_step,
            "best_heldout_estimate": conv.best, "last_window_gain": conv.gain()}


def versions() -> dict[str, str]:
    return {"nlica_lab": __version__, "torch": torch.__version__, "numpy": np.__version__}


def _progress(step: int, tc: TrainingConfig, fraction: float, rows: list[dict[str, float]], heldout: float,
              decoder: Decoder, setup: RunSetup | None, snapshot: Snapshot | None, t0: float,
              conv: Convergence) -> TrainingProgress:
    """The progress record: step, fraction of the run done (steps or time), objective, held-out estimate,
    sigma, speed, the history rows since the previous one, and (the first time) the fixed plot setup."""
    elapsed = time.perf_counter() - t0
    converging = tc.steps is None and tc.time_limit is None and tc.schedule == "plateau" and tc.patience > 0
    if converging:  # until converged: how far the plateau schedule has gone
        fraction = len(conv.cuts) / (PLATEAU_CUTS + 1)
    return TrainingProgress(
        step=step, steps=tc.steps, fraction=min(fraction, 1.0), time_limit=tc.time_limit,
        objective=rows[-1]["objective"], heldout=heldout,
        sigma=decoder.model_sigma().detach().cpu().reshape(-1).numpy().copy(),  # in the model's units
        sigma_at_floor=decoder.at_floor(), elapsed=elapsed, steps_per_sec=step / max(elapsed, 1e-9),
        history_rows=[dict(r) for r in rows], setup=setup, snapshot=snapshot, converging=converging,
        lr_cuts=tuple(conv.cuts),
        converged_at=conv.converged_at, window_gain=conv.gain())


def _snapshot(est: Estimator, decoder: Decoder, x_shown: torch.Tensor, z_shown: np.ndarray | None) -> Snapshot:
    """The plot snapshot: the learned manifold raw and aligned to the truth (`ManifoldView`), and the inferred
    latents of the shown points, raw and aligned onto their true latents when known (fresh numpy arrays)."""
    latents = est.inferred_latents(x_shown)
    raw = None if latents is None else latents.detach().double().cpu().numpy().copy()
    view = manifold_view(decoder, z_shown, raw)
    aligned = raw if view.latent_map is None or raw is None else view.latent_map.to_truth(raw)
    return Snapshot(view, aligned, raw)
