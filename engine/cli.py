"""Headless command line: simulate, evaluate, fit, compare, select-m. Bad input: one line on stderr, exit code
2; Ctrl-C: exit code 130."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .config import (
    ACTIVATIONS,
    DEFAULT_MAX_STEPS,
    INITS,
    MIXINGS,
    PREPROCESS,
    SCHEDULES,
    SIGMOID_KINDS,
    ConfigError,
    RunConfig,
    SimulationConfig,
    resolved_nodes,
)
from .estimator_table import ESTIMATORS, GRID_ESTIMATORS
from .evaluate import ScoringStopped, heldout_loglik, sigma_report
from .likelihood.rules import compact_rule, rule_name
from .memory import require
from .metrics import COMPARE_COLUMNS
from .outputs import OutputError, UnitWriter
from .presets import list_presets, load_preset
from .progress import Progress, ScoringProgress
from .runs import RunFileError, Series, dumps, fit, fit_series, load_run, run_files, short
from .selection import SELECT_M_ESTIMATOR, choose_m, select_m_chart, select_m_record, suggest_m
from .simulate import Dataset, simulate
from .storage import DataFileError, load_dataset, save_dataset, unreadable
from .threads import apply_threads
from .trainer import FINISHED, RunResult, check_range, preflight, resolve_device

USAGE_ERRORS = (ConfigError, DataFileError, RunFileError, OutputError)


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


def _int_list(text: str) -> tuple[int, ...]:
    if text.strip() in ("", "none", "linear"):
        return ()
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 64,64, got {text!r}") from None


def _threads(text: str) -> int:
    if text.strip().lower() == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a number of threads like 1, got {text!r}")
    return n


class _OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as one stderr line (the usage itself is in --help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="nlica-lab", description="NLICA Lab: simulate the nonlinear ICA model "
                                "Z ~ N(0, I_m), X | Z ~ N(f(Z), sigma^2 I_n) and learn it by direct MLE or a "
                                "VAE. Without a subcommand the desktop app opens.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="draw a data set from the model and write it (.npz or .csv)")
    s.add_argument("--preset", choices=list_presets() or None, help="take the simulation settings of a preset")
    s.add_argument("--mixing", choices=MIXINGS, help="f: linear, polynomial, sigmoid or mlp")
    s.add_argument("--n", type=int, help="data dimension n >= 1")
    s.add_argument("--m", type=int, help="latent dimension m >= 1")
    s.add_argument("--sigma", type=float, help="noise standard deviation sigma > 0")
    s.add_argument("--samples", type=int, help="number of points N >= 2")
    s.add_argument("--seed", type=int, help="random seed >= 0")
    s.add_argument("--degree", type=int, help="polynomial degree d (1-9)")
    s.add_argument("--sigmoid-kind", choices=SIGMOID_KINDS, help="logistic or tanh")
    s.add_argument("--mlp-depth", type=int, help="hidden layers of the random MLP (1-8)")
    s.add_argument("--mlp-width", type=int, help="width of the random MLP")
    s.add_argument("--mlp-activation", choices=ACTIVATIONS, help="activation of the random MLP")
    s.add_argument("--scale", type=float, help="scale of the random coefficients (> 0)")
    s.add_argument("--out", required=True, help="output file, .npz (keeps z and the true model) or .csv")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    e = sub.add_parser("evaluate", help="held-out average log-likelihood (nats/point) as JSON")
    e.add_argument("--data", required=True, help="data file (.npz or .csv)")
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--truth", action="store_true", help="score the true model stored in the .npz file")
    g.add_argument("--run", help="score a saved run folder")
    e.add_argument("--samples", type=int, default=2000, help="importance samples K when m > 2 (>= 1000 used)")
    e.add_argument("--seed", type=int, default=0, help="seed of the importance sampler")
    e.add_argument("--threads", type=_threads, default=0, help="torch intra-op threads: auto (default) or N")

    for name, helptext in (("fit", "train one estimator and save the run folder"),
                           ("compare", "train several estimators on the same data and split; one table"),
                           ("select-m", "fit m = 1..M on the same split and choose m by held-out log-likelihood")):
        f = sub.add_parser(name, help=helptext)
        f.add_argument("--data", required=True, help="training data (.npz or .csv)")
        f.add_argument("--test", help="held-out data; default: a validation split of --data")
        if name == "fit":
            f.add_argument("--estimator", choices=ESTIMATORS, default=None, help="training objective")
        elif name == "select-m":
            f.add_argument("--estimator", choices=ESTIMATORS, default=None,
                           help=f"training objective for every m (default {SELECT_M_ESTIMATOR}, one family for "
                           "all m)")
            f.add_argument("--max-m", type=int, help="largest m tried (default min(n - 1, 6), at least 1)")
        else:
            f.add_argument("--estimators", default="mle-adaptive,mle-importance,vae,iwae",
                           help="comma-separated estimators (" + ", ".join(ESTIMATORS) + ")")
        f.add_argument("--config", help="a RunConfig JSON (GUI 'Save config'); flags below override it")
        if name != "select-m":
            f.add_argument("--m", type=int, help="latent dimension of the fitted model (default: the data's, else "
                           "the PPCA suggestion, said on stderr)")
        f.add_argument("--hidden", type=_int_list, help="decoder hidden widths, e.g. 64,64 ('' = linear)")
        f.add_argument("--activation", choices=ACTIVATIONS, help="decoder activation")
        f.add_argument("--steps", type=int, help="step cap (default: train until converged, at most "
                       f"{DEFAULT_MAX_STEPS} steps; with --time-limit: whichever ends first)")
        f.add_argument("--time-limit", type=float, metavar="SECONDS",
                       help="time cap in seconds (alone: no step cap); the run still ends when it converges")
        f.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule: plateau (default: halved "
                       "when the held-out estimate stalls, converged at 1/32), cosine (laid over --steps or "
                       "--time-limit, runs to the cap) or constant")
        f.add_argument("--tol", type=float, help="convergence tolerance in nats per point over the window of "
                       "--patience evaluations (default 0.001)")
        f.add_argument("--patience", type=int, help="held-out evaluations in the convergence window (default 10; "
                       "0: never converged, train to the cap)")
        f.add_argument("--init", choices=INITS, help="start: ppca (default: the closed-form linear fit of the "
                       "model's m, so a fit starts at PPCA's score) or random")
        f.add_argument("--threads", type=_threads, help="torch intra-op threads: auto (default) or N")
        f.add_argument("--batch-size", type=int, help="minibatch size")
        f.add_argument("--lr", type=float, help="Adam learning rate")
        f.add_argument("--nodes", type=int, help="Gauss-Hermite nodes per latent dimension (default: by m, "
                       "mle-adaptive 16 for m = 1, 3 for m >= 2 (degree-5 rules); mle-quadrature 200, 16, 6 "
                       "for m = 1, 2, 3)")
        f.add_argument("--samples", type=int, help="K: importance samples (mle-importance, iwae)")
        f.add_argument("--sigma-min", type=float, help="sigma floor (0: none; default 1e-3 x data scale)")
        f.add_argument("--preprocess", choices=PREPROCESS, help="fit on centred or standardised columns; "
                       "log-likelihoods stay in the data's units (default none)")
        f.add_argument("--val-fraction", type=float, help="validation fraction of --data")
        f.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train")
        f.add_argument("--seed", type=int, help="training seed")
        f.add_argument("--quiet", action="store_true", help="no progress bar")
        f.add_argument("--out", required=True, help="run folder (fit) or output folder (compare, select-m), "
                       "written as one unit")
        f.add_argument("--overwrite", action="store_true", help="replace --out (whole) if it exists")
    return p


def cmd_simulate(a: argparse.Namespace) -> int:
    cfg = load_preset(a.preset).simulation if a.preset else SimulationConfig()
    overrides = {k: getattr(a, k) for k in ("mixing", "n", "m", "sigma", "samples", "seed", "degree",
                                            "sigmoid_kind", "mlp_depth", "mlp_width", "mlp_activation",
                                            "scale") if getattr(a, k) is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    require(3 * 8 * cfg.samples * (cfg.n + cfg.m), "simulation.samples", cfg.samples, "the simulated data",
            "lower --samples (or --n)")
    with UnitWriter(a.out, overwrite=a.overwrite, kind="file"):
        data = simulate(cfg)
        save_dataset(a.out, data)
    print(json.dumps({"out": a.out, "n_points": len(data), "n": cfg.n, "m": cfg.m, "mixing": cfg.mixing,
                      "sigma": cfg.sigma, "seed": cfg.seed}))
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    if not 1 <= a.samples <= 10_000_000:
        raise UsageError(f"--samples: got {a.samples}; expected an integer from 1 to 10000000 (>= 1000 are used)")
    if not 0 <= a.seed <= 2**63 - 1:
        raise UsageError(f"--seed: got {a.seed}; expected an integer from 0 to {2**63 - 1}")
    if not 0 <= a.threads <= 1024:
        raise UsageError(f"--threads: got {a.threads}; expected auto or an integer from 1 to 1024")
    apply_threads(a.threads, math.inf)  # scoring is large work: the idle cores unless told
    data = load_dataset(a.data)
    if a.truth:
        if data.truth is None:
            raise UsageError(f"{a.data}: holds no true model; --truth needs an .npz written by "
                             "`simulate` (or use --run RUN_DIR)")
        model = data.truth
    else:
        model = load_run(a.run).decoder
        if model.n != data.n:
            raise UsageError(f"--data: {a.data} has n = {data.n} columns but the run's decoder has n = "
                             f"{model.n}; score it on data of the same dimension")
    from tqdm import tqdm

    stop = _CtrlC()
    with tqdm(total=100, desc="scoring", unit="%", file=sys.stderr, dynamic_ncols=True) as bar:
        def progress(fraction: float) -> None:
            bar.n = round(100 * fraction)
            bar.refresh()

        try:
            est = heldout_loglik(model, data.x, samples=a.samples, seed=a.seed, on_progress=progress,
                                 should_stop=stop.pending.is_set)
        except ScoringStopped:
            print(f"nlica-lab evaluate: stopped by the user after {bar.n} % of the points; nothing written",
                  file=sys.stderr)
            return 130
    out = {**est.to_json(), **sigma_report(model)}
    print(dumps(out))
    return 0


MAX_CONFIG_BYTES = 1 << 20


def _read_config(path: str) -> RunConfig:
    """The --config file as a RunConfig, not yet validated (the flags override it first)."""
    problem = unreadable(path, MAX_CONFIG_BYTES)
    if problem:
        raise UsageError(f"--config: {path}: {problem}; give a RunConfig JSON file (the GUI's 'Save config')")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"--config: {path}: not UTF-8 text (byte {e.start}); give a RunConfig JSON file") from None
    except OSError as e:
        raise UsageError(f"--config: {path}: cannot be read ({e.strerror or e}); check its permissions") from None
    try:
        return RunConfig.from_json(text, validate=False)
    except ConfigError as e:
        raise UsageError(f"--config: {path}: {e}") from None
    except TypeError as e:  # a setting of the wrong JSON type that a dataclass cannot take
        raise UsageError(f"--config: {path}: {short(str(e))}") from None


def _run_config(a: argparse.Namespace, data: Dataset, estimator: str | None) -> RunConfig:
    """The run's config: --config (or the defaults), the flags over it, then validated. The latent dimension:
    --m, else the config's, else the data's (`data_m`; a suggestion is said in `a.m_note`)."""
    cfg = _read_config(a.config) if a.config else RunConfig()
    a.m_note = None
    if a.m is not None or a.config:
        m = a.m if a.m is not None else cfg.decoder.m
    else:
        m, a.m_note = data_m(data, a.data)
    dec = {"m": m}
    if a.hidden is not None:
        dec["hidden"] = a.hidden
    if a.activation is not None:
        dec["activation"] = a.activation
    if a.sigma_min is not None:
        dec["sigma_min"] = a.sigma_min
    if a.preprocess is not None:
        dec["preprocess"] = a.preprocess
    if a.init is not None:
        dec["init"] = a.init
    est = {k: v for k, v in (("name", estimator), ("nodes", a.nodes), ("samples", a.samples)) if v is not None}
    tr = {k: v for k, v in (("steps", a.steps), ("batch_size", a.batch_size), ("lr", a.lr),
                            ("val_fraction", a.val_fraction), ("device", a.device), ("seed", a.seed),
                            ("time_limit", a.time_limit), ("threads", a.threads), ("schedule", a.schedule),
                            ("tol", a.tol), ("patience", a.patience))
          if v is not None}
    cfg = dataclasses.replace(cfg, decoder=dataclasses.replace(cfg.decoder, **dec),
                              estimator=dataclasses.replace(cfg.estimator, **est),
                              training=dataclasses.replace(cfg.training, **tr))
    cfg.validate()
    try:
        resolve_device(cfg.training.device)  # before any progress bar is drawn
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    return cfg


def data_m(data: Dataset, path: str) -> tuple[int, str | None]:
    """The latent dimension to fit when none is given: the true model's or the stored latents', else the PPCA
    suggestion (engine/selection.py) with the line that says so."""
    if data.truth is not None:
        return data.truth.m, None
    if data.z is not None:
        return int(data.z.shape[1]), None
    m = suggest_m(data.x).chosen
    return m, (f"m = {m}: {path} holds no true model, so m is PPCA's suggestion (the smallest m within one "
               "standard error of the best linear held-out log-likelihood); `select-m` checks it with the "
               "nonlinear model, --m sets it")


class _Progress:
    """A terminal progress bar (tqdm on stderr) fed by the run's progress records: in steps of an explicit step
    cap, in seconds of a time limit, else a step counter (a run until converged has no known end); then the
    scoring's share done. The postfix shows the held-out estimate, the learning rate's cuts and the last
    convergence window's gain."""

    def __init__(self, steps: int | None, time_limit: float | None, label: str, quiet: bool):
        from tqdm import tqdm

        self.total = time_limit if time_limit is not None else steps
        self.by_time = time_limit is not None
        self.bar = None if quiet else tqdm(total=self.total, desc=label, unit="s" if self.by_time else "step",
                                           file=sys.stderr, dynamic_ncols=True)

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            return
        if isinstance(p, ScoringProgress):
            self.bar.set_postfix_str(f"scoring held-out points {100 * p.fraction:.0f} %", refresh=True)
            return
        self.bar.n = p.step if self.total is None else round(p.fraction * self.total, 1)
        post = {"step": p.step, "obj": f"{p.objective:.4f}", "sigma": f"{float(np.mean(p.sigma)):.4g}"}
        if np.isfinite(p.heldout):
            post["heldout"] = f"{p.heldout:.4f}"
        if p.lr_cuts:
            post["lr"] = f"1/{2 ** len(p.lr_cuts)}"
        if np.isfinite(p.window_gain):
            post["gain"] = f"{p.window_gain:.4f}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class _CtrlC:
    """Ctrl-C stops the phase it arrives in: the training (the run is still scored and saved), or the scoring
    (the run is saved unscored, for `evaluate --run`); Ctrl-C again while a stop is pending aborts."""

    def __init__(self) -> None:
        self.pending = threading.Event()
        self.requested = False  # any stop so far (compare trains no further estimator)
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:  # Ctrl-C, kill PID, a closed terminal: stop the same way, keep the work
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.pending.is_set():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # aborting: more Ctrl-C must not cut the clean-up short
            raise KeyboardInterrupt
        self.pending.set()
        self.requested = True
        print("\nstopping (Ctrl-C again to abort)...", file=sys.stderr)

    def phase_ended(self) -> None:
        """A stop answered by the training is spent: the next Ctrl-C stops the scoring."""
        self.pending.clear()


