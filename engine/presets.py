"""The presets of `resources/presets/`: RunConfig JSON files for the exercise sheet's settings."""

from __future__ import annotations

import sys
from pathlib import Path

from .config import ConfigError, RunConfig


def resources_dir() -> Path:
    """`resources/` beside main.py, or inside the PyInstaller bundle when frozen."""
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return base / "resources"


def list_presets() -> list[str]:
    return sorted(p.stem for p in (resources_dir() / "presets").glob("*.json"))


def load_preset(name: str) -> RunConfig:
    path = resources_dir() / "presets" / f"{name}.json"
    if not path.exists():
        raise ConfigError("preset", name, "expected one of " + ", ".join(list_presets()))
    return RunConfig.from_json(path.read_text(encoding="utf-8"))
