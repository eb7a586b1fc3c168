"""What the worker thread runs: thin compositions of engine calls, returning plain records for the views.

Everything here is called from `gui.worker.EngineWorker.run`, never from the GUI thread. Each public
function returns a `Task` (``task(report, should_stop) -> result``) for `RunController.start`.
"""

from __future__ import annotations

import copy
import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import DecoderConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.display import graph_sign
from engine.estimators.vae import log_q
from engine.evaluate import as_float64, heldout_loglik
from engine.likelihood.quadrature import log_marginal_dense, uniform_grid
from engine.metrics import compare_row
from engine.model import log_joint
from engine.networks import Decoder, Encoder, build_decoder
from engine.runs import SavedRun, fit, load_run, save_run
from engine.selection import Choice, estimator_for, one_se_rule, select_m_chart, select_m_record, suggest_m
from engine.simulate import Dataset, sample_model, simulate
from engine.storage import load_dataset, save_dataset
from engine.trainer import RunResult, latent_grid, manifold, split_indices

from .worker import ProgressFn, StopFn, Task

PREVIEW_POINTS = 2000  # data points drawn in the data view
POSTERIOR_HALF_WIDTH = 4.5  # the posterior grid covers [-w, w]^m
POSTERIOR_NODES = {1: 1601, 2: 161}


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
    """Draws x (and their latents z) from a model, true or fitted."""

    x: np.ndarray
    z: np.ndarray
    label: str


@dataclass
class PosteriorGrid:
    """p(z | x_i) under a decoder (and q(z | x_i) of its encoder) on a regular grid, m <= 2."""

    index: int
    x: np.ndarray  # (n,) the point
    axis: np.ndarray  # (G,) grid coordinates per latent axis
    exact: np.ndarray  # (G,) for m = 1, (G, G) for m = 2 indexed [z1, z2]
    encoder: np.ndarray | None  # same shape, VAE runs only
    label: str


@dataclass
class OpenedRun:
    saved: SavedRun
    history: list[dict[str, float]]
    grid: np.ndarray | None = None  # (L, P, m) the latent grid of the data view
    manifold: np.ndarray | None = None  # (L, P, n) the run's g_θ on it


@dataclass
class TrainedRun:
    """A run trained here, and its g_θ on the latent grid of the data view (after any restored best state)."""

    result: RunResult
    grid: np.ndarray | None
    manifold: np.ndarray | None


def aligned_grid(grid: np.ndarray, values: np.ndarray, data: DataBundle | None) -> np.ndarray:
    """The latent grid at which the data view draws g_θ's values: for the graph of x against z (n = m = 1),
    mirrored when g_θ's latent runs against the true one (else a good fit looks like f's mirror image)."""
    if data is None or data.true_grid is None or data.true_manifold is None:
        return grid
    return graph_sign(grid, values, data.true_grid, data.true_manifold) * grid


