"""A default run is a finished run: the linear start (PPCA's closed form), the convergence test with the
plateau schedule, the caps, and select-m's candidates (issue 23)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import DEFAULT_MAX_STEPS, ConfigError, DecoderConfig, EstimatorConfig, RunConfig, TrainingConfig
from engine.estimators import build_estimator
from engine.estimators.vae import elbo
from engine.evaluate import heldout_loglik, quick_loglik
from engine.networks import build_decoder, start_linear
from engine.ppca import gaussian_loglik, linear_mle, linear_start, ppca_mle
from engine.selection import candidate_scores, choose_m
from engine.simulate import Dataset, simulate
from engine.trainer import MIN_LR_FACTOR, Convergence, RunResult, monitor_points, train


def linear_data(n: int = 5, m: int = 2, N: int = 3000, sigma: float = 0.3, seed: int = 0) -> np.ndarray:
    from engine.config import SimulationConfig

    return simulate(SimulationConfig(mixing="linear", n=n, m=m, sigma=sigma, samples=N, seed=seed)).x


# --- the convergence test -------------------------------------------------------------------------------------


def test_a_plateau_cuts_the_learning_rate_and_at_the_smallest_rate_is_convergence() -> None:
    """Gains of 0.1 an evaluation: no plateau; then 1e-4 an evaluation (3e-4 between windows of 3, below tol):
    a cut every patience + 1 evaluations until the smallest factor, then convergence."""
    conv = Convergence("plateau", tol=1e-3, patience=3)
    for step in range(10):
        conv.update(step, -2.0 + 0.1 * step)
    assert conv.cuts == [] and conv.converged_at is None and conv.gain() == pytest.approx(0.3)
    step, cuts_needed = 9, round(math.log(MIN_LR_FACTOR, 0.5))
    while conv.converged_at is None and step < 200:
        step += 1
        conv.update(step, -1.1 + 1e-4 * step)
    assert len(conv.cuts) == cuts_needed and conv.factor == pytest.approx(MIN_LR_FACTOR)
    assert np.diff([*conv.cuts, conv.converged_at]).tolist() == [4] * cuts_needed  # patience + 1 apart
    assert conv.cuts[0] == 14  # evaluations 12-14 against 9-11 (the last rising one): a gain of 6e-4
    assert conv.best == pytest.approx(-1.1 + 1e-4 * step)


def test_a_gain_after_a_cut_holds_the_next_cut_off() -> None:
    conv = Convergence("plateau", tol=1e-3, patience=2)
    for step in range(4):
        conv.update(step, 0.0)
    assert conv.cuts == [3]  # the first two full windows: no gain
    for step, h in zip(range(4, 12), [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4], strict=True):
        conv.update(step, h)
    assert conv.cuts == [3, 10]  # the gains held the next cut off until the windows were flat again


def test_a_single_lucky_estimate_neither_hides_progress_nor_fakes_it() -> None:
    """Steady progress of 0.004 an evaluation under noise of sd 0.02 (a lucky spike early on): the window means
    still see it, where the best-so-far would stall behind the spike."""
    rng = np.random.default_rng(0)
    conv = Convergence("plateau", tol=1e-3, patience=10)
    conv.update(0, 0.1)  # the spike
    for step in range(1, 120):
        conv.update(step, 0.004 * step + 0.02 * rng.standard_normal())
    assert conv.cuts == []


def test_the_constant_schedule_converges_at_its_first_plateau_and_cosine_never() -> None:
    const, cosine, never = (Convergence("constant", 1e-3, 2), Convergence("cosine", 1e-3, 2),
                            Convergence("plateau", 1e-3, 0))
    for step in range(10):
        for c in (const, cosine, never):
            if c.converged_at is None:
                c.update(step, 1.0)
    assert const.converged_at == 3 and const.cuts == []
    assert cosine.converged_at is None and cosine.cuts == [] and cosine.gain() == 0.0
    assert never.converged_at is None and never.cuts == [] and math.isnan(never.gain())


def test_a_non_finite_estimate_is_left_out_and_tol_zero_still_converges_when_flat() -> None:
    conv = Convergence("constant", tol=0.0, patience=2)
    assert conv.update(0, math.nan) is False and conv.values == [] and conv.best == -math.inf
    for step in range(1, 5):
        conv.update(step, 1.0)
    assert conv.converged_at == 4  # a gain of exactly 0 is no gain


def test_the_caps_in_force() -> None:
    assert TrainingConfig().max_steps == DEFAULT_MAX_STEPS
    assert TrainingConfig(time_limit=5.0).max_steps is None  # a time limit alone is the only cap
    assert TrainingConfig(steps=7, time_limit=5.0).max_steps == 7
    with pytest.raises(ConfigError, match=r"training\.schedule"):
        TrainingConfig(schedule="cosine").validate()  # the cosine schedule needs a budget
    TrainingConfig(schedule="cosine", time_limit=1.0).validate()


# --- the linear start -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(5, 2), (4, 3), (1, 1), (2, 3)])
def test_the_decoder_starts_at_the_linear_mle_whose_score_it_has(n: int, m: int) -> None:
    """At the start, the evaluator's held-out log-likelihood of the decoder (64-64 tanh with its linear path)
    equals the closed-form linear MLE's: PPCA for m < n, the sample Gaussian for m >= n."""
    x = linear_data(n=n, m=min(m, n), N=2000, sigma=0.4)
    train_x, held = x[:1600], x[1600:]
    dec = build_decoder(n, DecoderConfig(m=m), torch.as_tensor(train_x, dtype=torch.float32))
    start, _ = start_linear(dec, torch.as_tensor(train_x, dtype=torch.float32))
    mean, cov = linear_mle(train_x, m)
    exact = gaussian_loglik(held, mean, cov)
    got = heldout_loglik(dec, held, seed=0)  # quadrature for m <= 2, importance sampling (K = 2000) above
    assert got.mean == pytest.approx(exact.mean(), abs=2e-4 if m <= 2 else 1e-3)
    np.testing.assert_allclose(start.W @ start.W.T + start.sigma2 * np.eye(n), cov, rtol=1e-5, atol=1e-8)
    if m < n:
        assert start.sigma2 == pytest.approx(ppca_mle(train_x, m).sigma2, rel=1e-6)


