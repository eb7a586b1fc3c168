"""What a run reports while it goes, as small typed records (the trainer's and the scoring's).

`train` calls `on_progress(TrainingProgress)` every `snapshot_every` steps (at most MAX_PROGRESS_RATE a
second, always at the last step); the first carries the run's `RunSetup`, some carry a `Snapshot` for the
live plots. `runs.fit` then reports `ScoringProgress` while the held-out points are scored. Every array in
a record is a fresh copy: a receiver in another thread may keep it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .alignment import ManifoldView


@dataclass(frozen=True)
class RunSetup:
    """The fixed part of a run's live plots, sent once with its first progress."""

    z_true_shown: np.ndarray | None  # (k, m) the true latents of the training points the live plots show
    objective_label: str  # what the objective estimates ("log p(x)", "ELBO", ...)
    estimator: str


@dataclass(frozen=True)
class Snapshot:
    """The live plots' picture of the model now: g raw and aligned, the shown points' inferred latents."""

    manifold: ManifoldView
    latents: np.ndarray | None  # (k, m) aligned onto the true latents where they are known
    latents_raw: np.ndarray | None  # (k, m_hat) as the estimator infers them


@dataclass(frozen=True)
class TrainingProgress:
    step: int
    steps: int | None  # the explicit step cap (None: a time limit alone, or until converged)
    fraction: float  # of the budget spent: steps of `steps`, or seconds of `time_limit`, whichever is further;
    # until converged (neither): the plateau schedule's cuts made of PLATEAU_CUTS + 1
    time_limit: float | None
    objective: float  # the last step's objective value
    heldout: float  # the last periodic held-out estimate (NaN before the first)
    sigma: np.ndarray  # (1,) or (n,) in the model's units
    sigma_at_floor: bool
    elapsed: float  # seconds of training
    steps_per_sec: float
    history_rows: list[dict[str, float]] = field(default_factory=list)  # the history since the last progress
    setup: RunSetup | None = None  # the first progress only
    snapshot: Snapshot | None = None  # at most SNAPSHOT_RATE a second, always the first and the last
    converging: bool = False  # a run until converged under the plateau schedule: `fraction` counts its cuts
    lr_cuts: tuple[int, ...] = ()  # steps where the plateau schedule cut the learning rate, so far
    converged_at: int | None = None  # the step where convergence was declared (the last progress)
    window_gain: float = float("nan")  # the held-out estimate's gain over the convergence window (nats/point)


@dataclass(frozen=True)
class ScoringProgress:
    """The held-out scoring after training: `fraction` of it done."""

    step: int  # training steps done
    steps: int | None
    fraction: float
    stop_answered: bool  # the training ended on a stop request


Progress = TrainingProgress | ScoringProgress
ProgressFn = Callable[[Progress], None]