def learned_manifold(decoder: Decoder, data: DataBundle | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The data view's latent grid for the decoder's m (aligned to the truth of `data`), and g_θ on it."""
    grid = latent_grid(decoder.m)
    values = manifold(decoder, grid)
    return aligned_grid(grid, values, data), values


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
    """Fit `config` on `data`; with no data (or stale data) draw it first and report it as phase "data".
    With a true model, its held-out score for this split comes first (phase "truth"). `suggest`: the data
    need an m (`DataBundle.needs_m`): PPCA's suggestion is fitted and reported as phase "m"."""
    def task(report: ProgressFn, should_stop: StopFn) -> TrainedRun:
        bundle = data
        if bundle is None:
            bundle = generate_data(config.simulation, config.training)
            report({"phase": "data", "data": bundle})
        elif bundle.dataset.truth is not None and not (bundle.truth_score is not None
                                                       and bundle.truth_score.matches(config.training)):
            report({"phase": "truth", "truth": truth_score(bundle, config.training)})
        if suggest and bundle.needs_m:
            suggestion = m_suggestion(bundle)
            config.decoder.m = suggestion.m
            report({"phase": "m", "suggestion": suggestion})
        grid: list[np.ndarray] = []  # the run's latent grid, from its first progress

        def report_aligned(info: dict[str, Any]) -> None:
            """Each plot snapshot with the grid to draw its g_θ at (`aligned_grid`)."""
            if isinstance(info.get("setup"), dict):
                grid[:] = [info["setup"]["grid"]]
            if grid and isinstance(info.get("manifold"), np.ndarray):
                info = {**info, "manifold_grid": aligned_grid(grid[0], info["manifold"], bundle)}
            report(info)

        result = fit(config, bundle.dataset, None, report_aligned, should_stop, should_stop)
        return TrainedRun(result, *learned_manifold(result.decoder, bundle))
    return task


def select_m(config: RunConfig, data: DataBundle, max_m: int) -> Task:
    """Fit m = 1..max_m on `data` (each with `engine.selection.estimator_for(m)`, the rest of `config` as it is), as
    `select-m` does; each finished run is reported as phase "select_m_run" (a `TrainedRun`), progress as phase
    "select_m" (k, of, m, and the run's step and fraction). Stop ends the run in progress (unscored) and the
    series. The one-SE rule on the runs' paired held-out values chooses m."""
    def task(report: ProgressFn, should_stop: StopFn) -> SelectedM:
        named: list[tuple[str, RunConfig]] = []
        for m in range(1, max_m + 1):
            cfg = copy.deepcopy(config)
            cfg.decoder.m = m
            cfg.estimator.name = estimator_for(m)
            cfg.validate()
            named.append((f"m{m}", cfg))
        rows: list[dict[str, Any]] = []
        results: dict[str, RunResult] = {}
        stopped = False
        for k, (name, cfg) in enumerate(named, start=1):
            if should_stop():
                stopped = True
                rows.append(compare_row(name, {}, "not run", "not run: stopped by the user"))
                continue

            def progress(info: dict[str, Any], k: int = k, m: int = cfg.decoder.m) -> None:
                if "step" not in info and info.get("phase") is None:
                    return
                report({"phase": "select_m", "k": k, "of": max_m, "m": m, "step": info.get("step", 0),
                        "steps": info.get("steps", config.training.steps), "scoring": info.get("phase") == "evaluating",
                        "fraction": info.get("fraction", 0.0) if info.get("phase") is None else 1.0})

            report({"phase": "select_m", "k": k, "of": max_m, "m": cfg.decoder.m, "step": 0,
                    "steps": cfg.training.steps, "fraction": 0.0, "scoring": False})
            result = fit(cfg, data.dataset, None, progress, should_stop, should_stop, snapshots=False)
            results[name] = result
            rows.append(compare_row(name, result.metrics, result.status,
                                    "; ".join(result.metrics.get("warnings", [])[:1])))
            report({"phase": "select_m_run", "run": TrainedRun(result, *learned_manifold(result.decoder, data))})
            stopped = stopped or result.status == "stopped"
        per_point = {int(name[1:]): r.heldout_per_point for name, r in results.items()
                     if r.heldout_per_point is not None and r.status != "failed"}
        choice = one_se_rule(per_point) if per_point else None
        record = select_m_record(named, rows, results, choice, data.dataset)
        return SelectedM(choice, select_m_chart(record) if choice is not None else None, record, stopped)
    return task


def sample(model: Any, count: int, seed: int, label: str) -> Task:
    def task(report: ProgressFn, should_stop: StopFn) -> Samples:
        on_cpu = copy.deepcopy(model).cpu() if isinstance(model, torch.nn.Module) else model
        x, z = sample_model(on_cpu, count, seed)
        return Samples(x, z, label)
    return task


@torch.no_grad()
def posterior_grid(decoder: Decoder, encoder: Encoder | None, x: np.ndarray, index: int,
                   label: str) -> PosteriorGrid:
    """exp(log p(x, z) - log p(x)) on the dense trapezoidal grid the evaluator uses, and q(z | x)."""
    model = as_float64(decoder).cpu()
    m = model.m
    u, logw = uniform_grid(m, POSTERIOR_NODES[m], POSTERIOR_HALF_WIDTH)
    xt = torch.as_tensor(x, dtype=torch.float64).reshape(1, -1)
    log_px = log_marginal_dense(model, xt, u, logw)  # (1,)
    exact = (log_joint(model, xt, u.unsqueeze(0))[0] - log_px[0]).exp()
    enc = None
    if encoder is not None:
        mu, log_s = as_float64(encoder).cpu()(xt)
        enc = log_q(u.unsqueeze(0), mu, log_s)[0].exp()
    shape = (POSTERIOR_NODES[m],) * m
    axis = u[: POSTERIOR_NODES[m], -1].numpy().copy()
    return PosteriorGrid(index, np.asarray(x).copy(), axis, exact.reshape(shape).numpy().copy(),
                         None if enc is None else enc.reshape(shape).numpy().copy(), label)


def posterior(decoder: Decoder, encoder: Encoder | None, x: np.ndarray, index: int, label: str) -> Task:
    return lambda report, should_stop: posterior_grid(decoder, encoder, x, index, label)


def save_trained_run(result: RunResult, folder: str) -> Task:
    # the folder dialog asked before replacing; a folder this program did not write is never replaced
    return lambda report, should_stop: str(save_run(result, folder, overwrite=True))


def _history(path: Path) -> list[dict[str, float]]:
    """history.csv of a run folder (empty cells are NaN); missing or unreadable: no history."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
    out = []
    for row in rows:
        try:
            out.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
        except ValueError:
            return []
    return out


def open_run(path: str, data: DataBundle | None = None) -> Task:
    """Open a run folder; its g_θ is aligned to the truth of `data` (the data on show), if any."""
    def task(report: ProgressFn, should_stop: StopFn) -> OpenedRun:
        saved = load_run(path)
        return OpenedRun(saved, _history(saved.path / "history.csv"), *learned_manifold(saved.decoder, data))
    return task


def warm_up(report: ProgressFn, should_stop: StopFn) -> None:
    """One tiny forward/backward: torch imports its lazy modules (~0.6 s) here, not in the first run."""
    x = torch.zeros(4, 1)
    decoder = build_decoder(1, DecoderConfig(m=1, hidden=(4,)), x)
    decoder.mean(x).sum().backward()
