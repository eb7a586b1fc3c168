"""The headless command line: simulate / evaluate / fit end to end, one-line errors with exit code 2,
complete --help, and main.py without a display.

Most commands run in-process through `engine.cli.main(argv)` (fast); the entry point itself (`main.py`) is
exercised through subprocesses where it matters (routing, --help, no display).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.cli import build_parser
from engine.cli import main as cli_main
from engine.config import RunConfig, SimulationConfig
from engine.ppca import gaussian_loglik
from engine.presets import list_presets, load_preset
from engine.runs import fit_series
from engine.selection import choose_m
from engine.simulate import simulate
from engine.storage import load_dataset
from engine.trainer import FINISHED, split_indices

REPO = Path(__file__).resolve().parent.parent
MAIN = str(REPO / "main.py")
SIM_ARGS = ["--mixing", "linear", "--n", "3", "--m", "1", "--sigma", "0.2", "--samples", "500", "--seed", "1"]
SIM_CFG = SimulationConfig(mixing="linear", n=3, m=1, sigma=0.2, samples=500, seed=1)


def _run(argv: list[str]) -> int:
    """engine.cli.main, with argparse's SystemExit turned into its exit code."""
    try:
        return cli_main(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1


def _exact_loglik(path: Path | str, rows: np.ndarray | None = None) -> float:
    """Closed-form mean log N(x; b, A A^T + sigma^2 I) from the true model stored in an .npz file."""
    with np.load(path, allow_pickle=False) as f:
        x, A, b = f["x"], f["truth/A"], f["truth/b"]
        sigma = json.loads(str(f["truth_json"][()]))["sigma"]
    if rows is not None:
        x = x[rows]
    return float(gaussian_loglik(x, b, A @ A.T + sigma**2 * np.eye(A.shape[0])).mean())


def _sub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """python main.py ARGS from the repository root (one torch thread: the cores are shared)."""
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, MAIN, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=env, check=False)




@pytest.fixture(autouse=True)
def _restore_sigint():
    """`fit` installs a Ctrl-C handler in the main thread; put pytest's back afterwards."""
    old = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    assert cli_main(["simulate", *SIM_ARGS, "--out", str(d / "F.npz")]) == 0
    return d


# ------------------------------------------------------------------------------------ simulate / evaluate


def test_simulate_and_evaluate_truth_through_main_py(tmp_path: Path) -> None:
    # main.py is run from the repository root (as documented); the output path is absolute
    f = tmp_path / "F.npz"
    out = _sub("simulate", *SIM_ARGS, "--out", str(f))
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["n_points"] == 500 and info["n"] == 3 and info["m"] == 1 and info["mixing"] == "linear"
    # the file holds exactly what the engine draws for the same settings
    data = load_dataset(f)
    ref = simulate(SIM_CFG)
    assert np.array_equal(data.x, ref.x) and np.array_equal(data.z, ref.z)
    assert data.truth is not None and data.truth.noise_sigma == 0.2

    out = _sub("evaluate", "--data", str(f), "--truth")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert {"loglik", "se", "n_points"} <= set(res)
    assert res["n_points"] == 500
    assert res["method"] == "quadrature"
    assert abs(res["loglik"] - _exact_loglik(f)) < 1e-4
    assert 0 < res["se"] < 0.2
    assert res["sigma"] == 0.2 and res["sigma_identified"] is True
    assert res["warnings"] == []


