"""The state of a session, without Qt: the settings, the data in use, the runs and their records, the live
run, the selected run, and the run state machine with its transitions.

The window observes a `Session` (`subscribe`) and draws what it holds, as napari's Qt layer observes its
`ViewerModel`; tests drive it without a display (tests/test_session.py). Events, each with one argument:

    "state"          the new RunState                "data"      the new DataBundle
    "record_adding"  a RunRecord about to be added   "record"    the RunRecord just added (and selected)
    "selection"      the selected run's id or None
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.alignment import ManifoldView
from engine.config import ConfigError, RunConfig
from engine.display import split_problem
from engine.estimator_table import SAMPLING_ESTIMATORS, objective_label
from engine.networks import Decoder, Encoder
from engine.progress import RunSetup
from engine.runs import SavedRun
from engine.trainer import RunResult

from .state import TRANSITIONS, RunState
from .tasks import DataBundle, OpenedRun, TrainedRun

# distinct, print-friendly colours for runs (Okabe-Ito, then Tableau), by run number
RUN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
               "#8c564b", "#7f7f7f", "#bcbd22")
LARGE_K = 1000  # importance samples per point above which a step is slow (a warning, not an error)


def run_colour(run_id: int) -> str:
    return RUN_COLOURS[(run_id - 1) % len(RUN_COLOURS)]


@dataclass
class History:
    """A run's curves as arrays: the objective and σ at every recorded step, held-out where evaluated."""

    step: np.ndarray
    objective: np.ndarray
    sigma: np.ndarray
    heldout_step: np.ndarray
    heldout: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[dict[str, float]]) -> History:
        def col(key: str) -> np.ndarray:
            return np.array([float(r.get(key, math.nan)) for r in rows], dtype=float)

        step, held = col("step"), col("heldout")
        ok = np.isfinite(held)
        return cls(step, col("objective"), col("sigma"), step[ok], held[ok])


@dataclass
class RunRecord:
    """A run as the session keeps it: config, metrics, curves, and the fitted model."""

    run_id: int
    colour: str
    config: RunConfig
    metrics: dict[str, Any]
    history: History
    status: str
    message: str
    data_summary: str
    result: RunResult | None = None  # trained in this session (can be saved)
    saved: SavedRun | None = None  # opened from a run folder
    checked: bool = True
    data_label: str = ""  # the data it was fitted on, short: "sigmoid n=3 m=2", "data.csv n=2"
    imported_from: str = ""  # the file name of imported data it was fitted on ('' for simulated data)
    objective_label: str = ""  # what its training objective is: "log p(x)", "ELBO", ...
    manifold: ManifoldView | None = None  # g_θ for the data view, raw and aligned to the truth
    aligned_to: Any = None  # the DataBundle whose true latents `manifold`'s map was fitted to

    @property
    def estimator(self) -> str:
        return self.config.estimator.name

    @property
    def name(self) -> str:
        return f"#{self.run_id} {self.estimator}"

    @property
    def decoder(self) -> Decoder:
        return self.result.decoder if self.result is not None else self.saved.decoder

    @property
    def encoder(self) -> Encoder | None:
        return self.result.encoder if self.result is not None else self.saved.encoder


@dataclass
class LiveRun:
    """The run being trained: its number and colour, and the plot setup from its first progress."""

    run_id: int
    colour: str
    estimator: str = ""
    setup: RunSetup | None = None
    scoring: bool = False  # training has ended and the held-out points are being scored

    @property
    def name(self) -> str:
        return f"#{self.run_id} {self.estimator}"


class IllegalTransition(RuntimeError):
    """A move of the run state machine that `state.TRANSITIONS` does not allow: a bug, never user input."""


Observer = Callable[[str, Any], None]