def test_the_linear_start_of_a_standardising_decoder_is_in_its_units() -> None:
    x = linear_data(n=4, m=2, N=2000) * np.array([1.0, 10.0, 0.1, 3.0]) + 5.0
    dec = build_decoder(4, DecoderConfig(m=2, preprocess="standardize"), torch.as_tensor(x, dtype=torch.float32))
    start_linear(dec, torch.as_tensor(x, dtype=torch.float32))
    sd = x.std(0, ddof=1)
    pp = ppca_mle(x / sd, 2)
    exact = gaussian_loglik(x / sd, pp.mean, pp.covariance()) - np.log(sd).sum()  # the change of variables
    assert heldout_loglik(dec, x[:500], seed=0).mean == pytest.approx(exact[:500].mean(), abs=2e-4)


def test_the_encoder_starts_at_the_exact_posterior_so_the_elbo_is_log_p() -> None:
    """PPCA with R = I has a diagonal posterior; the encoder's start represents it exactly, so the ELBO of every
    point equals its log p(x) (the KL to the posterior is zero), up to the one draw's Monte Carlo noise, which
    vanishes for a linear decoder only on average: checked with many draws."""
    x = linear_data(n=5, m=2, N=1000)
    xt = torch.as_tensor(x)
    dec = build_decoder(5, DecoderConfig(m=2, hidden=(8,)), xt.float()).double()
    est = build_estimator(EstimatorConfig(name="vae"), dec, len(x), torch.Generator().manual_seed(0)).double()
    start, _ = start_linear(dec, xt)
    est.start_from(start, x)
    exact = gaussian_loglik(x[:50], *linear_mle(x, 2))
    bound = elbo(dec, est.encoder, xt[:50], torch.Generator().manual_seed(1), draws=20000)
    np.testing.assert_allclose(bound.detach().numpy(), exact, atol=0.02)
    sd = est.encoder(xt[:3])[1].exp().detach().numpy()
    np.testing.assert_allclose(sd, np.broadcast_to(start.posterior_sd(), sd.shape), rtol=1e-6)


