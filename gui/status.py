"""The status bar: run state, device, step and steps per second, elapsed time (and the time limit) and
ETA, a progress bar. Refreshed by the redraw clock from the latest progress numbers."""

from __future__ import annotations

import math
import time

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from engine.progress import ScoringProgress, TrainingProgress
from engine.trainer import PLATEAU_CUTS

from .plots.common import LiveView
from .state import RunState
from .tasks import Paused

STATE_COLOURS = {RunState.RUNNING: "#1b7f3b", RunState.PAUSED: "#8a5a00", RunState.SCORING: "#00695c",
                 RunState.STOPPING: "#8a5a00", RunState.FAILED: "#c62828", RunState.DONE: "#0b5394",
                 RunState.IDLE: "#444444"}
PROGRESS_UNITS = 1000  # the progress bar counts thousandths of the run


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class StatusView(LiveView):
    """The progress bar follows the fraction of the run done that the trainer reports (steps or time,
    whichever is further), so a time-limited run shows how much of its time has gone; during the final
    scoring it shows the fraction of the held-out points scored."""

    def __init__(self, bar: QStatusBar):
        self.bar = bar
        self.state_label = QLabel()
        self.device_label = QLabel()
        self.step_label = QLabel()
        self.rate_label = QLabel()
        self.time_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setTextVisible(True)
        self.progress.setRange(0, PROGRESS_UNITS)
        self.device_label.setToolTip("Where torch trains (training.device; auto picks CUDA when available)")
        self.step_label.setToolTip("Optimiser steps done / planned")
        self.rate_label.setToolTip("Training speed")
        self.time_label.setToolTip("Time since the run started, the time limit if there is one, and the "
                                   "estimated time left")
        self.progress.setToolTip("How much of the run is done: of its steps, or of its time limit if that "
                                 "comes first; then how much of the held-out points has been scored")
        for label, widest in ((self.step_label, "step 00000 / 00000"), (self.rate_label, "0000 steps/s"),
                              (self.time_label, "0:00:00 of 0:00:00 elapsed, ETA 0:00:00")):
            label.setMinimumWidth(label.fontMetrics().horizontalAdvance(widest))  # no re-layout as digits change
        for w in (self.step_label, self.rate_label, self.time_label, self.progress, self.device_label,
                  self.state_label):
            bar.addPermanentWidget(w)
        self.step = 0
        self.steps: int | None = 0
        self.converging = False  # the run goes until converged: the bar counts the plateau schedule's cuts
        self.series = False  # a series of runs (Choose m): the bar is the series' share done
        self.time_limit: float | None = None
        self.fraction = 0.0  # of the training done, as the trainer reports it
        self.scored = 0.0  # of the final scoring done
        self.rate = math.nan
        self.elapsed = math.nan
        self.phase = ""
        self.starting = ""  # what a run does before its first step ("drawing the data", ...)
        self._last = 0.0
        self._running = False
        self.state = RunState.IDLE
        self.set_state(RunState.IDLE)

    def set_state(self, state: RunState) -> None:
        self.state = state
        self._running = state == RunState.RUNNING
        self.state_label.setText(f" {state.value} ")
        self.state_label.setStyleSheet(f"color: white; background: {STATE_COLOURS[state]}; border-radius: 3px;")
        self.mark_dirty()  # the time label says elapsed and ETA only while a run goes

    def set_device(self, text: str) -> None:
        self.device_label.setText(f"device: {text}")

    def start(self, steps: int | None, time_limit: float | None = None, starting: str = "") -> None:
        """A new run; `starting`: what it does before its first step (the bar is busy until then)."""
        self.step, self.steps, self.time_limit = 0, steps, time_limit
        self.converging, self.series = False, False
        self.fraction, self.scored, self.rate, self.elapsed = 0.0, 0.0, math.nan, math.nan
        self.phase, self.starting = ("starting", starting) if starting else ("", "")
        self.mark_dirty()

    def set_starting(self, text: str) -> None:
        """What the run does now, before its first step."""
        if self.phase == "starting":
            self.starting = text
            self.mark_dirty()

    def finish(self, steps_done: int, seconds: float, converged: bool = False) -> None:
        """The run has ended: its steps and training time (the results table's), no ETA; a converged run is
        done whole."""
        self.phase, self.step, self.elapsed = "", steps_done, seconds
        if converged:
            self.fraction = 1.0
        self.mark_dirty()

    def set_progress(self, p: TrainingProgress | ScoringProgress | Paused) -> None:
        if isinstance(p, Paused):
            if self.phase == "starting" and not p.step:
                return  # a run started paused: it is still before its first step
            self.phase, self.step = "paused", p.step
        elif isinstance(p, ScoringProgress):
            self.phase, self.step, self.steps, self.scored = "evaluating", p.step, p.steps, p.fraction
        else:
            self.phase, self.step, self.steps, self.fraction = "", p.step, p.steps, p.fraction
            self.rate, self.elapsed, self.time_limit = p.steps_per_sec, p.elapsed, p.time_limit
            self.converging = p.converging
        self.mark_dirty()

    def set_series(self, step: int, steps: int | None, fraction: float) -> None:
        """A series of runs (Choose m): the current run's step, and the fraction of the whole series done."""
        self.phase, self.step, self.steps, self.fraction, self.series = "", step, steps, fraction, True
        self.mark_dirty()

    @property
    def until_converged(self) -> bool:
        """A run until converged (not a series): its bar shows the plateau schedule's cuts, no ETA."""
        return self.converging and not self.series

    def eta(self) -> float:
        """Seconds left, from the fraction done so far and the time it took (none for a run until converged)."""
        if self.until_converged:
            return math.nan
        f = self.fraction
        return self.elapsed * (1.0 - f) / f if 0.0 < f <= 1.0 and math.isfinite(self.elapsed) else math.nan

    def refresh(self) -> bool:
        """While a run goes, numbers change too fast to read at the plots' rate: at most four updates a
        second. Any other time (paused, evaluating, done) at once."""
        now = time.perf_counter()
        if self._running and now - self._last < 0.25 and self.phase == "":
            return False
        drew = super().refresh()
        if drew:
            self._last = now
        return drew

    def redraw(self) -> None:
        self.step_label.setText(f"step {self.step}" + ("" if self.steps is None else f" / {self.steps}"))
        self.rate_label.setText(f"{self.rate:.0f} steps/s" if math.isfinite(self.rate) else "— steps/s")
        limit = f" of {clock(self.time_limit)}" if self.time_limit is not None else ""
        busy = self.phase == "starting"
        if busy:
            self.time_label.setText(f"starting: {self.starting or 'preparing the run'}…")
            shown, text = 0.0, ""
        elif self.phase == "evaluating":
            self.time_label.setText(f"{clock(self.elapsed)}{limit} trained, scoring held-out points…")
            shown, text = self.scored, "scoring %p%"
        elif self.state in (RunState.RUNNING, RunState.PAUSED) and self.until_converged:
            self.time_label.setText(f"{clock(self.elapsed)} elapsed, until converged")
            cuts = round(self.fraction * (PLATEAU_CUTS + 1))
            shown, text = self.fraction, f"converging: lr cut {cuts} of {PLATEAU_CUTS}"
        elif self.state in (RunState.RUNNING, RunState.PAUSED):
            self.time_label.setText(f"{clock(self.elapsed)}{limit} elapsed, ETA {clock(self.eta())}")
            shown, text = self.fraction, "%p%"
        else:  # done, stopping, failed, idle: no estimate of a time left
            self.time_label.setText(f"{clock(self.elapsed)}{limit} trained" if math.isfinite(self.elapsed) else "")
            shown, text = self.fraction, "%p%"
        if (self.progress.maximum() == 0) != busy:  # a busy bar (no range) until the first step
            self.progress.setRange(0, 0 if busy else PROGRESS_UNITS)
        self.progress.setFormat(text)
        self.progress.setValue(round(PROGRESS_UNITS * min(max(shown, 0.0), 1.0)) if math.isfinite(shown) else 0)