def _fit_one(cfg: RunConfig, data: Dataset, test: Dataset | None, writer: UnitWriter, quiet: bool,
             stop: _CtrlC, note: str | None = None) -> RunResult:
    """Train and score one run; the run folder is written as soon as the training ends, then again with its
    metrics (so a scoring that fails or is stopped keeps the trained run). `note`: said before it starts."""
    preflight(cfg, data)  # its refusals before any progress is drawn
    if note and not quiet:
        print(note, file=sys.stderr)
    est, m = cfg.estimator, cfg.decoder.m
    if est.name in GRID_ESTIMATORS and est.nodes is None and not quiet:
        nodes = resolved_nodes(est, m)
        rule = ""
        if est.name == "mle-adaptive" and compact_rule(m, nodes) is not None:
            rule = f" (a rule of {rule_name(m, nodes, adaptive=True)})"
        print(f"{est.name}: {nodes} Gauss-Hermite nodes per dimension{rule}, the default for m = {m} "
              "(--nodes sets them)", file=sys.stderr)
    bar = _Progress(cfg.training.steps, cfg.training.time_limit, cfg.estimator.name, quiet)

    def progress(p: Progress) -> None:
        if isinstance(p, ScoringProgress) and p.fraction == 0.0 and p.stop_answered:
            stop.phase_ended()
        bar(p)

    try:
        result = fit(cfg, data, test, progress, stop.pending.is_set, stop.pending.is_set, snapshots=False,
                     on_trained=lambda r: writer.write(run_files(r)))
    finally:
        bar.close()
    writer.write(run_files(result))
    if not quiet and result.status in FINISHED:
        print(convergence_line(result), file=sys.stderr)
    return result