def test_evaluate_truth_in_process(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli_main(["evaluate", "--data", str(data_dir / "F.npz"), "--truth"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert abs(res["loglik"] - _exact_loglik(data_dir / "F.npz")) < 1e-4
    assert res["n_points"] == 500


def test_evaluate_truth_m3_uses_importance_sampling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "m3.npz"
    assert cli_main(["simulate", "--mixing", "linear", "--n", "4", "--m", "3", "--sigma", "0.3", "--samples",
                     "60", "--seed", "2", "--out", str(f)]) == 0
    capsys.readouterr()
    assert cli_main(["evaluate", "--data", str(f), "--truth", "--samples", "1000"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == "importance" and res["samples"] == 1000
    assert abs(res["loglik"] - _exact_loglik(f)) < 3 * res["se"]
    assert abs(res["loglik"] - _exact_loglik(f)) < 0.01
    assert res["khat_max"] < 0.7


def test_simulate_csv_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "F.csv"
    assert cli_main(["simulate", *SIM_ARGS, "--out", str(f)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["out"] == str(f) and info["n_points"] == 500
    with open(f, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["x1", "x2", "x3", "z1"]
    assert len(rows) == 501
    table = np.array(rows[1:], dtype=np.float64)
    ref = simulate(SIM_CFG)
    assert np.array_equal(table[:, :3], ref.x) and np.array_equal(table[:, 3:], ref.z)  # exact round trip
    data = load_dataset(f)
    assert data.truth is None and np.array_equal(data.x, ref.x)


@pytest.mark.parametrize("mixing", ["polynomial", "sigmoid", "mlp"])
def test_simulate_other_families(tmp_path: Path, mixing: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / f"{mixing}.npz"
    extra = {"polynomial": ["--degree", "2"], "sigmoid": ["--sigmoid-kind", "tanh"],
             "mlp": ["--mlp-depth", "1", "--mlp-width", "5", "--mlp-activation", "elu"]}[mixing]
    assert cli_main(["simulate", "--mixing", mixing, "--n", "2", "--m", "2", "--samples", "30", "--seed", "4",
                     "--scale", "0.5", *extra, "--out", str(f)]) == 0
    data = load_dataset(f)
    cfg = SimulationConfig(mixing=mixing, n=2, m=2, samples=30, seed=4, scale=0.5, degree=2, sigmoid_kind="tanh",
                           mlp_depth=1, mlp_width=5, mlp_activation="elu")
    if mixing != "polynomial":
        cfg = dataclasses.replace(cfg, degree=SimulationConfig.degree)
    assert np.array_equal(data.x, simulate(cfg).x)
    assert data.truth is not None and data.truth.mixing.family == mixing


PRESETS = list_presets()


@pytest.mark.skipif(not PRESETS, reason="no presets in resources/presets yet")
@pytest.mark.parametrize("name", PRESETS or ["none"])
def test_simulate_every_preset(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.npz"
    assert cli_main(["simulate", "--preset", name, "--samples", "40", "--out", str(f)]) == 0
    cfg = dataclasses.replace(load_preset(name).simulation, samples=40)
    data = load_dataset(f)
    assert data.x.shape == (40, cfg.n) and np.isfinite(data.x).all()
    assert data.truth is not None and data.truth.m == cfg.m and data.truth.mixing.family == cfg.mixing
    assert np.array_equal(data.x, simulate(cfg).x)
    load_preset(name).validate()


# ---------------------------------------------------------------------------------------- bad input


def _bad_csv(d: Path) -> str:
    p = d / "bad.csv"
    p.write_text("x1,x2\n1,2\n3,abc\n", encoding="utf-8")
    return str(p)


def _bad_json(d: Path) -> str:
    p = d / "bad.json"
    p.write_text("{not json", encoding="utf-8")
    return str(p)


def _pickle_pt(d: Path) -> str:
    """A .pt file that, if unpickled, would create `opened.marker` beside it."""
    class Trap:
        def __reduce__(self):
            return (open, (str(d / "opened.marker"), "w"))

    p = d / "some.pt"
    p.write_bytes(pickle.dumps(Trap()))
    return str(p)


# (argv with {F} = the simulated .npz, {D} = a scratch dir; words the single stderr line must contain)
BAD: list[tuple[str, list[str], list[str]]] = [
    ("n0", ["simulate", "--n", "0", "--out", "{D}/o.npz"], ["simulation.n", "1 to 1000"]),
    ("sigma-neg", ["simulate", "--sigma", "-1", "--out", "{D}/o.npz"], ["simulation.sigma", "(0, 1000]"]),
    ("samples1", ["simulate", "--samples", "1", "--out", "{D}/o.npz"], ["simulation.samples"]),
    ("degree", ["simulate", "--mixing", "polynomial", "--degree", "12", "--out", "{D}/o.npz"], ["simulation.degree"]),
    ("mixing-foo", ["simulate", "--mixing", "foo", "--out", "{D}/o.npz"], ["--mixing", "foo"]),
    ("n-not-int", ["simulate", "--n", "two", "--out", "{D}/o.npz"], ["--n", "two"]),
    ("no-out", ["simulate", "--n", "2"], ["--out"]),
    ("out-suffix", ["simulate", "--n", "2", "--samples", "5", "--out", "{D}/o.txt"], ["o.txt", ".npz"]),
    ("missing-file", ["evaluate", "--data", "{D}/missing.npz", "--truth"], ["missing.npz", "not found"]),
    ("csv-cell", ["evaluate", "--data", "{BADCSV}", "--truth"], ["bad.csv", "row 3", "column 2", "abc"]),
    ("truth-on-csv", ["evaluate", "--data", "{CSV}", "--truth"], ["F.csv", "--truth"]),
    ("pickle", ["evaluate", "--run", "{PT}", "--data", "{F}"], ["some.pt", "pickle"]),
    ("eval-seed-huge", ["evaluate", "--data", "{M3}", "--truth", "--seed", str(2**70)], ["--seed"]),
    ("run-missing", ["evaluate", "--run", "{D}/norun", "--data", "{F}"], ["norun", "no such run folder"]),
    ("quadrature-m4", ["fit", "--data", "{F}", "--estimator", "mle-quadrature", "--m", "4", "--out", "{D}/r"],
     ["estimator.name", "m <= 3"]),
    ("steps0", ["fit", "--data", "{F}", "--steps", "0", "--out", "{D}/r"], ["training.steps"]),
    ("lr-nan", ["fit", "--data", "{F}", "--lr", "nan", "--out", "{D}/r"], ["training.lr"]),
    ("hidden-bad", ["fit", "--data", "{F}", "--hidden", "8,x", "--out", "{D}/r"], ["--hidden"]),
    ("config-json", ["fit", "--data", "{F}", "--config", "{BADJSON}", "--out", "{D}/r"], ["config", "JSON"]),
    ("test-dim", ["fit", "--data", "{F}", "--test", "{F2}", "--out", "{D}/r"], ["--test", "n = 2", "n = 3"]),
    ("compare-bad", ["compare", "--data", "{F}", "--estimators", "vae,foo", "--out", "{D}/c"],
     ["--estimators", "foo"]),
]
if not torch.cuda.is_available():
    BAD.append(("no-cuda", ["fit", "--data", "{F}", "--device", "cuda", "--steps", "1", "--out", "{D}/r"],
                ["training.device", "cuda"]))


@pytest.fixture(scope="module")
def bad_files(data_dir: Path) -> dict[str, str]:
    f2 = data_dir / "F2.npz"
    cli_main(["simulate", "--mixing", "linear", "--n", "2", "--samples", "20", "--out", str(f2)])
    csvf = data_dir / "F.csv"
    cli_main(["simulate", *SIM_ARGS, "--out", str(csvf)])
    m3 = data_dir / "M3.npz"  # m = 3: the importance sampler (which takes the seed) is used
    cli_main(["simulate", "--mixing", "linear", "--n", "4", "--m", "3", "--samples", "5", "--out", str(m3)])
    return {"F": str(data_dir / "F.npz"), "F2": str(f2), "CSV": str(csvf), "BADCSV": _bad_csv(data_dir),
            "BADJSON": _bad_json(data_dir), "PT": _pickle_pt(data_dir), "M3": str(m3)}


@pytest.mark.parametrize(("argv", "words"), [(a, w) for _, a, w in BAD], ids=[i for i, _, _ in BAD])
def test_bad_input_one_line_exit_2(argv: list[str], words: list[str], bad_files: dict[str, str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    subs = {**bad_files, "D": str(tmp_path)}
    argv = [a.format(**subs) for a in argv]
    capsys.readouterr()
    rc = _run(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{err}"
    assert "error" in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert out == ""
    assert "Traceback" not in err
    assert not (Path(bad_files["PT"]).parent / "opened.marker").exists()  # the pickle was never opened
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.txt").exists()


def test_bad_input_through_main_py(tmp_path: Path) -> None:
    out = _sub("simulate", "--n", "0", "--out", str(tmp_path / "o.npz"))
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "simulation.n" in lines[0], out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------------------------------- fit


def test_fit_writes_run_folder_and_evaluate_scores_it(data_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    f = data_dir / "F.npz"
    run = tmp_path / "RUN"
    capsys.readouterr()
    rc = cli_main(["fit", "--data", str(f), "--estimator", "mle-adaptive", "--steps", "30", "--hidden", "8",
                   "--quiet", "--out", str(run)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == ""  # --quiet: no progress bar
    summary = json.loads(out)
    assert summary["status"] in FINISHED and summary["out"] == str(run)
    for name in ("run.json", "decoder.safetensors", "decoder.json", "metrics.json", "history.csv"):
        assert (run / name).is_file(), name
    assert not (run / "encoder.json").exists()

    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    cfg = RunConfig.from_dict(info["config"])
    assert cfg.estimator.name == "mle-adaptive" and cfg.training.steps == 30 and cfg.decoder.hidden == (8,)
    assert cfg.decoder.m == 1  # the data's latent dimension by default
    assert info["steps_done"] == 30 and info["n_train"] + info["n_validation"] == 500

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    for key in ("heldout_loglik", "heldout_loglik_se", "sigma", "true_heldout_loglik", "gap_to_truth"):
        assert key in metrics and isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["gap_to_truth"] == pytest.approx(metrics["true_heldout_loglik"] - metrics["heldout_loglik"],
                                                    abs=1e-12)
    # the truth is scored on the validation split of the documented seeded split
    _, val = split_indices(500, cfg.training.val_fraction, cfg.training.seed)
    assert metrics["n_heldout"] == len(val) == info["n_validation"]
    assert abs(metrics["true_heldout_loglik"] - _exact_loglik(f, val)) < 1e-4
    assert metrics["sigma"] > 0
    for k, v in summary.items():
        if k in metrics and isinstance(v, float):
            assert v == metrics[k]

    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        hist = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in hist] == list(range(1, 31))
    assert all(math.isfinite(float(r["objective"])) for r in hist)

    # the saved decoder is plain tensors, readable without pickle
    from safetensors.numpy import load_file

    tensors = load_file(str(run / "decoder.safetensors"))
    assert tensors and all(np.isfinite(t).all() for t in tensors.values())

    # evaluate --run on all of F.npz
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(f)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_points"] == 500 and math.isfinite(res["loglik"]) and res["method"] == "quadrature"
    assert res["sigma"] == pytest.approx(metrics["sigma"], rel=1e-6)

    # ... and on exactly the held-out points: the saved run reproduces the recorded score
    held = tmp_path / "held.csv"
    x = load_dataset(f).x[val]
    held.write_text("x1,x2,x3\n" + "\n".join(",".join(f"{v:.17g}" for v in row) for row in x) + "\n",
                    encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(run), "--data", str(held)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["loglik"] == pytest.approx(metrics["heldout_loglik"], abs=1e-6)

    # a run scored on data of another dimension is refused in one line
    f2 = tmp_path / "two.npz"
    cli_main(["simulate", "--n", "2", "--samples", "10", "--out", str(f2)])
    capsys.readouterr()
    assert _run(["evaluate", "--run", str(run), "--data", str(f2)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--data" in err


# --------------------------------------------------------------------------------------------------- help


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def test_main_help_lists_every_subcommand() -> None:
    out = _sub("--help")
    assert out.returncode == 0, out.stderr
    for name in ("simulate", "evaluate", "fit", "compare", "select-m"):
        assert name in out.stdout
    assert set(_subparsers()) == {"simulate", "evaluate", "fit", "compare", "select-m"}


@pytest.mark.parametrize("command", ["simulate", "evaluate", "fit", "compare", "select-m"])
def test_subcommand_help_documents_every_flag(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        cli_main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    sub = _subparsers()[command]
    flags = [a for a in sub._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert flags
    for a in flags:
        assert a.help and a.help != argparse.SUPPRESS, a.option_strings
        for opt in a.option_strings:
            assert opt in text, (command, opt)


# ------------------------------------------------------------------------------------------ no display


def _no_display_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux-only")
def test_main_without_display_says_so_and_exits_2() -> None:
    out = _sub(env=_no_display_env())
    assert out.returncode == 2, (out.returncode, out.stderr)  # not 134 (a Qt abort)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert "no display" in lines[0]
    assert out.stdout == ""


def test_fit_series_keeps_going_past_a_failure_and_keeps_what_finished_on_abort():
    named = [(f"m{m}", RunConfig()) for m in range(1, 5)]
    finished = SimpleNamespace(metrics={"heldout_loglik": -1.0, "warnings": ["w"]}, status="done")

    def fit_one(name, cfg):
        if name == "m2":
            raise ValueError("nan in the decoder")
        if name == "m4":
            raise KeyboardInterrupt
        return finished

    failed: list[tuple[str, str]] = []
    s = fit_series(named, fit_one, lambda: False, (KeyboardInterrupt,), lambda *a: failed.append(a))
    assert [r["status"] for r in s.rows] == ["done", "failed", "done", "aborted"] and s.aborted
    assert set(s.results) == {"m1", "m3"} and failed == [("m2", "nan in the decoder")]
    assert "nan in the decoder" in s.rows[1]["message"] and s.rows[0]["message"] == "w"
    calls: list[str] = []
    s = fit_series(named, lambda name, cfg: calls.append(name) or finished, lambda: len(calls) >= 2)
    assert calls == ["m1", "m2"] and [r["status"] for r in s.rows] == ["done", "done", "not run", "not run"]
    with pytest.raises(KeyboardInterrupt):  # not one of `aborts`: not caught
        fit_series(named, fit_one, lambda: False)



def test_choose_m_applies_the_one_se_rule_to_the_scored_runs_only():
    base = np.random.default_rng(0).normal(-2.0, 1.0, 400)
    wiggle = 0.5 * (-1.0) ** np.arange(400)  # mean 0, sd 0.5: paired differences with a standard error 0.025

    def run(values: np.ndarray | None, status: str = "converged") -> SimpleNamespace:
        return SimpleNamespace(heldout_per_point=values, ppca_per_point=None, status=status)

    results = {"m1": run(base), "m2": run(base + 0.30), "m3": run(base + 0.32 + wiggle),
               "m4": run(base + 5.0, "failed"), "m5": run(None)}
    choice = choose_m(results)  # m4 failed, m5 unscored: neither counts
    assert choice is not None and choice.best == 3 and choice.chosen == 2  # 0.02 short of m3, SE 0.025
    assert choose_m({"m1": run(None)}) is None and choose_m({}) is None
