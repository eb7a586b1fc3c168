"""engine/display.py: what the GUI shows about a setting before a run, without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError
from engine.display import smallest_trainable, split_problem, split_sizes
from engine.trainer import split_indices


@pytest.mark.parametrize("val_fraction", [0.0, 0.01, 0.2, 0.3333, 0.5, 0.9])
def test_split_sizes_are_those_the_trainer_draws(val_fraction: float) -> None:
    for points in range(2, 60):
        train, held = split_indices(points, val_fraction, seed=3)
        assert split_sizes(points, val_fraction) == (len(train), len(held))


def test_split_problem_names_the_field_and_the_smallest_n() -> None:
    err = split_problem(2, 0.2, "simulation.samples")
    assert isinstance(err, ConfigError) and err.field == "simulation.samples" and err.value == 2
    assert "leave 1 for training" in err.allowed and "N >= 3" in err.allowed
    assert split_problem(3, 0.2, "simulation.samples") is None
    err = split_problem(4, 0.9, "training.val_fraction")
    assert err is not None and err.value == 0.9
    assert smallest_trainable(0.9) == 16 and split_sizes(15, 0.9)[0] == 1  # round(13.5) = 14 held out
    assert smallest_trainable(0.0) == 2


def test_display_imports_no_qt_and_no_torch() -> None:
    """It is called from the GUI thread, which never runs torch (docs/ARCHITECTURE.md)."""
    code = ("import engine.display, sys; "
            "print(any(m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