def convergence_line(result: RunResult) -> str:
    """The one line that says whether a run converged: where and how long, or (like scikit-learn's
    ConvergenceWarning) that it ended at a cap, and the flag that raises it."""
    name, tc = result.config.estimator.name, result.config.training
    if result.status == "converged":
        return f"{name}: converged at step {result.convergence.get('converged_at')} in {result.wall_time:.1f} s"
    if tc.schedule == "cosine":
        return f"{name}: ran to its cap ({result.steps_done} steps, {result.wall_time:.1f} s; the cosine schedule " \
               "is not tested for convergence)"
    by_time = result.convergence.get("cap") == "training.time_limit"
    flag = f"--time-limit (now {tc.time_limit:g} s)" if by_time else f"--steps (now {tc.max_steps})"
    gain = result.convergence.get("last_window_gain")
    still = "" if gain is None or not math.isfinite(gain) else f", still gaining {gain:.4f} nats/point a window"
    return f"{name}: warning: NOT converged: cap reached at step {result.steps_done} ({result.wall_time:.1f} s" \
           f"{still}); raise {flag}"


def _check_test(data: Dataset, test: Dataset | None, path: str | None) -> None:
    if test is not None and test.n != data.n:
        raise UsageError(f"--test: {path} has n = {test.n} columns, --data has n = {data.n}; they must match")
    if test is not None:
        check_range(test.x, "--test")