class Session:
    """See the module docstring. `config` is the one RunConfig the panels edit."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.state = RunState.IDLE
        self.data: DataBundle | None = None
        self.records: list[RunRecord] = []
        self.live: LiveRun | None = None
        self.selected: int | None = None
        self.m_auto = False  # imported data need an m and the user has not set one since: Start suggests it
        self._next_run_id = 1
        self._sample_seed = 0
        self._observers: list[Observer] = []

    # ------------------------------------------------------------------------------------------ events
    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def _emit(self, event: str, value: Any) -> None:
        for observer in list(self._observers):
            observer(event, value)

    # ----------------------------------------------------------------------------------- state machine
    def move_to(self, state: RunState) -> None:
        """The run state machine's one way to change state; staying in a state is always allowed."""
        if state != self.state and state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"run state {self.state.value} -> {state.value}")
        self.state = state
        self._emit("state", state)

    # ------------------------------------------------------------------------------------------ data
    def set_data(self, bundle: DataBundle, imported: bool = False) -> None:
        """The data of the session; imported data without a true model need an m (`m_auto`)."""
        if imported:
            self.m_auto = bundle.needs_m  # no silent m: Start suggests one unless the user sets it first
        self.data = bundle
        self._emit("data", bundle)

    def set_truth_score(self, score: Any) -> None:
        """The true model's held-out score for the split now in use (a `tasks.TruthScore`, or None)."""
        if self.data is not None:
            self.data.truth_score = score

    def set_config(self, config: RunConfig) -> None:
        """Another config for the panels (a preset, a config file)."""
        self.config = config

    def data_stale(self) -> bool:
        """No data, or simulated data drawn with other settings than the current ones (imported: never)."""
        if self.data is None:
            return True
        return self.data.simulation is not None and self.data.simulation != self.config.simulation

    def data_in_use(self) -> DataBundle | None:
        """The data the next run trains on, if they exist already (else Start draws them from the settings)."""
        return None if self.data_stale() else self.data

    def suggests_m(self) -> bool:
        """Start fits PPCA's suggestion of m: imported data with nothing saying which m, and m not set since."""
        data = self.data_in_use()
        return self.m_auto and data is not None and data.needs_m

    def split_problem(self) -> ConfigError | None:
        """Too few points for the held-out split: said at N (or at the fraction, for imported data)."""
        data, training = self.data_in_use(), self.config.training
        if data is None:
            return split_problem(self.config.simulation.samples, training.val_fraction, "simulation.samples")
        return split_problem(len(data.dataset), training.val_fraction, "training.val_fraction")

    def warnings(self) -> dict[str, str]:
        """Legal settings that work badly, by config field (they do not block Start)."""
        c, out = self.config, {}
        sim = c.simulation
        if sim.m > sim.n:
            out["simulation.m"] = (f"m = {sim.m} > n = {sim.n}: more latents than coordinates, so z cannot be "
                                   "recovered from x")
        data = self.data_in_use()
        n = data.dataset.n if data is not None else sim.n
        if self.suggests_m():
            out["decoder.m"] = ("no true model: Start fits PPCA's suggestion of m (set m here, or Run → Choose m "
                                "from the data)")
        elif c.decoder.m > n:
            out["decoder.m"] = (f"fitted m = {c.decoder.m} > n = {n} of the data: the extra latents are not "
                                "identified, and cost time")
        k, batch = c.estimator.samples, c.training.batch_size
        if c.estimator.name in SAMPLING_ESTIMATORS and k > LARGE_K:
            out["estimator.samples"] = (f"K = {k:,}: a step passes B × K = {batch * k:,} points through g_θ, "
                                        f"slowly (K up to {LARGE_K:,} is usual)").replace(",", " ")
        return out

    def take_m(self, m: int) -> None:
        """m for the next runs, set by the app (PPCA's suggestion, the choice from the data) or the user."""
        self.config.decoder.m = m
        self.m_auto = False

    # ------------------------------------------------------------------------------------------ runs
    def begin_run(self, estimator: str) -> LiveRun:
        """A new live run: the next run number and its colour."""
        self.live = LiveRun(self._new_run_id(), "", estimator)
        self.live.colour = run_colour(self.live.run_id)
        return self.live

    def end_run(self) -> LiveRun | None:
        """The live run is over (trained, or failed): it is no longer live."""
        live, self.live = self.live, None
        return live

    def scoring_began(self, move: bool = True) -> None:
        """The live run's training has ended and its scoring begun: Stop now stops the scoring (even after a
        Stop that ended the training); the state moves to SCORING (`move`: not while the window closes)."""
        live = self.live
        if live is None or live.scoring:
            return
        live.scoring = True
        if move and self.state in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING):
            self.move_to(RunState.SCORING)

    def _new_run_id(self) -> int:
        run_id, self._next_run_id = self._next_run_id, self._next_run_id + 1
        return run_id

    def add_trained(self, trained: TrainedRun, live: LiveRun | None = None) -> RunRecord:
        """A run trained here enters the table: with the live run's number and colour, or new ones (a run of
        Choose m, which has no live phase)."""
        result, data = trained.result, self.data
        run_id = live.run_id if live is not None else self._new_run_id()
        objective = (live.setup.objective_label if live is not None and live.setup is not None
                     else objective_label(result.config.estimator.name, result.config.estimator.samples))
        record = RunRecord(run_id, live.colour if live is not None else run_colour(run_id), result.config,
                           result.metrics, History.from_rows(result.history), result.status, result.message,
                           data.summary if data is not None else "", result=result,
                           data_label=data.label if data is not None else "",
                           imported_from=data.imported_from if data is not None else "",
                           objective_label=objective, manifold=trained.manifold, aligned_to=data)
        self.add_record(record)
        return record

    def add_opened(self, opened: OpenedRun) -> RunRecord:
        """A run folder opened again enters the table."""
        saved, run_id = opened.saved, self._new_run_id()
        est = saved.config.estimator
        record = RunRecord(run_id, run_colour(run_id), saved.config, saved.metrics, History.from_rows(opened.history),
                           str(saved.info.get("status", "done")), str(saved.info.get("message", "")),
                           f"opened from {saved.path}", saved=saved,
                           objective_label=objective_label(est.name, est.samples), manifold=opened.manifold,
                           aligned_to=self.data)
        self.add_record(record)
        return record

    def add_record(self, record: RunRecord) -> None:
        """A finished (or opened) run enters the table and becomes the selected one."""
        self._emit("record_adding", record)
        self.records.append(record)
        self._emit("record", record)
        self.select(record.run_id)

    def record(self, run_id: int | None) -> RunRecord | None:
        return next((r for r in self.records if r.run_id == run_id), None)

    def select(self, run_id: int | None) -> None:
        self.selected = run_id
        self._emit("selection", run_id)

    def selected_record(self) -> RunRecord | None:
        return self.record(self.selected)

    def manifold_of(self, record: RunRecord) -> ManifoldView | None:
        """The run's g_θ for the data on show: none for data of another dimension; raw (no map) for other
        data than those its alignment was fitted to, whose truth it says nothing about."""
        view, data = record.manifold, self.data
        if view is None or data is None or record.decoder.n != data.dataset.n:
            return None
        return view if record.aligned_to is data else ManifoldView(view.grid, view.values)

    def next_sample_seed(self) -> int:
        self._sample_seed += 1
        return self._sample_seed
