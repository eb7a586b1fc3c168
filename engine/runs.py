"""A run: fit and score it, save it to a folder, open it again. Never unpickles anything.

RUN_DIR/
    run.json               the full RunConfig, seed, versions, device, status, data split sizes
    decoder.safetensors    decoder weights (net.layers.{i}.weight / .bias, rho)
    decoder.json           the decoder's architecture (layer sizes, activation, sigma and its floor)
    encoder.safetensors    (VAE runs) encoder weights
    encoder.json           (VAE runs) the encoder's architecture
    metrics.json           held-out metrics in nats per point (engine/metrics.py)
    history.csv            one row per training step
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ConfigError, DecoderConfig, RunConfig
from .metrics import score_run
from .networks import Decoder, Encoder
from .simulate import Dataset
from .storage import atomic_write_bytes, atomic_write_text
from .threads import apply_threads
from .trainer import ProgressFn, RunResult, StopFn, train

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


class RunFileError(ValueError):
    """A run folder that cannot be opened; the message names the file and the fix."""


def fit(config: RunConfig, data: Dataset, test: Dataset | None = None, on_progress: ProgressFn | None = None,
        should_stop: StopFn | None = None, stop_scoring: StopFn | None = None, snapshots: bool = True) -> RunResult:
    """Train, then score on the held-out points (what the CLI and the GUI worker both call).

    `should_stop()` ends the training (the run is still scored); `stop_scoring()`, checked between chunks of
    the scoring, ends that (the run comes back unscored, `metrics["scoring_stopped"]`). Before scoring,
    `on_progress` gets {"phase": "evaluating", "fraction": 0.0, "stop_answered": the training ended on a stop},
    then the fraction scored as it goes.
    `snapshots=False`: progress without the plot snapshots."""
    result = train(config, data, test, on_progress, should_stop, snapshots)
    report = None
    if on_progress is not None:
        def report(fraction: float) -> None:
            on_progress({"phase": "evaluating", "step": result.steps_done, "steps": config.training.steps,
                         "fraction": fraction, "stop_answered": result.status == "stopped"})

        report(0.0)
    apply_threads(config.training.threads, math.inf)  # scoring is large work: the idle cores unless told
    result.metrics = score_run(result, data, test, report, stop_scoring)
    return result


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _clean(o: Any) -> Any:
    """NaN and inf become null so the files are strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def dumps(obj: Any) -> str:
    return json.dumps(_clean(json.loads(json.dumps(obj, default=_json_default))), indent=2)


def save_run(result: RunResult, run_dir: str | Path) -> Path:
    """Write the run folder (every file atomically)."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    run = {"config": result.config.to_dict(), "seed": result.seed, "device": result.device,
           "versions": result.versions, "threads": result.threads, "status": result.status,
           "message": result.message,
           "steps_done": result.steps_done, "wall_time": result.wall_time,
           "n_train": len(result.train_idx), "n_validation": len(result.heldout_idx)}
    atomic_write_text(d / "run.json", dumps(run))
    _save_module(result.decoder, result.decoder.describe(), d / "decoder")
    if result.encoder is not None:
        _save_module(result.encoder, result.encoder.describe(), d / "encoder")
    atomic_write_text(d / "metrics.json", dumps(result.metrics))
    atomic_write_text(d / "history.csv", history_csv(result.history))
    return d


def _save_module(module: torch.nn.Module, desc: dict, stem: Path) -> None:
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(stem.with_suffix(".safetensors"), st_save(tensors, metadata={"format": "nlica-lab"}))
    atomic_write_text(stem.with_suffix(".json"), dumps(desc))


def history_csv(history: list[dict[str, float]]) -> str:
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols or ["step"], lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


@dataclass
class SavedRun:
    """A run folder opened again: enough to score it on new data or continue looking at it."""

    path: Path
    config: RunConfig
    decoder: Decoder
    encoder: Encoder | None
    metrics: dict[str, Any]
    info: dict[str, Any]


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise RunFileError(f"{path}: missing; a run folder holds run.json, decoder.safetensors and decoder.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFileError(f"{path}: not valid JSON ({e}); re-save the run") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise RunFileError(f"{path}: missing; save the run again from NLICA Lab")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise RunFileError(f"{path}: not a readable safetensors file ({e})") from None


def load_run(run_dir: str | Path) -> SavedRun:
    """Open a run folder written by `save_run`. Pickle files are refused, never loaded."""
    d = Path(run_dir)
    if d.suffix.lower() in PICKLE_SUFFIXES or (d.is_file() and d.suffix.lower() != ".json"):
        raise RunFileError(f"{d}: pickle/PyTorch checkpoint files are never opened (they can run code); "
                           "open a run folder holding decoder.safetensors and decoder.json")
    if d.is_file():
        d = d.parent
    info = _read_json(d / "run.json")
    try:
        config = RunConfig.from_dict(info.get("config") if isinstance(info, dict) else None)
    except ConfigError as e:
        raise RunFileError(f"{d / 'run.json'}: {e}") from None
    desc = _read_json(d / "decoder.json")
    try:
        n = int(desc["n"])
        dcfg = DecoderConfig(m=int(desc["m"]), hidden=tuple(int(h) for h in desc["hidden"]),
                             activation=desc["activation"], sigma_mode=desc["sigma_mode"])
        dcfg.validate()
        decoder = Decoder(n, dcfg, sigma_init=1.0 + float(desc["sigma_min"]), sigma_min=float(desc["sigma_min"]))
        decoder.load_state_dict(_read_tensors(d / "decoder.safetensors"))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunFileError(f"{d / 'decoder.json'}: does not match decoder.safetensors ({e})") from None
    encoder = None
    if (d / "encoder.json").exists():
        edesc = _read_json(d / "encoder.json")
        try:
            encoder = Encoder(int(edesc["n"]), int(edesc["m"]), tuple(int(h) for h in edesc["hidden"]),
                              edesc["activation"])
            encoder.load_state_dict(_read_tensors(d / "encoder.safetensors"))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise RunFileError(f"{d / 'encoder.json'}: does not match encoder.safetensors ({e})") from None
    metrics = _read_json(d / "metrics.json") if (d / "metrics.json").exists() else {}
    return SavedRun(d, config, decoder.eval(), encoder, metrics, info)