def cmd_fit(a: argparse.Namespace) -> int:
    data = load_dataset(a.data)
    test = load_dataset(a.test) if a.test else None
    _check_test(data, test, a.test)
    cfg = _run_config(a, data, a.estimator)
    stop = _CtrlC()
    with UnitWriter(a.out, overwrite=a.overwrite, kind="run") as writer:  # checked and locked before training
        result = _fit_one(cfg, data, test, writer, a.quiet, stop, a.m_note)
    print(dumps({"out": a.out, "status": result.status, "message": result.message, **result.metrics}))
    if stop.requested:
        print(f"nlica-lab fit: stopped by the user; the run is saved in {a.out}", file=sys.stderr)
        return 130
    if result.metrics.get("scoring_failed"):
        print(f"nlica-lab fit: the run is saved in {a.out} but its scoring failed: {result.metrics['scoring_failed']}",
              file=sys.stderr)
        return 1
    return 0 if result.status != "failed" else 1


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(repr(x) for x in v)  # a per-dimension sigma: one cell
    return str(v)


def compare_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COMPARE_COLUMNS)
    w.writerows([_cell(r.get(c)) for c in COMPARE_COLUMNS] for r in rows)
    return buf.getvalue()


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = COMPARE_COLUMNS[:-1]  # the messages are printed below the table

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        if isinstance(v, list):
            return ",".join(f"{x:.3g}" for x in v)
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines += [f"{r['estimator']}: {r['message']}" for r in rows if r.get("message")]
    return "\n".join(lines)


