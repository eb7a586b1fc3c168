"""A run: fit and score it, save it to a folder, open it again. Never unpickles anything.

RUN_DIR/
    run.json               the full RunConfig, seed, versions, device, status, data split sizes
    decoder.safetensors    decoder weights (net.layers.{i}.weight / .bias, the linear path net.skip, rho)
    decoder.json           the decoder's architecture (layer sizes, activation, sigma and its floor)
    encoder.safetensors    (VAE runs) encoder weights
    encoder.json           (VAE runs) the encoder's architecture
    metrics.json           held-out metrics in nats per point (engine/metrics.py)
    history.csv            one row per training step
    manifest.json          every file's size and SHA-256, written last (engine/outputs.py)

A folder is written as one unit (a temporary sibling renamed into place) and checked against its manifest
when opened.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ConfigError, DecoderConfig, EstimatorConfig, RunConfig
from .metrics import compare_row, score_run
from .networks import Decoder, Encoder
from .outputs import UnitError, UnitWriter, verify
from .progress import ProgressFn, ScoringProgress
from .simulate import Dataset
from .storage import unreadable
from .threads import apply_threads
from .trainer import RunResult, StopFn, train

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


class RunFileError(ValueError):
    """A run folder that cannot be opened; the message names the file and the fix."""


def fit(config: RunConfig, data: Dataset, test: Dataset | None = None, on_progress: ProgressFn | None = None,
        should_stop: StopFn | None = None, stop_scoring: StopFn | None = None, snapshots: bool = True,
        on_trained: Callable[[RunResult], None] | None = None) -> RunResult:
    """Train, then score on the held-out points (what the CLI and the GUI worker both call).

    `on_trained(result)` gets the trained, unscored run before the scoring starts (the CLI saves it there, so
    that nothing trained is lost whatever the scoring does). `should_stop()` ends the training (the run is
    still scored); `stop_scoring()`, checked between chunks of the scoring, ends that (the run comes back
    unscored, `metrics["scoring_stopped"]`). A scoring that fails leaves the run with
    `metrics["scoring_failed"]`, the reason. Before scoring, `on_progress` gets a `ScoringProgress` at
    fraction 0 (`stop_answered`: the training ended on a stop), then the fraction scored as it goes.
    `snapshots=False`: progress without the plot snapshots."""
    result = train(config, data, test, on_progress, should_stop, snapshots)
    if on_trained is not None:
        on_trained(result)
    report = None
    if on_progress is not None:
        def report(fraction: float) -> None:
            on_progress(ScoringProgress(result.steps_done, config.training.steps, fraction,
                                        result.status == "stopped"))

        report(0.0)
    apply_threads(config.training.threads, math.inf)  # scoring is large work: the idle cores unless told
    try:
        result.metrics = score_run(result, data, test, report, stop_scoring)
    except (ArithmeticError, ValueError, RuntimeError, MemoryError, torch.linalg.LinAlgError) as e:
        result.metrics = unscored_metrics(result, f"scoring failed ({type(e).__name__}: {short(str(e))}); "
                                          "the trained run is kept: `evaluate --run RUN_DIR --data FILE` scores it")
        result.metrics["scoring_failed"] = short(str(e)) or type(e).__name__
    return result


def unscored_metrics(result: RunResult, note: str) -> dict[str, Any]:
    """What metrics.json holds before (or without) a scoring: how the run ended, and why it is unscored."""
    return {"scored": False, "estimator": result.config.estimator.name, "status": result.status,
            "steps": result.steps_done, "wall_time": result.wall_time, "convergence": result.convergence,
            "warnings": [note]}


def short(text: str, limit: int = 200) -> str:
    """A message cut to `limit` characters (errors may quote a user's 4000-digit value)."""
    text = " ".join(text.split())  # one line: torch's messages hold newlines and tabs
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def run_files(result: RunResult) -> dict[str, bytes]:
    """The run folder's files (all but the manifest) as bytes."""
    run = {"config": result.config.to_dict(), "seed": result.seed, "device": result.device,
           "versions": result.versions, "threads": result.threads, "status": result.status,
           "message": result.message, "scored": bool(result.metrics) and result.metrics.get("scored", True),
           "steps_done": result.steps_done, "wall_time": result.wall_time, "convergence": result.convergence,
           "n_train": len(result.train_idx), "n_validation": len(result.heldout_idx),
           "columns": None if result.columns is None else list(result.columns)}
    metrics = result.metrics or unscored_metrics(result, "not scored yet: the scoring was still running when "
                                                 "this was written; `evaluate --run RUN_DIR --data FILE` scores it")
    files = {"run.json": dumps(run).encode(), "metrics.json": dumps(metrics).encode(),
             "history.csv": history_csv(result.history).encode()}
    modules = [("decoder", result.decoder)] + ([("encoder", result.encoder)] if result.encoder is not None else [])
    for stem, module in modules:
        tensors = {k: v.detach().cpu().float().contiguous() for k, v in module.state_dict().items()}
        files[f"{stem}.safetensors"] = st_save(tensors, metadata={"format": "nlica-lab"})
        files[f"{stem}.json"] = dumps(module.describe()).encode()
    return files


def save_run(result: RunResult, run_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the run folder as one unit; an existing folder is replaced (whole) only with `overwrite`."""
    with UnitWriter(run_dir, overwrite=overwrite, kind="run") as w:
        return w.write(run_files(result))


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


# what a failed run raises: in a series (compare, select-m) it is a row "failed" and the series goes on
FIT_ERRORS = (ConfigError, ValueError, RuntimeError, ArithmeticError, MemoryError)


@dataclass
class Series:
    """Runs of a series of named configs: one `metrics.compare_row` each, in order, and those that finished."""

    rows: list[dict[str, Any]]
    results: dict[str, RunResult]
    aborted: bool = False  # an exception of `aborts` ended it


def fit_series(named: list[tuple[str, RunConfig]], fit_one: Callable[[str, RunConfig], RunResult],
               stopped: Callable[[], bool], aborts: tuple[type[BaseException], ...] = (),
               on_failed: Callable[[str, str], None] | None = None) -> Series:
    """Fit each (name, config) with `fit_one` (what `compare` and `select-m` run, in the CLI and the GUI): a
    run raising one of FIT_ERRORS is a row "failed" with its message (`on_failed(name, message)` too) and the
    series goes on; once `stopped()`, the rest are rows "not run"; one of `aborts` (Ctrl-C twice) ends the
    series with a row "aborted", what finished kept."""
    series = Series([], {})
    for name, cfg in named:
        if stopped():
            series.rows.append(compare_row(name, {}, "not run", "not run: stopped by the user"))
            continue
        try:
            result = fit_one(name, cfg)
        except FIT_ERRORS as e:
            series.rows.append(compare_row(name, {}, "failed", f"failed: {short(str(e))}"))
            if on_failed is not None:
                on_failed(name, short(str(e)))
            continue
        except aborts:
            series.rows.append(compare_row(name, {}, "aborted", "aborted by the user (Ctrl-C twice)"))
            series.aborted = True
            return series
        series.rows.append(compare_row(name, result.metrics, result.status,
                                       "; ".join(result.metrics.get("warnings", [])[:1])))
        series.results[name] = result
    return series


MAX_HISTORY_BYTES = 1 << 30  # history.csv: about 100 bytes a step


def load_history(run_dir: str | Path) -> list[dict[str, float]]:
    """history.csv of a run folder, the inverse of `history_csv` (empty cells are NaN); missing, too large or
    unreadable: no history (the run itself is still usable)."""
    path = Path(run_dir) / "history.csv"
    try:
        if unreadable(path, MAX_HISTORY_BYTES):
            return []
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError):
        return []


@dataclass
class SavedRun:
    """A run folder opened again: enough to score it on new data or continue looking at it."""

    path: Path
    config: RunConfig
    decoder: Decoder
    encoder: Encoder | None
    metrics: dict[str, Any]
    info: dict[str, Any]


MAX_JSON_BYTES = 16 << 20  # run.json, decoder.json, metrics.json: a few kB when written here
MAX_WIDTH = 1 << 16  # n and every layer width a decoder.json may ask for


def _read_json(path: Path) -> Any:
    problem = unreadable(path, MAX_JSON_BYTES)
    if problem:
        raise RunFileError(f"{path}: {problem}; a run folder holds run.json, decoder.safetensors and decoder.json")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise RunFileError(f"{path}: not valid JSON ({short(str(e), 80)}); save the run again") from None
    except OSError as e:
        raise RunFileError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from None


def _read_tensors(path: Path, max_bytes: int) -> dict[str, torch.Tensor]:
    problem = unreadable(path, max_bytes)
    if problem:
        raise RunFileError(f"{path}: {problem}; save the run again from NLICA Lab")
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, ValueError, OSError) as e:
        raise RunFileError(f"{path}: not a readable safetensors file ({short(str(e), 80)})") from None
    for name, t in tensors.items():
        if not torch.is_floating_point(t) or not bool(torch.isfinite(t).all()):
            raise RunFileError(f"{path}: tensor {name!r} holds non-finite or non-float values; "
                               "the run cannot be used (train it again)")
    return tensors


def _module_json(path: Path) -> dict[str, Any]:
    """A decoder.json or encoder.json, its sizes checked before anything is allocated."""
    desc = _read_json(path)
    if not isinstance(desc, dict):
        raise RunFileError(f"{path}: expected a JSON object describing the network")
    for key in ("n", "m"):
        v = desc.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WIDTH:
            raise RunFileError(f"{path}: {key}: got {short(repr(v), 40)}; expected an integer from 1 to {MAX_WIDTH}")
    return desc


def _check_matches(path: Path, what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise RunFileError(f"{path}: {what} is {short(repr(got), 40)} but run.json says {short(repr(expected), 40)}; "
                           "the folder mixes two runs (save the run again)")


def load_run(run_dir: str | Path) -> SavedRun:
    """Open a run folder written by `save_run`, checked against its manifest. Pickle files are refused, never
    loaded; every size is checked before it is allocated."""
    d = Path(run_dir)
    if d.suffix.lower() in PICKLE_SUFFIXES:
        raise RunFileError(f"{d}: pickle/PyTorch checkpoint files are never opened (they can run code); "
                           "open a run folder holding decoder.safetensors and decoder.json")
    if d.is_file():
        if d.suffix.lower() != ".json":
            raise RunFileError(f"{d}: a file, not a run folder; open the folder holding run.json, "
                               "decoder.safetensors and decoder.json")
        d = d.parent
    if not d.is_dir():
        raise RunFileError(f"{d}: no such run folder (one holds run.json, decoder.safetensors and decoder.json); "
                           "give the folder `fit --out` wrote")
    try:
        verify(d)
    except UnitError as e:
        raise RunFileError(str(e)) from None
    info = _read_json(d / "run.json")
    try:
        config = RunConfig.from_dict(info.get("config") if isinstance(info, dict) else None)
    except ConfigError as e:
        raise RunFileError(f"{d / 'run.json'}: {short(str(e))}") from None
    desc = _module_json(d / "decoder.json")
    try:
        n = desc["n"]
        dcfg = DecoderConfig(m=desc["m"], hidden=tuple(desc["hidden"]), activation=desc["activation"],
                             sigma_mode=desc["sigma_mode"], sigma_min=desc["sigma_min"],
                             preprocess=desc.get("preprocess", "none"))
        dcfg.validate()
        if dcfg.sigma_min is None:
            raise TypeError("sigma_min: missing; expected the floor the run trained with (a number >= 0)")
    except (KeyError, TypeError, ConfigError) as e:
        raise RunFileError(f"{d / 'decoder.json'}: {short(str(e))}; save the run again") from None
    _check_matches(d / "decoder.json", "m", dcfg.m, config.decoder.m)
    _check_matches(d / "decoder.json", "hidden", list(dcfg.hidden), list(config.decoder.hidden))
    widths = [dcfg.m, *dcfg.hidden, n]
    decoder = Decoder(n, dcfg, sigma_init=1.0 + dcfg.sigma_min, sigma_min=dcfg.sigma_min)
    try:
        tensors = _read_tensors(d / "decoder.safetensors", _tensor_bytes(widths) + (1 << 20))
        decoder.load_state_dict(_with_defaults(tensors, decoder))
    except RuntimeError as e:
        raise RunFileError(f"{d / 'decoder.json'}: does not match decoder.safetensors ({short(str(e), 120)})") from None
    encoder = None
    if (d / "encoder.json").exists() or (d / "encoder.safetensors").exists():
        edesc = _module_json(d / "encoder.json")
        try:
            hidden = tuple(edesc["hidden"])
            EstimatorConfig(encoder_hidden=hidden).validate()
            placeholder = torch.zeros(edesc["n"]) if edesc.get("normalise") else None
            encoder = Encoder(edesc["n"], edesc["m"], hidden, edesc["activation"], placeholder, placeholder)
            tensors = _read_tensors(d / "encoder.safetensors", _tensor_bytes([edesc["n"], *hidden, 2 * edesc["m"]])
                                    + (1 << 20))
            encoder.load_state_dict(_with_defaults(tensors, encoder))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # ConfigError is a ValueError
            raise RunFileError(f"{d / 'encoder.json'}: does not match encoder.safetensors ({short(str(e), 120)})") \
                from None
        _check_matches(d / "encoder.json", "n and m", (edesc["n"], edesc["m"]), (n, dcfg.m))
    metrics = _read_json(d / "metrics.json") if (d / "metrics.json").exists() else {}
    return SavedRun(d, config, decoder.eval(), encoder, metrics if isinstance(metrics, dict) else {}, info)


def _with_defaults(tensors: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Files written before preprocessing existed have no data_shift / data_scale (the identity), before the
    linear path no net.skip (zero: the same function)."""
    for name in ("data_shift", "data_scale", "net.skip"):
        if name not in tensors and name in module.state_dict():
            tensors[name] = module.state_dict()[name]
    return tensors


def _tensor_bytes(widths: list[int]) -> int:
    """float32 bytes of an MLP's weights and biases for these layer widths, and its linear path."""
    return 4 * sum(a * b + b for a, b in itertools.pairwise(widths)) + 4 * widths[-1] + 4 * widths[0] * widths[-1]
