"""What the GUI shows, computed without torch (the GUI thread never runs it).

`split_sizes` is the size of the training / held-out split that `trainer.split_indices` draws, and
`split_problem` the refusal the trainer would raise for it, so that a setting that cannot train is named at
its field before Start rather than in a failed run.
"""

from __future__ import annotations

from .config import ConfigError

MIN_TRAINING_POINTS = 2  # the trainer's minimum


def split_sizes(points: int, val_fraction: float) -> tuple[int, int]:
    """(training points, held-out points) of the split: a round(fraction) share held out, at least one and at
    most all but one (none for fraction 0). `trainer.split_indices` draws which rows."""
    held = min(points - 1, max(1, round(points * val_fraction))) if val_fraction > 0 else 0
    return points - held, held


def smallest_trainable(val_fraction: float) -> int:
    """The fewest points whose split leaves the trainer its minimum of training points."""
    points = MIN_TRAINING_POINTS
    while split_sizes(points, val_fraction)[0] < MIN_TRAINING_POINTS:
        points += 1
    return points


def split_problem(points: int, val_fraction: float, field: str) -> ConfigError | None:
    """The ConfigError (naming `field`, which holds `points` or the fraction) when the split of `points` by
    `val_fraction` leaves fewer training points than the trainer needs; None when it trains."""
    train, _held = split_sizes(points, val_fraction)
    if train >= MIN_TRAINING_POINTS:
        return None
    value = val_fraction if field.endswith("val_fraction") else points
    return ConfigError(field, value, f"{points} points with held-out fraction {val_fraction:g} leave {train} for "
                                     f"training; need at least {MIN_TRAINING_POINTS} (N >= "
                                     f"{smallest_trainable(val_fraction)}, or a smaller held-out fraction)")