def cmd_compare(a: argparse.Namespace) -> int:
    names = [s.strip() for s in a.estimators.split(",") if s.strip()]
    bad = [s for s in names if s not in ESTIMATORS]
    if bad or not names:
        raise UsageError(f"--estimators: {short(bad[0]) if bad else 'empty'!r} is not an estimator; expected a "
                         "comma-separated list of " + ", ".join(ESTIMATORS))
    twice = sorted({s for s in names if names.count(s) > 1})
    if twice:
        raise UsageError(f"--estimators: {twice[0]} is named twice; name each estimator once (each is one run "
                         "folder)")
    data = load_dataset(a.data)
    test = load_dataset(a.test) if a.test else None
    _check_test(data, test, a.test)
    configs = [_run_config(a, data, name) for name in names]  # all validated before any training
    stop = _CtrlC()
    with UnitWriter(a.out, overwrite=a.overwrite, kind="compare") as out:  # built in a temporary sibling
        if a.m_note and not a.quiet:
            print(a.m_note, file=sys.stderr)
        series = _fit_many(list(zip(names, configs, strict=True)), data, test, out, a.quiet, stop)
        rows = series.rows
        truth = next((r.metrics["true_heldout_loglik"] for r in series.results.values()
                      if r.metrics.get("true_heldout_loglik") is not None), None)
        _write_compare(out, rows, truth)
    if series.aborted:
        raise KeyboardInterrupt
    print(format_table(rows))
    if truth is not None:
        print(f"true model: {truth:.4f} nats/point on the same held-out points")
    if stop.requested:
        return 130
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _fit_many(named: list[tuple[str, RunConfig]], data: Dataset, test: Dataset | None, out: UnitWriter,
              quiet: bool, stop: _CtrlC) -> Series:
    """`runs.fit_series` with each run saved into out's folder/<name> (each run its own unit); Ctrl-C twice
    aborts the series (what finished is kept)."""
    def fit_one(name: str, cfg: RunConfig) -> RunResult:
        with UnitWriter(out.staging() / name, overwrite=False, kind="run", lock=False) as run:
            return _fit_one(cfg, data, test, run, quiet, stop)

    def failed(name: str, message: str) -> None:
        print(f"nlica-lab: {name} failed: {message}", file=sys.stderr)

    return fit_series(named, fit_one, lambda: stop.requested, (KeyboardInterrupt,), failed)