def test_the_estimators_per_point_state_starts_at_the_exact_posterior() -> None:
    x = linear_data(n=5, m=2, N=800)
    xt = torch.as_tensor(x, dtype=torch.float32)
    dec = build_decoder(5, DecoderConfig(m=2), xt)
    start, _ = start_linear(dec, xt)
    means = start.posterior_mean(x)
    for name in ("mle-adaptive", "mle-importance", "mle-mcem"):
        est = build_estimator(EstimatorConfig(name=name), dec, len(x), torch.Generator().manual_seed(0))
        est.start_from(start, x)
        state = {"mle-adaptive": lambda e: e.grids.centres, "mle-importance": lambda e: e.laplace.modes,
                 "mle-mcem": lambda e: e.chains}[name](est).numpy()
        if name == "mle-mcem":  # chains at draws from the posterior: standardised residuals ~ N(0, 1)
            r = (state - means) / start.posterior_sd()
            assert abs(r.mean()) < 0.1 and r.std() == pytest.approx(1.0, abs=0.08)
        else:
            np.testing.assert_allclose(state, means, atol=1e-5)
    adaptive = build_estimator(EstimatorConfig(name="mle-adaptive"), dec, len(x), torch.Generator())
    adaptive.start_from(start, x)
    idx = torch.arange(64)
    value = adaptive.objective(xt[idx], idx, 1).value  # the rule on the exact posterior: exact for linear g
    assert value == pytest.approx(gaussian_loglik(x[:64], *linear_mle(x, 2)).mean(), abs=2e-4)


def test_random_init_keeps_the_random_start() -> None:
    x = linear_data(N=500)
    cfg = RunConfig(decoder=DecoderConfig(m=2, hidden=(8,), init="random"),
                    training=TrainingConfig(steps=1, eval_every=1, threads=1))
    r = train(cfg, Dataset(x, None, None))
    pp = ppca_mle(x, 2)
    assert r.history[0]["heldout"] < gaussian_loglik(x, pp.mean, pp.covariance()).mean() - 0.1


# --- whole runs ---------------------------------------------------------------------------------------------------


def test_a_default_run_on_linear_data_converges_at_the_linear_mle() -> None:
    """No steps, no time limit (the convergence test on a shorter clock than the default): it converges, and
    its held-out score is PPCA's within 0.01 nats a point (the decoder can only add overfitting to the linear
    truth)."""
    data = simulate_linear(n=6, m=2, N=2000)
    cfg = RunConfig(decoder=DecoderConfig(m=2, hidden=(16,)), training=TrainingConfig(eval_every=50, patience=5,
                                                                                      threads=1))
    r = train(cfg, data)
    assert r.status == "converged" and r.convergence["converged_at"] == r.steps_done < DEFAULT_MAX_STEPS
    assert len(r.convergence["lr_cuts"]) == round(math.log(MIN_LR_FACTOR, 0.5))
    check = r.convergence["start_check"]
    assert check is None or check["kept"] in ("start", "best")
    held = data.x[r.heldout_idx]
    mean, cov = linear_mle(data.x[r.train_idx], 2)
    fit = heldout_loglik(r.decoder, held, seed=0).mean
    assert fit == pytest.approx(gaussian_loglik(held, mean, cov).mean(), abs=0.01)


def simulate_linear(n: int, m: int, N: int, sigma: float = 0.3) -> Dataset:
    from engine.config import SimulationConfig

    return simulate(SimulationConfig(mixing="linear", n=n, m=m, sigma=sigma, samples=N, seed=3))


