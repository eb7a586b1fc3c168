"""What the worker thread runs: thin compositions of engine calls, returning plain records for the views.

Everything here is called from `gui.worker.EngineWorker.run`, never from the GUI thread. Each public
function returns a `Task` (``task(report, should_stop) -> result``) for `RunController.start`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.alignment import ManifoldView, fitted_manifold_view, latent_grid, manifold
from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.evaluate import ScoringStopped, heldout_loglik
from engine.integral import PointPosterior, point_posterior
from engine.latents import LatentMap
from engine.networks import Decoder, Encoder, build_decoder
from engine.progress import Progress, ScoringProgress
from engine.runs import SavedRun, fit, fit_series, load_history, load_run, save_run
from engine.selection import SELECT_M_ESTIMATOR, Choice, choose_m, select_m_chart, select_m_record, suggest_m
from engine.simulate import Dataset, sample_model, simulate
from engine.storage import load_dataset, save_dataset
from engine.trainer import RunResult, split_indices

ProgressFn = Callable[[Any], None]  # a progress record: engine.progress's, this module's, or `Paused`
StopFn = Callable[[], bool]
Task = Callable[[ProgressFn, StopFn], Any]

PREVIEW_POINTS = 2000  # data points drawn in the data view


@dataclass
class DataBundle:
    """The data of the session and what the data view shows of it."""

    dataset: Dataset
    source: str  # "simulated" or the file it came from
    simulation: SimulationConfig | None  # the settings that drew it; None for imported data
    x_shown: np.ndarray  # (k, n) the first PREVIEW_POINTS rows
    z_shown: np.ndarray | None  # (k, m) their true latents, when known
    true_grid: np.ndarray | None  # (L, P, m) latent polylines, for a known true model
    true_manifold: np.ndarray | None  # (L, P, n) f over them
    truth_score: TruthScore | None = None  # the true model's held-out log-likelihood, when it is known

    @property
    def summary(self) -> str:
        ds = self.dataset
        where = "simulated" if self.simulation is not None else f"imported from {Path(self.source).name}"
        latents = f", true latents m = {ds.z.shape[1]}" if ds.z is not None else ", no latents"
        truth = ", true model known" if ds.truth is not None else ""
        return f"{len(ds)} points, n = {ds.n}{latents}{truth}; {where}{self.columns_text}"

    @property
    def columns_text(self) -> str:
        """"; columns a, b, c …" for data whose file named its columns ('' otherwise)."""
        cols = self.dataset.columns
        if not cols:
            return ""
        shown = ", ".join(cols[:4]) + (", …" if len(cols) > 4 else "")
        return f"; columns {shown}"

    @property
    def names(self) -> tuple[str, ...]:
        """The column names of x (the file's header, else x1..xn)."""
        return self.dataset.names

    @property
    def needs_m(self) -> bool:
        """Imported data with neither a true model nor latents: nothing says which m to fit."""
        ds = self.dataset
        return self.simulation is None and ds.truth is None and ds.z is None

    @property
    def imported_from(self) -> str:
        """The file name of imported data ('' for simulated data)."""
        return "" if self.simulation is not None else Path(self.source).name

    @property
    def label(self) -> str:
        """A few words for the results table: the simulation ("sigmoid n=3 m=2") or the file ("data.csv n=2")."""
        sim, ds = self.simulation, self.dataset
        if sim is not None:
            return f"{sim.mixing} n={sim.n} m={sim.m}"
        latents = f" m={ds.z.shape[1]}" if ds.z is not None else ""
        return f"{self.imported_from} n={ds.n}{latents}"


@dataclass
class TruthScore:
    """The true model's held-out log-likelihood on the held-out points of the split (val_fraction, seed) the
    runs are scored on (`engine.trainer.split_indices`), by the one evaluator."""

    mean: float
    se: float
    points: int
    val_fraction: float
    seed: int

    def matches(self, training: TrainingConfig) -> bool:
        return self.val_fraction == training.val_fraction and self.seed == training.seed


@dataclass
class MSuggestion:
    """PPCA's suggestion of m for data without a true model (`engine.selection.suggest_m`)."""

    m: int
    note: str


@dataclass
class SelectedM:
    """What "Choose m from the data" found: the one-SE rule's choice (None: no m was scored), the chart of
    held-out log-likelihood against m (`engine.selection.select_m_chart`), and whether it was stopped."""

    choice: Choice | None
    chart: dict[str, Any] | None
    record: dict[str, Any]
    stopped: bool


@dataclass
class Samples:
    """Draws x (and their latents z) from a model, true or fitted; a fit's latents also mapped onto the true
    ones (`z_aligned`, by its run's Procrustes map) where that is known."""

    x: np.ndarray
    z: np.ndarray
    label: str
    z_aligned: np.ndarray | None = None


@dataclass
class OpenedRun:
    saved: SavedRun
    history: list[dict[str, float]]
    manifold: ManifoldView | None = None  # the run's g_θ for the data view


@dataclass(frozen=True)
class Paused:
    """The run waits before step `step + 1` (Pause, or a run started paused); the worker reports it."""

    step: int


@dataclass(frozen=True)
class DataDrawn:
    """Start had no data in use and drew them first."""

    data: DataBundle


@dataclass(frozen=True)
class TruthScored:
    """The true model scored on the held-out points of this run's split."""

    truth: TruthScore | None


@dataclass(frozen=True)
class MSuggested:
    """Data without a true model: the m this run fits, PPCA's suggestion."""

    suggestion: MSuggestion


@dataclass(frozen=True)
class SelectMProgress:
    """Choose m: run k of `of` (m), its training step (or its scoring, `fraction` 1)."""

    k: int
    of: int
    m: int
    step: int
    steps: int | None  # the explicit step cap; None: until converged (or a time limit alone)
    fraction: float
    scoring: bool


@dataclass(frozen=True)
class SelectMRun:
    """Choose m: one m trained and scored (each is kept in the table as it ends)."""

    run: TrainedRun


@dataclass
class TrainedRun:
    """A run trained here, and its g_θ for the data view (after any restored best state)."""

    result: RunResult
    manifold: ManifoldView | None


def learned_manifold(decoder: Decoder, data: DataBundle | None = None) -> ManifoldView:
    """g_θ for the data view, raw and aligned to the true latents of `data` (the data on show), if known."""
    known = data is not None and data.z_shown is not None and data.dataset.n == decoder.n
    return fitted_manifold_view(decoder, data.x_shown if known else None, data.z_shown if known else None)


def _bundle(ds: Dataset, source: str, sim: SimulationConfig | None) -> DataBundle:
    k = min(PREVIEW_POINTS, len(ds))
    grid = true_manifold = None
    if ds.truth is not None:
        grid = latent_grid(ds.truth.m)
        true_manifold = manifold(ds.truth, grid)
    z = None if ds.z is None else ds.z[:k].copy()
    return DataBundle(ds, source, sim, ds.x[:k].copy(), z, grid, true_manifold)


def truth_score(bundle: DataBundle, training: TrainingConfig) -> TruthScore | None:
    """The true model's held-out log-likelihood on the held-out points the runs will be scored on (the same
    split and subsample seed as `engine.metrics.score_run`); None without a true model."""
    ds = bundle.dataset
    if ds.truth is None:
        return None
    _, held = split_indices(len(ds), training.val_fraction, training.seed)
    est = heldout_loglik(ds.truth, ds.x[held], seed=training.seed)
    return TruthScore(est.mean, est.se, len(held), training.val_fraction, training.seed)


def with_truth(bundle: DataBundle, training: TrainingConfig | None) -> DataBundle:
    """The bundle with its true model scored for `training`'s split (if it is not already)."""
    if training is not None and bundle.dataset.truth is not None and not (
            bundle.truth_score is not None and bundle.truth_score.matches(training)):
        bundle.truth_score = truth_score(bundle, training)
    return bundle


def generate_data(sim: SimulationConfig, training: TrainingConfig | None = None) -> DataBundle:
    return with_truth(_bundle(simulate(sim), "simulated", sim), training)


def generate(sim: SimulationConfig, training: TrainingConfig | None = None) -> Task:
    return lambda report, should_stop: generate_data(sim, training)


def import_data(path: str, training: TrainingConfig | None = None) -> Task:
    return lambda report, should_stop: with_truth(_bundle(load_dataset(path), path, None), training)


def m_suggestion(bundle: DataBundle) -> MSuggestion:
    """PPCA's suggestion of m for data with no true model and no latents, and the line that says so."""
    choice = suggest_m(bundle.dataset.x)
    where = bundle.imported_from or "the data"
    return MSuggestion(choice.chosen, f"m = {choice.chosen}: PPCA's suggestion for {where} (no true model: the "
                                      "smallest m within one SE of the best linear fit)")


def export_data(path: str, dataset: Dataset) -> Task:
    def task(report: ProgressFn, should_stop: StopFn) -> str:
        save_dataset(path, dataset)
        return path
    return task


def train(config: RunConfig, data: DataBundle | None, suggest: bool = False) -> Task:
    """Fit `config` on `data`; with no data (or stale data) draw it first and report it as `DataDrawn`.
    With a true model, its held-out score for this split comes first (`TruthScored`). `suggest`: the data
    need an m (`DataBundle.needs_m`): PPCA's suggestion is fitted and reported as `MSuggested`."""
    def task(report: ProgressFn, should_stop: StopFn) -> TrainedRun:
        bundle = data
        if bundle is None:
            bundle = generate_data(config.simulation, config.training)
            report(DataDrawn(bundle))
        elif bundle.dataset.truth is not None and not (bundle.truth_score is not None
                                                       and bundle.truth_score.matches(config.training)):
            report(TruthScored(truth_score(bundle, config.training)))
        if suggest and bundle.needs_m:
            suggestion = m_suggestion(bundle)
            config.decoder.m = suggestion.m
            report(MSuggested(suggestion))
        result = fit(config, bundle.dataset, None, report, should_stop, should_stop)
        return TrainedRun(result, learned_manifold(result.decoder, bundle))
    return task


def select_m(config: RunConfig, data: DataBundle, max_m: int) -> Task:
    """Fit m = 1..max_m on `data` (each with `engine.selection.SELECT_M_ESTIMATOR`, the rest of `config` as it is), as
    `select-m` does; each finished run is reported as a `SelectMRun`, progress as `SelectMProgress`. Stop ends
    the run in progress (unscored) and the series; a run that fails is a row "failed" and the series goes on
    (`engine.runs.fit_series`, as in select-m). The one-SE rule on the runs' paired held-out values chooses m."""
    def task(report: ProgressFn, should_stop: StopFn) -> SelectedM:
        named: list[tuple[str, RunConfig]] = []
        for m in range(1, max_m + 1):
            cfg = copy.deepcopy(config)
            cfg.decoder.m = m
            cfg.estimator.name = SELECT_M_ESTIMATOR
            cfg.validate()
            named.append((f"m{m}", cfg))
        order = {name: k for k, (name, _) in enumerate(named, start=1)}

        def fit_one(name: str, cfg: RunConfig) -> RunResult:
            k, m = order[name], cfg.decoder.m

            def progress(p: Progress) -> None:
                scoring = isinstance(p, ScoringProgress)
                report(SelectMProgress(k, max_m, m, p.step, p.steps, 1.0 if scoring else p.fraction, scoring))

            report(SelectMProgress(k, max_m, m, 0, cfg.training.steps, 0.0, False))
            result = fit(cfg, data.dataset, None, progress, should_stop, should_stop, snapshots=False)
            report(SelectMRun(TrainedRun(result, learned_manifold(result.decoder, data))))
            return result

        series = fit_series(named, fit_one, should_stop)
        choice = choose_m(series.results)
        record = select_m_record(named, series.rows, series.results, choice, data.dataset)
        stopped = any(r["status"] in ("stopped", "not run") for r in series.rows)
        return SelectedM(choice, select_m_chart(record) if choice is not None else None, record, stopped)
    return task


def sample(model: Any, count: int, seed: int, label: str, latent_map: LatentMap | None = None) -> Task:
    def task(report: ProgressFn, should_stop: StopFn) -> Samples:
        on_cpu = copy.deepcopy(model).cpu() if isinstance(model, torch.nn.Module) else model
        x, z = sample_model(on_cpu, count, seed)
        return Samples(x, z, label, None if latent_map is None else latent_map.to_truth(z))
    return task


def posterior(decoder: Decoder, encoder: Encoder | None, estimator: EstimatorConfig, x: np.ndarray, index: int,
              label: str, seed: int = 0) -> Task:
    """p(z | x_i) on a grid over its mass, the exact log p(x_i), and how the run's estimator approximates it
    (`engine.integral.point_posterior`; seeded draws); None when stopped (Quit)."""
    def task(report: ProgressFn, should_stop: StopFn) -> PointPosterior | None:
        try:
            return point_posterior(decoder, x, estimator, encoder, seed=seed, index=index, label=label,
                                   should_stop=should_stop)
        except ScoringStopped:
            return None
    return task


def save_trained_run(result: RunResult, folder: str) -> Task:
    # the folder dialog asked before replacing; a folder this program did not write is never replaced
    return lambda report, should_stop: str(save_run(result, folder, overwrite=True))


def open_run(path: str, data: DataBundle | None = None) -> Task:
    """Open a run folder; its g_θ is aligned to the truth of `data` (the data on show), if any."""
    def task(report: ProgressFn, should_stop: StopFn) -> OpenedRun:
        saved = load_run(path)
        return OpenedRun(saved, load_history(saved.path), learned_manifold(saved.decoder, data))
    return task


def warm_up(report: ProgressFn, should_stop: StopFn) -> None:
    """One tiny forward/backward: torch imports its lazy modules (~0.6 s) here, not in the first run."""
    x = torch.zeros(4, 1)
    decoder = build_decoder(1, DecoderConfig(m=1, hidden=(4,)), x)
    decoder.mean(x).sum().backward()