def cmd_select_m(a: argparse.Namespace) -> int:
    data = load_dataset(a.data)
    test = load_dataset(a.test) if a.test else None
    _check_test(data, test, a.test)
    top = a.max_m if a.max_m is not None else min(max(data.n - 1, 1), 6)
    if not 1 <= top <= data.n:
        raise UsageError(f"--max-m: got {short(str(top))}; expected an integer from 1 to n = {data.n} (the data's "
                         "columns)")
    named = []
    for m in range(1, top + 1):
        a.m = m
        named.append((f"m{m}", _run_config(a, data, a.estimator or SELECT_M_ESTIMATOR)))  # all validated first
    stop = _CtrlC()
    with UnitWriter(a.out, overwrite=a.overwrite, kind="select-m") as out:
        series = _fit_many(named, data, test, out, a.quiet, stop)
        rows, choice = series.rows, choose_m(series.results)
        doc = select_m_record(named, rows, series.results, choice, data)
        files = {"select_m.json": dumps(doc).encode(), "compare.csv": compare_csv(rows).encode()}
        if RENDER_PNG is not None and choice is not None:
            try:
                files["select_m.png"] = RENDER_PNG(select_m_chart(doc))
            except Exception as e:  # a figure that cannot be drawn must not lose the runs
                print(f"nlica-lab select-m: no select_m.png ({type(e).__name__}: {short(str(e))})", file=sys.stderr)
        out.write(files)
    if series.aborted:
        raise KeyboardInterrupt
    print(format_table(rows))
    if choice is None:
        print("no m was scored: nothing to choose from", file=sys.stderr)
        return 1
    print(f"chosen m = {doc['chosen_m']} (the smallest within one paired standard error of the best, m = "
          f"{doc['best_m']}); {a.out}/select_m.json")
    capped = [str(c["m"]) for c in doc["candidates"] if c["status"] == "cap_reached"]
    kept = [str(c["m"]) for c in doc["candidates"] if c.get("linear_kept")]
    if capped:
        print(f"warning: m = {', '.join(capped)} did not converge within the budget given; the choice compares "
              "unfinished fits there (raise --steps or --time-limit, or leave both out)", file=sys.stderr)
    if kept:
        print(f"m = {', '.join(kept)}: the fit ended below PPCA's held-out score, so PPCA's counts for that m",
              file=sys.stderr)
    return 130 if stop.requested else 0