def test_a_step_cap_ends_the_run_unconverged_and_says_which_setting_raises_it() -> None:
    data = simulate_linear(n=3, m=1, N=500)
    r = train(RunConfig(decoder=DecoderConfig(m=1, hidden=(8,), init="random"),
                        training=TrainingConfig(steps=30, eval_every=10, threads=1)), data)
    assert r.status == "cap_reached" and r.steps_done == 30
    assert "cap of 30 steps before convergence" in r.message and "training.steps raises it" in r.message


def test_a_time_limit_alone_trains_for_the_time() -> None:
    """No step cap beside a time limit: a run that cannot converge (patience 0) trains for the whole time."""
    data = simulate_linear(n=3, m=1, N=500)
    cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(4,)),
                    training=TrainingConfig(time_limit=1.5, patience=0, batch_size=16, threads=1))
    r = train(cfg, data)
    assert r.status == "cap_reached" and "time limit of 1.5 s" in r.message
    assert r.wall_time >= 1.5 and r.history[-1]["time"] >= 1.5


def test_the_best_state_is_kept_and_is_never_below_the_start() -> None:
    """Whatever the steps did (a learning rate far too high here), the run ends at its best evaluated state,
    and the start (the linear fit, evaluated at step 0) is one of them."""
    data = simulate_linear(n=4, m=1, N=800)
    cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(8,)),
                    training=TrainingConfig(lr=0.3, steps=200, eval_every=20, threads=1))
    r = train(cfg, data)
    evaluated = [h["heldout"] for h in r.history if math.isfinite(h["heldout"])]
    assert r.convergence["best_heldout_estimate"] >= max(evaluated)
    assert r.convergence["best_heldout_estimate"] >= r.convergence["start_heldout_estimate"]
    monitor = monitor_points(data.x[r.heldout_idx], cfg.training.seed)
    check = r.convergence["start_check"]
    kept = r.convergence["start_heldout_estimate"] if check and check["kept"] == "start" else \
        r.convergence["best_heldout_estimate"]
    assert quick_loglik(r.decoder, monitor, seed=0) == pytest.approx(kept, abs=1e-9)
    if check:  # the kept state met the start once, on (here all) validation points: the higher one is kept
        assert check["points"] == len(r.heldout_idx) and check["kept"] == ("start" if check["start"] > check["best"]
                                                                           else "best")


# --- select-m's candidates --------------------------------------------------------------------------------------


def _scored(fit: np.ndarray | None, linear: np.ndarray | None, status: str = "converged") -> RunResult:
    r = RunResult.__new__(RunResult)
    r.heldout_per_point, r.ppca_per_point, r.status = fit, linear, status
    return r


def test_a_candidate_below_its_linear_mle_counts_as_the_linear_mle() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=400)
    linear3 = base - 12.534
    unfinished3 = linear3 - 0.031 + 0.01 * rng.normal(size=400)  # 0.031 below PPCA, as in the issue
    fit4 = linear3 - 0.022 + 0.05 * rng.normal(size=400)  # m = 4: -12.556, above its own PPCA
    per, kept = candidate_scores(_scored(unfinished3, linear3))
    assert kept and per is linear3
    per, kept = candidate_scores(_scored(fit4, linear3 - 0.03))
    assert not kept and per is fit4
    runs = {"m3": _scored(unfinished3, linear3), "m4": _scored(fit4, linear3 - 0.03)}
    assert choose_m(runs).chosen == 3  # without the floor the unfinished m = 3 trails m = 4 by 0.009: m = 4
    assert choose_m({"m3": _scored(unfinished3, None), "m4": _scored(fit4, None)}).chosen == 4


def test_linear_start_handles_degenerate_data_with_the_floor() -> None:
    x = np.zeros((50, 3))
    x[:, 0] = np.linspace(-1, 1, 50)
    start = linear_start(x, 1, default_sigma2=0.25, sigma2_min=1e-6)
    assert start.sigma2 == pytest.approx(1e-6) and np.isfinite(start.W).all()


# --- the CLI: select-m from converged fits, the convergence line ------------------------------------------------


