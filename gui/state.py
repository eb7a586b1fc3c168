"""The run state machine and which controls each state enables (no Qt here)."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    SCORING = "scoring"
    STOPPING = "stopping"
    DONE = "done"
    FAILED = "failed"


CONTROLS = ("start", "pause", "step", "stop", "reset")

# Start and Step (from a state with no run) begin a new run; Step while paused advances one step.
# Pause toggles to Resume while paused. SCORING: training has ended and the run is being scored on its
# held-out points; Stop ends the scoring (the trained run is kept), nothing pauses it. FAILED lasts while
# the error is on screen, then the app is IDLE.
ENABLED: dict[RunState, frozenset[str]] = {
    RunState.IDLE: frozenset({"start", "step", "reset"}),
    RunState.RUNNING: frozenset({"pause", "stop"}),
    RunState.PAUSED: frozenset({"pause", "step", "stop"}),
    RunState.SCORING: frozenset({"stop"}),
    RunState.STOPPING: frozenset(),
    RunState.DONE: frozenset({"start", "step", "reset"}),
    RunState.FAILED: frozenset({"start", "step", "reset"}),
}

# states in which a training run owns the worker thread
ACTIVE = frozenset({RunState.RUNNING, RunState.PAUSED, RunState.SCORING, RunState.STOPPING})
