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

from engine.config import DecoderConfig, RunConfig, SimulationConfig
from engine.display import graph_sign
from engine.estimators.vae import log_q
from engine.evaluate import as_float64
from engine.likelihood.quadrature import log_marginal_dense, uniform_grid
from engine.model import log_joint
from engine.networks import Decoder, Encoder, build_decoder
from engine.runs import SavedRun, fit, load_run, save_run
from engine.simulate import Dataset, sample_model, simulate
from engine.storage import load_dataset, save_dataset
from engine.trainer import RunResult, latent_grid, manifold

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

    @property
    def summary(self) -> str:
        ds = self.dataset
        where = "simulated" if self.simulation is not None else f"imported from {Path(self.source).name}"
        latents = f", true latents m = {ds.z.shape[1]}" if ds.z is not None else ", no latents"
        truth = ", true model known" if ds.truth is not None else ""
        return f"{len(ds)} points, n = {ds.n}{latents}{truth}; {where}"

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


def generate_data(sim: SimulationConfig) -> DataBundle:
    return _bundle(simulate(sim), "simulated", sim)


def generate(sim: SimulationConfig) -> Task:
    return lambda report, should_stop: generate_data(sim)


def import_data(path: str) -> Task:
    return lambda report, should_stop: _bundle(load_dataset(path), path, None)


def export_data(path: str, dataset: Dataset) -> Task:
    def task(report: ProgressFn, should_stop: StopFn) -> str:
        save_dataset(path, dataset)
        return path
    return task


def train(config: RunConfig, data: DataBundle | None) -> Task:
    """Fit `config` on `data`; with no data (or stale data) draw it first and report it as phase "data"."""
    def task(report: ProgressFn, should_stop: StopFn) -> TrainedRun:
        bundle = data
        if bundle is None:
            bundle = generate_data(config.simulation)
            report({"phase": "data", "data": bundle})
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
