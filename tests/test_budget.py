"""Time budgets, the thread policy, the periodic estimate's subsample, default nodes by m, the Jacobian pass,
and scoring in chunks that can be stopped. Exact checks: the schedule is recomputed from the recorded
history, Jacobians against autograd, chunked scores against the closed form."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import evaluate, threads, trainer
from engine.config import (
    ACTIVATIONS,
    ConfigError,
    DecoderConfig,
    EstimatorConfig,
    RunConfig,
    SimulationConfig,
    TrainingConfig,
    default_nodes,
)
from engine.estimators import build_estimator
from engine.likelihood.laplace import gauss_newton_step, jacobian, mean_and_jacobian
from engine.networks import Decoder
from engine.ppca import gaussian_loglik
from engine.progress import Progress, ScoringProgress
from engine.runs import fit
from engine.simulate import simulate
from engine.trainer import FINISHED

ROOT = Path(__file__).resolve().parents[1]


def _cfg(sim: SimulationConfig, **training) -> RunConfig:
    return RunConfig(simulation=sim, decoder=DecoderConfig(m=sim.m, hidden=(8,)),
                     estimator=EstimatorConfig(name="mle-quadrature", nodes=8),
                     training=TrainingConfig(device="cpu", **training))


# ------------------------------------------------------------------------------------------ time limit


def test_time_limit_ends_the_run_and_lays_the_cosine_over_the_time():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=400, seed=1)
    cfg = _cfg(sim, steps=10_000_000, time_limit=0.6, batch_size=32, lr=0.01, eval_every=10_000_000,
               schedule="cosine")
    result = trainer.train(cfg, simulate(sim))
    assert result.status == "cap_reached" and "time limit" in result.message
    assert 0 < result.steps_done < 10_000_000 and len(result.history) == result.steps_done
    rows = result.history
    assert rows[-1]["time"] >= 0.6 > rows[-2]["time"]  # the first step past the limit is the last
    # the rate of step s is the cosine at the fraction done before it: max(steps, seconds) of the budget
    for prev, row in zip([None, *rows[:-1]], rows, strict=True):
        f = 0.0 if prev is None else max(prev["step"] / cfg.training.steps, prev["time"] / 0.6)
        assert row["lr"] == pytest.approx(0.01 * trainer.cosine_factor(f), rel=1e-12)
    assert rows[-1]["lr"] < 0.01 * 0.1  # the schedule has (almost) ended with the time
    assert not math.isnan(rows[-1]["heldout"])  # the last step is evaluated


def test_steps_end_a_run_whose_time_limit_is_far():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=200, seed=1)
    result = trainer.train(_cfg(sim, steps=30, time_limit=1000.0, batch_size=32), simulate(sim))
    assert result.steps_done == 30 and "time limit" not in result.message


def test_run_fraction_is_the_further_of_steps_and_seconds():
    assert trainer.run_fraction(10, 100, 5.0, None) == pytest.approx(0.1)
    assert trainer.run_fraction(10, 100, 5.0, 10.0) == pytest.approx(0.5)
    assert trainer.run_fraction(90, 100, 5.0, 10.0) == pytest.approx(0.9)
    assert trainer.cosine_factor(0.0) == pytest.approx(1.0) and trainer.cosine_factor(1.0) == pytest.approx(0.05)
    assert trainer.cosine_factor(2.0) == trainer.cosine_factor(1.0)


# ---------------------------------------------------------------------------------------- thread policy


def test_auto_takes_one_thread_for_a_small_step_and_the_idle_cores_for_a_large_one(monkeypatch):
    old = torch.get_num_threads()
    try:
        assert threads.apply_threads(0, threads.SMALL_STEP_FLOPS / 2) == 1 == torch.get_num_threads()
        monkeypatch.setattr(threads, "idle_cores", lambda: 2)
        assert threads.apply_threads(0, threads.SMALL_STEP_FLOPS * 2) == 2 == torch.get_num_threads()
        monkeypatch.setattr(threads, "idle_cores", lambda: 64)
        assert threads.auto_threads(threads.SMALL_STEP_FLOPS * 2) == threads.MAX_AUTO
        assert threads.apply_threads(3, 1.0) == 3 == torch.get_num_threads()  # a number is taken as it is
    finally:
        torch.set_num_threads(old)


def test_idle_cores_subtract_the_load(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert threads.idle_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert threads.idle_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert threads.idle_cores() == 4


def test_the_run_records_its_threads_and_the_estimate_of_its_step():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=200, seed=1)
    result = trainer.train(_cfg(sim, steps=3, batch_size=32, threads=1), simulate(sim))
    assert result.threads == 1
    dec = Decoder(2, DecoderConfig(m=1, hidden=(8,)), 0.5, 0.0)
    assert dec.macs_per_row() == 1 * 8 + 8 * 2 + 1 * 2  # the layers and the linear path


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", "import engine, os; print(os.environ['OMP_WAIT_POLICY'])"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_threads_and_time_limit_flags_reach_the_config(tmp_path):
    from engine.cli import build_parser

    a = build_parser().parse_args(["fit", "--data", "d.npz", "--out", "o", "--threads", "auto",
                                   "--time-limit", "2.5"])
    assert a.threads == 0 and a.time_limit == 2.5
    assert build_parser().parse_args(["fit", "--data", "d", "--out", "o", "--threads", "3"]).threads == 3
    out = subprocess.run([sys.executable, "main.py", "fit", "--data", "d", "--out", "o", "--threads", "many"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and "--threads" in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------- defaults by m


def test_default_nodes_for_every_m_fit_the_cap():
    assert [default_nodes("mle-adaptive", m) for m in (1, 2, 3, 4, 8)] == [16, 3, 3, 3, 3]  # degree 5 for m >= 2
    assert [default_nodes("mle-quadrature", m) for m in (1, 2, 3)] == [200, 16, 6]
    for m in range(1, 15):  # every m up to 14 is accepted with the default; its rule fits the cap
        RunConfig(decoder=DecoderConfig(m=m), estimator=EstimatorConfig(name="mle-adaptive")).validate()
    with pytest.raises(ConfigError, match="use mle-importance"):
        RunConfig(decoder=DecoderConfig(m=15), estimator=EstimatorConfig(name="mle-adaptive")).validate()


def test_mle_adaptive_fits_m4_with_its_defaults():
    sim = SimulationConfig(mixing="linear", n=6, m=4, sigma=0.3, samples=300, seed=2)
    cfg = RunConfig(simulation=sim, decoder=DecoderConfig(m=4, hidden=()),
                    estimator=EstimatorConfig(name="mle-adaptive"),
                    training=TrainingConfig(steps=20, batch_size=64, device="cpu", eval_every=10_000_000))
    result = trainer.train(cfg, simulate(sim))
    assert result.status in FINISHED and math.isfinite(result.history[-1]["objective"])
    est = build_estimator(cfg.estimator, result.decoder, 10, torch.Generator())
    assert est.u.shape == (25, 4)  # 3 nodes: the degree-5 rule of 1 + 2m + 2^m points a datum


SEARCH = 256 * (7**2 + 1) // 32  # the search among the 7^2 candidate starts every 32 steps, forward only


@pytest.mark.parametrize(("name", "rows"), [("vae", 256 * 2), ("iwae", 256 * 17), ("mle-importance", 256 * 20 + SEARCH),
                                            ("mle-adaptive", 256 * 7 + SEARCH), ("mle-quadrature", 16**2)])
def test_a_steps_cost_counts_its_decoder_rows(name, rows):  # mle-adaptive: the 7-point rule for m = 2
    dec = Decoder(5, DecoderConfig(m=2), 0.5, 0.0)
    est = build_estimator(EstimatorConfig(name=name), dec, 10, torch.Generator())
    assert est.decoder_rows(256) == rows
    assert est.step_flops(256) == 3.0 * rows * dec.macs_per_row()


# ------------------------------------------------------------------------------- the Jacobian pass


@pytest.mark.parametrize("hidden", [(7, 5), ()])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_decoders_one_pass_jacobian_is_autograds(activation, hidden):
    torch.manual_seed(0)
    dec = Decoder(3, DecoderConfig(m=2, hidden=hidden, activation=activation), 0.5, 0.0).double()
    z = torch.randn(11, 2, dtype=torch.float64)
    g, J = mean_and_jacobian(dec, z)
    ref = torch.stack([torch.autograd.functional.jacobian(dec.mean, zi) for zi in z])  # (B, n, m)
    torch.testing.assert_close(g, dec.mean(z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(J, ref, rtol=1e-10, atol=1e-10)


def test_any_model_gets_its_jacobian_without_forward_mode():
    sim = SimulationConfig(mixing="sigmoid", n=3, m=2, sigma=0.1, samples=10, seed=4)
    truth = simulate(sim).truth
    z = torch.randn(6, 2, dtype=torch.float64)
    ref = torch.stack([torch.autograd.functional.jacobian(truth.mean, zi) for zi in z])
    torch.testing.assert_close(jacobian(truth, z), ref, rtol=1e-10, atol=1e-12)


def test_one_gauss_newton_step_reaches_the_mode_of_a_linear_model():
    sim = SimulationConfig(mixing="linear", n=4, m=2, sigma=0.3, samples=50, seed=6)
    data = simulate(sim)
    A = data.truth.mixing.params["A"].double()
    b = data.truth.mixing.params["b"].double()
    x = torch.as_tensor(data.x)
    M = A.T @ A + 0.09 * torch.eye(2, dtype=torch.float64)
    exact = torch.linalg.solve(M, A.T @ (x - b).T).T  # the posterior mean M^-1 A^T (x - b)
    z, H = gauss_newton_step(data.truth, x, torch.zeros(50, 2, dtype=torch.float64))
    torch.testing.assert_close(z, exact, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(H, (M / 0.09).expand(50, 2, 2), rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------- the periodic estimate's points


def test_the_monitor_scores_a_fixed_seeded_subsample():
    x = np.arange(2000, dtype=float).reshape(-1, 1)
    a, b = trainer.monitor_points(x, 3), trainer.monitor_points(x, 3)
    assert len(a) == trainer.MONITOR_POINTS and np.array_equal(a, b) and len(np.unique(a)) == len(a)
    assert not np.array_equal(a, trainer.monitor_points(x, 4))
    assert np.array_equal(trainer.monitor_points(x[:100], 3), x[:100])


def test_with_patience_every_interval_is_evaluated():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=300, seed=1)
    result = trainer.train(_cfg(sim, steps=40, batch_size=32, eval_every=5, patience=1000), simulate(sim))
    assert [r["step"] for r in result.history if not math.isnan(r["heldout"])] == list(range(5, 41, 5))


# ---------------------------------------------------------------------------------------- scoring


def _linear(n: int, m: int, N: int):
    sim = SimulationConfig(mixing="linear", n=n, m=m, sigma=0.2, samples=N, seed=9)
    d = simulate(sim)
    A = d.truth.mixing.params["A"].numpy()
    return d, gaussian_loglik(d.x, d.truth.mixing.params["b"].numpy(), A @ A.T + 0.04 * np.eye(n))


def test_scoring_in_chunks_reports_progress_and_matches_the_closed_form():
    d, exact = _linear(3, 2, 700)
    fractions: list[float] = []
    est = evaluate.heldout_loglik(d.truth, d.x, on_progress=fractions.append)
    assert est.method == "quadrature" and np.abs(est.per_point - exact).max() < 1e-4
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])  # 700 points in chunks of 256


def test_a_large_held_out_set_is_scored_on_a_seeded_subsample(monkeypatch):
    monkeypatch.setattr(evaluate, "SCORE_POINTS", 300)
    d, exact = _linear(2, 1, 1000)
    est = evaluate.heldout_loglik(d.truth, d.x, seed=5)
    rows = evaluate.scored_rows(1000, 5)
    assert len(rows) == 300 and est.per_point.shape == (300,)
    assert np.abs(est.per_point - exact[rows]).max() < 1e-4
    assert est.se == pytest.approx(exact[rows].std(ddof=1) / math.sqrt(300), rel=1e-3)
    assert est.details["n_points_total"] == 1000 and est.details["subsampled"] is True
    assert any("subsample of 300 of the 1000" in w for w in est.warnings)


def test_stop_during_scoring_keeps_the_trained_run_unscored():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=3000, seed=1)
    calls: list[float] = []

    def report(p: Progress) -> None:
        if isinstance(p, ScoringProgress):
            calls.append(p.fraction)

    result = fit(_cfg(sim, steps=5, batch_size=32, val_fraction=0.5), simulate(sim), on_progress=report,
                 stop_scoring=lambda: len(calls) >= 2)
    met = result.metrics
    assert result.steps_done == 5 and met["scoring_stopped"] is True
    assert "heldout_loglik" not in met and met["steps"] == 5 and met["estimator"] == "mle-quadrature"
    assert calls[0] == 0.0 and len(calls) == 2  # stopped after the first chunk (of 256 of the 1500 points)
    assert any("scoring stopped" in w for w in met["warnings"])


def test_fit_m4_with_the_default_nodes_from_the_command_line(tmp_path):
    data, out = tmp_path / "d.npz", tmp_path / "run"
    subprocess.run([sys.executable, "main.py", "simulate", "--mixing", "linear", "--n", "6", "--m", "4",
                    "--samples", "200", "--out", str(data)], cwd=ROOT, check=True, capture_output=True)
    p = subprocess.run([sys.executable, "main.py", "fit", "--data", str(data), "--estimator", "mle-adaptive",
                        "--m", "4", "--hidden", "", "--steps", "3", "--time-limit", "60",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert ("mle-adaptive: 3 Gauss-Hermite nodes per dimension (a rule of 25 nodes of degree 5), the default "
            "for m = 4") in p.stderr
    assert (out / "run.json").exists()


def test_scoring_a_large_held_out_set_says_it_took_a_subsample(monkeypatch):
    monkeypatch.setattr(evaluate, "SCORE_POINTS", 300)
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=1400, seed=1)
    result = fit(_cfg(sim, steps=5, batch_size=32, val_fraction=0.5), simulate(sim))
    met = result.metrics
    assert met["n_heldout"] == 700 and met["n_scored"] == 300
    assert met["heldout_details"]["subsampled"] is True and met["heldout_details"]["n_points_total"] == 700
    assert any("subsample of 300 of the 700" in w for w in met["warnings"])
    held = simulate(sim).subset(result.heldout_idx).subset(evaluate.scored_rows(700, result.seed))
    truth = evaluate.heldout_loglik(held.truth, held.x, seed=result.seed)  # the same 300 points
    assert met["true_heldout_loglik"] == pytest.approx(truth.mean, abs=1e-12)


def test_time_spent_paused_does_not_count_against_the_time_limit():
    sim = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=200, seed=1)
    calls: list[int] = []

    def paused_at_step_3() -> bool:  # the GUI's should_stop blocks while the run is paused
        calls.append(1)
        if len(calls) == 3:
            import time

            time.sleep(1.0)
        return False

    cfg = _cfg(sim, steps=40, time_limit=0.9, batch_size=32, eval_every=10_000_000)
    result = trainer.train(cfg, simulate(sim), should_stop=paused_at_step_3)
    assert result.history[3]["time"] - result.history[1]["time"] < 0.5  # the pause is not in the clock
    assert result.steps_done == 40 or result.history[-1]["time"] >= 0.9