RENDER_PNG: Callable[[dict[str, Any]], bytes] | None = None  # set by main.py (gui/figures.py); None: no PNG


def _write_compare(out: UnitWriter, rows: list[dict[str, Any]], truth: float | None) -> None:
    """compare.json and compare.csv beside the finished runs, then the folder into its place."""
    out.write({"compare.json": dumps({"rows": rows, "true_heldout_loglik": truth}).encode(),
               "compare.csv": compare_csv(rows).encode()})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    stops = [getattr(signal, s) for s in STOP_SIGNALS if hasattr(signal, s)]
    previous = {s: signal.getsignal(s) for s in stops} if in_main else {}
    try:
        return {"simulate": cmd_simulate, "evaluate": cmd_evaluate, "fit": cmd_fit, "compare": cmd_compare,
                "select-m": cmd_select_m}[a.command](a)
    except (*USAGE_ERRORS, UsageError) as e:
        print(f"nlica-lab {a.command}: error: {short(str(e), 600)}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: a name too long, a full disk, permissions
        where = f"{short(str(e.filename), 120)}: " if e.filename else ""
        print(f"nlica-lab {a.command}: error: {where}{e.strerror or e}; check the path, the free space and the "
              "permissions (nothing half written was left)", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"nlica-lab {a.command}: error: out of memory; lower the batch size, the samples or the data size",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nlica-lab {a.command}: aborted (Ctrl-C); what was being written was left out whole, "
              "nothing is half written", file=sys.stderr)
        return 130
    except RuntimeError as e:
        if "training.device" in str(e):
            print(f"nlica-lab {a.command}: error: {e}", file=sys.stderr)
            return 2
        raise
    finally:
        aborted = in_main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # more Ctrl-C changes nothing now
        for s, handler in previous.items():
            if not aborted:
                signal.signal(s, handler)  # the commands' Ctrl-C handler ends with them
