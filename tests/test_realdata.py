"""A real data set end to end: scikit-learn's wine table (178 wines, 13 chemical measurements in units from
0.1 to 1000), shipped inside scikit-learn's wheel (the `realdata` extra, also in `dev`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.cli import main as cli_main
from engine.config import DecoderConfig, EstimatorConfig, RunConfig, TrainingConfig
from engine.ppca import gaussian_loglik, ppca_mle
from engine.runs import load_run
from engine.simulate import Dataset
from engine.storage import load_dataset, save_dataset
from engine.trainer import split_indices, train

datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory):
    w = datasets.load_wine()
    path = tmp_path_factory.mktemp("wine") / "wine.csv"
    save_dataset(path, Dataset(np.asarray(w.data, dtype=np.float64), columns=tuple(w.feature_names)))
    return path, w


def test_the_csv_keeps_the_column_names(wine):
    path, w = wine
    data = load_dataset(path)
    assert data.columns == tuple(w.feature_names) and data.x.shape == (178, 13)
    assert np.array_equal(data.x, w.data)


def test_a_standardised_linear_fit_reaches_ppca_of_the_standardised_wine(wine):
    """Exact reference on real data: the linear model with m = 2 on standardised columns reaches PPCA's closed-form
    maximum on y = (x - mean) / sd, which in x's units is that minus sum log sd."""
    data = load_dataset(wine[0])
    cfg = RunConfig(decoder=DecoderConfig(m=2, hidden=(), preprocess="standardize"),
                    estimator=EstimatorConfig(name="mle-adaptive"),
                    training=TrainingConfig(steps=600, batch_size=178, lr=0.05, val_fraction=0.0, eval_every=10**7,
                                            device="cpu"))
    result = train(cfg, data)
    x = data.x
    shift, scale = x.mean(0), x.std(0, ddof=1)
    ref = ppca_mle((x - shift) / scale, 2).loglik_per_point - np.log(scale).sum()
    dec = result.decoder
    W = dec.net.layers[0].weight.detach().double().numpy()
    b = dec.net.layers[0].bias.detach().double().numpy()
    s = float(dec.model_sigma().detach())
    S = np.diag(scale)
    fitted = float(gaussian_loglik(x, shift + scale * b, S @ (W @ W.T + s**2 * np.eye(13)) @ S).mean())
    assert fitted <= ref + 1e-6 and ref - fitted < 0.02, (fitted, ref)
    # unstandardised, the isotropic model is far worse on the same points (its sigma is set by proline's units)
    raw = ppca_mle(x, 2)
    assert raw.loglik_per_point < ref - 1.0


def test_fit_on_wine_takes_the_ppca_m_and_names_it(wine, tmp_path, capsys):
    out = tmp_path / "r"
    assert cli_main(["fit", "--data", str(wine[0]), "--preprocess", "standardize", "--steps", "3", "--hidden", "8",
                     "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "holds no true model" in err
    saved = load_run(out)
    assert saved.info["columns"][-1] == "proline" and saved.config.decoder.preprocess == "standardize"
    assert torch.isfinite(torch.tensor(saved.metrics["heldout_loglik"]))
    # the PPCA reference is the linear model on the same (standardised) columns, in the data's units
    x = load_dataset(wine[0]).x
    tr, ho = split_indices(len(x), 0.2, 0)
    s = x[tr].std(0, ddof=1)
    pp = ppca_mle(x[tr] / s, saved.config.decoder.m)
    ref = gaussian_loglik(x[ho] / s, pp.mean, pp.covariance()).mean() - np.log(s).sum()
    assert saved.metrics["ppca_heldout_loglik"] == pytest.approx(ref, abs=1e-6)
