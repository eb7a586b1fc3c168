"""The run state machine: its states, the moves between them, and which controls each state enables (no Qt)."""

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

# the moves the run state machine allows (staying put is always allowed): Start or Step begins a run, Pause
# and Resume, the training's end (scoring) or a Stop, the run's end; Reset returns to IDLE; shutting the
# window down stops whatever runs
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.IDLE: frozenset({RunState.RUNNING, RunState.PAUSED}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.SCORING, RunState.STOPPING, RunState.DONE,
                                 RunState.FAILED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.SCORING, RunState.STOPPING, RunState.DONE,
                                RunState.FAILED}),
    RunState.SCORING: frozenset({RunState.STOPPING, RunState.DONE, RunState.FAILED}),
    RunState.STOPPING: frozenset({RunState.SCORING, RunState.DONE, RunState.FAILED}),
    RunState.DONE: frozenset({RunState.RUNNING, RunState.PAUSED, RunState.IDLE}),
    RunState.FAILED: frozenset({RunState.IDLE, RunState.RUNNING, RunState.PAUSED}),
}

# states in which a training run owns the worker thread
ACTIVE = frozenset({RunState.RUNNING, RunState.PAUSED, RunState.SCORING, RunState.STOPPING})
