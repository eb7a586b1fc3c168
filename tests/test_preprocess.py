"""Real-data tools: preprocessing as part of the model (log-likelihoods in the data's units, the change of
variables included), the PPCA suggestion of m, the one-standard-error rule, and `select-m` end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.evaluate import heldout_loglik
from engine.model import log_likelihood
from engine.networks import build_decoder
from engine.outputs import verify
from engine.ppca import gaussian_loglik, ppca_mle
from engine.runs import load_run, save_run
from engine.selection import one_se_rule, suggest_m
from engine.simulate import Dataset, simulate
from engine.storage import save_dataset
from engine.trainer import train

REPO = Path(__file__).resolve().parent.parent
SCALES = np.array([1.0, 100.0, 0.01])  # columns in very different units


def _scaled_linear(samples: int = 2000, seed: int = 3, scales: np.ndarray = SCALES) -> np.ndarray:
    data = simulate(SimulationConfig(mixing="linear", n=3, m=1, sigma=0.3, samples=samples, seed=seed))
    return data.x * scales + np.array([5.0, -300.0, 0.02])


def test_a_standardised_decoder_is_the_change_of_variables():
    """log N(x; shift + scale g(z), diag(scale sigma)^2) = log N(y; g(z), sigma^2 I) - sum_j log scale_j."""
    x = torch.as_tensor(_scaled_linear(500), dtype=torch.float64)
    dec = build_decoder(3, DecoderConfig(m=1, hidden=(8,), preprocess="standardize"), x).double()
    shift, scale = x.mean(0), x.std(0)
    assert torch.allclose(dec.data_shift.double(), shift, rtol=1e-6) and torch.allclose(dec.data_scale.double(),
                                                                                       scale, rtol=1e-6)
    z = torch.randn(500, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    in_x = log_likelihood(x, dec.mean(z), dec.sigma())
    y = (x - dec.data_shift.double()) / dec.data_scale.double()
    in_y = log_likelihood(y, dec.net(z), dec.model_sigma().expand(3)) - dec.data_scale.double().log().sum()
    assert torch.allclose(in_x, in_y, atol=1e-9)
    g, J = dec.mean_and_jacobian(z)  # the Jacobian carries the scale too
    auto = torch.autograd.functional.jacobian(lambda v: dec.mean(v).sum(0), z).permute(1, 0, 2)
    assert torch.allclose(g, dec.mean(z)) and torch.allclose(J, auto, atol=1e-9)


@pytest.mark.parametrize("kind", ["center", "standardize"])
def test_a_linear_fit_reaches_ppca_of_the_preprocessed_data_in_the_data_units(kind):
    """Exact reference: with y = (x - shift) / scale, the linear model's maximum in x's units is PPCA's maximum on
    y minus sum log scale. The fit reaches it, and the evaluator scores it in x's units. (Centring alone is
    tried on columns far from 0 but of one scale: Adam's steps could not grow g to columns 10^4 apart.)"""
    x = _scaled_linear(scales=SCALES if kind == "standardize" else np.ones(3))
    cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(), preprocess=kind),
                    estimator=EstimatorConfig(name="mle-adaptive", nodes=4),
                    training=TrainingConfig(steps=300, batch_size=500, lr=0.05, val_fraction=0.02, eval_every=10**7,
                                            device="cpu"))
    result = train(cfg, Dataset(x))
    xt = x[result.train_idx]
    shift = xt.mean(0)
    scale = xt.std(0, ddof=1) if kind == "standardize" else np.ones(3)
    ref = ppca_mle((xt - shift) / scale, 1).loglik_per_point - np.log(scale).sum()
    dec = result.decoder
    W = dec.net.layers[0].weight.detach().double().numpy()
    b = dec.net.layers[0].bias.detach().double().numpy()
    s = float(dec.model_sigma().detach())
    S = np.diag(scale)
    fitted = float(gaussian_loglik(xt, shift + scale * b, S @ (W @ W.T + s**2 * np.eye(3)) @ S).mean())
    assert fitted <= ref + 1e-6
    assert ref - fitted < 0.01, (fitted, ref)
    assert heldout_loglik(dec, xt[:400]).mean == pytest.approx(
        float(gaussian_loglik(xt[:400], shift + scale * b, S @ (W @ W.T + s**2 * np.eye(3)) @ S).mean()), abs=1e-4)
    if kind == "standardize":  # the columns' units no longer matter: one sigma in y's units, one a column in x's
        assert np.allclose(dec.sigma().detach().numpy(), s * scale, rtol=1e-5)


