"""The one table of estimators agrees with the config and the estimator classes it describes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from engine.config import DecoderConfig, EstimatorConfig
from engine.estimator_table import ESTIMATORS, INFO, MLE_ESTIMATORS, TABLE
from engine.estimators import build_estimator
from engine.networks import build_decoder


def test_names_are_unique_and_families_known():
    assert len(set(ESTIMATORS)) == len(TABLE) == 6
    assert {e.family for e in TABLE} == {"mle", "vae"}
    assert MLE_ESTIMATORS == ("mle-quadrature", "mle-adaptive", "mle-importance", "mle-mcem")


def test_settings_are_estimator_config_fields():
    fields = {f.name for f in dataclasses.fields(EstimatorConfig)} - {"name"}
    for e in TABLE:
        assert e.settings <= fields, e.name
    # every setting is read by some estimator
    assert set().union(*(e.settings for e in TABLE)) == fields


@pytest.mark.parametrize("name", ESTIMATORS)
def test_each_row_builds_its_estimator(name):
    x = torch.randn(32, 3)
    decoder = build_decoder(3, DecoderConfig(m=2, hidden=(8,)), x)
    est = build_estimator(EstimatorConfig(name=name, samples=4), decoder, 32, torch.Generator().manual_seed(0))
    assert est.name == name
    assert est.value_label.startswith(INFO[name].objective)
    assert isinstance(getattr(est, "encoder", None), torch.nn.Module) == (INFO[name].family == "vae")