def _select_m(tmp_path: Path, sim: list[str], max_m: int, hidden: str) -> dict:
    """select-m until converged, with no step cap: a small decoder, and the convergence test on a shorter
    clock than the default (evaluations every 50 steps, windows of 5) so that the test takes a minute."""
    from engine.cli import main as cli_main

    data = tmp_path / "d.npz"
    assert cli_main(["simulate", *sim, "--out", str(data)]) == 0
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"training": {"eval_every": 50, "patience": 5}}))
    out = tmp_path / "sel"
    assert cli_main(["select-m", "--data", str(data), "--config", str(config), "--max-m", str(max_m), "--hidden",
                     hidden, "--threads", "1", "--quiet", "--out", str(out)]) == 0
    return json.loads((out / "select_m.json").read_text())


@pytest.mark.slow
def test_select_m_chooses_the_true_m_of_linear_data(tmp_path: Path) -> None:
    """Linear data with m = 3 (the issue's failure: m = 4 chosen from an unfinished m = 3 fit): every candidate
    fitted by one estimator to convergence from its linear start, none below PPCA; the true m is chosen."""
    doc = _select_m(tmp_path, ["--mixing", "linear", "--n", "8", "--m", "3", "--sigma", "0.5", "--samples", "1500",
                               "--seed", "4"], 4, "8")
    assert doc["chosen_m"] == 3 == doc["true_m"]
    for c in doc["candidates"]:
        assert c["estimator"] == "mle-importance" and c["status"] == "converged"
        assert c["heldout_loglik"] >= c["ppca_heldout_loglik"] - 1e-12  # the floor


@pytest.mark.slow
def test_select_m_chooses_the_true_m_of_mlp_data(tmp_path: Path) -> None:
    doc = _select_m(tmp_path, ["--mixing", "mlp", "--n", "5", "--m", "2", "--sigma", "0.1", "--samples", "1500",
                               "--seed", "2"], 3, "16")
    assert doc["chosen_m"] == 2 == doc["true_m"]
    assert all(c["status"] == "converged" for c in doc["candidates"])


def test_fit_says_in_one_line_whether_it_converged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main as cli_main

    data = tmp_path / "d.npz"
    assert cli_main(["simulate", "--mixing", "linear", "--n", "3", "--m", "1", "--samples", "600", "--out",
                     str(data)]) == 0
    capsys.readouterr()
    assert cli_main(["fit", "--data", str(data), "--hidden", "8", "--threads", "1", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "mle-adaptive: converged at step" in err
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["status"] == "converged" and run["convergence"]["converged_at"] == run["steps_done"]
    assert cli_main(["fit", "--data", str(data), "--hidden", "8", "--threads", "1", "--steps", "20", "--out",
                     str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "warning: NOT converged: cap reached at step 20" in err and "raise --steps (now 20)" in err
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["status"] == "cap_reached" and metrics["convergence"]["converged_at"] is None


def test_a_run_folder_from_before_the_linear_path_loads_with_it_at_zero(tmp_path: Path) -> None:
    """decoder.safetensors and encoder.safetensors written before net.skip existed: the same function."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from engine.outputs import UnitWriter
    from engine.runs import load_run, run_files

    data = simulate_linear(n=3, m=1, N=300)
    r = train(RunConfig(decoder=DecoderConfig(m=1, hidden=(4,)), estimator=EstimatorConfig(name="vae"),
                        training=TrainingConfig(steps=5, threads=1)), data)
    with torch.no_grad():
        r.decoder.net.skip.zero_()
        r.encoder.net.skip.zero_()
    files = run_files(r)
    for stem in ("decoder", "encoder"):
        tensors = st_load(files[f"{stem}.safetensors"])
        del tensors["net.skip"]
        files[f"{stem}.safetensors"] = st_save(tensors, metadata={"format": "nlica-lab"})
    with UnitWriter(tmp_path / "old", overwrite=False, kind="run") as w:
        w.write(files)
    saved = load_run(tmp_path / "old")
    z = torch.linspace(-3, 3, 50).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(saved.decoder.mean(z), r.decoder.mean(z))
        x = torch.as_tensor(data.x[:20], dtype=torch.float32)
        assert torch.equal(saved.encoder(x)[0], r.encoder(x)[0])