def test_preprocessing_is_saved_with_the_run(tmp_path):
    x = _scaled_linear(400)
    cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(8,), preprocess="standardize"),
                    estimator=EstimatorConfig(name="vae"),
                    training=TrainingConfig(steps=5, batch_size=100, device="cpu"))
    result = train(cfg, Dataset(x))
    saved = load_run(save_run(result, tmp_path / "r"))
    z = torch.linspace(-2, 2, 9).reshape(-1, 1)
    assert torch.equal(saved.decoder.mean(z), result.decoder.mean(z).detach())
    xt = torch.as_tensor(x[:20], dtype=torch.float32)
    assert torch.equal(saved.encoder(xt)[0], result.encoder(xt)[0].detach())  # the encoder sees y too
    assert json.loads((tmp_path / "r" / "decoder.json").read_text())["preprocess"] == "standardize"


def test_the_one_se_rule_takes_the_smallest_m_the_data_cannot_tell_from_the_best():
    rng = np.random.default_rng(0)
    base = rng.normal(size=2000)
    noise = rng.normal(size=2000)
    noise -= noise.mean()
    per_point = {1: base - 0.5, 2: base + 0.02 * noise, 3: base + 0.0001}
    choice = one_se_rule(per_point)
    # m = 2 is 0.0001 short of m = 3 with a paired SE of 0.02 / sqrt(2000) = 0.00045: within; m = 1 is not
    assert choice.best == 3 and choice.chosen == 2
    assert choice.rows[1]["shortfall"] == pytest.approx(0.0001, abs=1e-12)
    assert choice.rows[1]["shortfall_se"] == pytest.approx(0.02 * noise.std(ddof=1) / math.sqrt(2000), rel=1e-9)
    assert [r["within_one_se"] for r in choice.rows] == [False, True, True]


def test_ppca_suggests_the_latent_dimension_of_linear_data():
    for m in (1, 2, 3):
        data = simulate(SimulationConfig(mixing="linear", n=6, m=m, sigma=0.1, samples=3000, seed=m))
        assert suggest_m(data.x).chosen == m


def test_fit_on_data_without_a_true_model_says_which_m_it_took(tmp_path, capsys):
    data = simulate(SimulationConfig(mixing="linear", n=5, m=2, sigma=0.1, samples=600, seed=2))
    csv = tmp_path / "d.csv"
    save_dataset(csv, Dataset(data.x))
    assert cli_main(["fit", "--data", str(csv), "--steps", "3", "--hidden", "8", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "m = 2" in err and "select-m" in err
    assert load_run(tmp_path / "r").config.decoder.m == 2


def test_select_m_chooses_m_writes_its_record_and_figure(tmp_path):
    """main.py select-m end to end (the figure is drawn by gui/figures.py offscreen)."""
    data = simulate(SimulationConfig(mixing="linear", n=3, m=1, sigma=0.2, samples=800, seed=4))
    f = tmp_path / "d.npz"
    save_dataset(f, data)
    out = tmp_path / "sel"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, str(REPO / "main.py"), "select-m", "--data", str(f), "--steps", "150",
                        "--hidden", "", "--quiet", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "select_m.json").read_text())
    assert doc["chosen_m"] == 1 and doc["true_m"] == 1 and [c["m"] for c in doc["candidates"]] == [1, 2]
    for c in doc["candidates"]:
        saved = load_run(out / c["run"])
        assert saved.config.decoder.m == c["m"]
        assert c["heldout_loglik"] == pytest.approx(saved.metrics["heldout_loglik"], abs=1e-12)
        assert c["ppca_heldout_loglik"] == pytest.approx(saved.metrics["ppca_heldout_loglik"], abs=1e-12)
    assert doc["candidates"][0]["within_one_se"]
    png = (out / "select_m.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert verify(out)["kind"] == "select-m"
    assert math.isfinite(doc["candidates"][1]["shortfall_se"])
