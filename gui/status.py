"""The status bar: run state, device, step and steps per second, elapsed time and ETA, a progress bar.
Refreshed by the redraw clock from the latest progress numbers."""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from .plots.common import LiveView
from .state import RunState

STATE_COLOURS = {RunState.RUNNING: "#1b7f3b", RunState.PAUSED: "#8a5a00", RunState.STOPPING: "#8a5a00",
                 RunState.FAILED: "#c62828", RunState.DONE: "#0b5394", RunState.IDLE: "#444444"}


def clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class StatusView(LiveView):
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
        self.device_label.setToolTip("Where torch trains (training.device; auto picks CUDA when available)")
        self.step_label.setToolTip("Optimiser steps done / planned")
        self.rate_label.setToolTip("Training speed")
        self.time_label.setToolTip("Time since the run started, and the estimated time left")
        for w in (self.step_label, self.rate_label, self.time_label, self.progress, self.device_label,
                  self.state_label):
            bar.addPermanentWidget(w)
        self.step = 0
        self.steps = 0
        self.rate = math.nan
        self.elapsed = math.nan
        self.phase = ""
        self._last = 0.0
        self._running = False
        self.set_state(RunState.IDLE)

    def set_state(self, state: RunState) -> None:
        self._running = state == RunState.RUNNING
        self.state_label.setText(f" {state.value} ")
        self.state_label.setStyleSheet(f"color: white; background: {STATE_COLOURS[state]}; border-radius: 3px;")

    def set_device(self, text: str) -> None:
        self.device_label.setText(f"device: {text}")

    def start(self, steps: int) -> None:
        self.step, self.steps, self.rate, self.elapsed, self.phase = 0, steps, math.nan, math.nan, ""
        self.mark_dirty()

    def set_progress(self, info: dict[str, Any]) -> None:
        self.step = int(info.get("step", self.step))
        self.steps = int(info.get("steps", self.steps))
        self.rate = float(info.get("steps_per_sec", self.rate))
        self.elapsed = float(info.get("elapsed", self.elapsed))
        self.phase = info.get("phase", "")
        self.mark_dirty()

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
        self.step_label.setText(f"step {self.step} / {self.steps}")
        self.rate_label.setText(f"{self.rate:.0f} steps/s" if math.isfinite(self.rate) else "— steps/s")
        left = (self.steps - self.step) / self.rate if self.rate > 0 else math.nan
        eta = "evaluating…" if self.phase == "evaluating" else f"ETA {clock(left)}"
        self.time_label.setText(f"{clock(self.elapsed)} elapsed, {eta}")
        self.progress.setRange(0, max(1, self.steps))
        self.progress.setValue(min(self.step, max(1, self.steps)))
