"""Training panel: the fitted decoder g_θ and its σ (`RunConfig.decoder`) and the training loop
(`RunConfig.training`), one form for each section."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QGroupBox, QVBoxLayout, QWidget

from engine.config import (
    ACTIVATIONS,
    DEFAULT_MAX_STEPS,
    DEVICES,
    INITS,
    PREPROCESS,
    SCHEDULES,
    SIGMA_MODES,
    DecoderConfig,
    TrainingConfig,
)
from engine.threads import MAX_AUTO
from engine.trainer import MAX_PROGRESS_RATE, SNAPSHOT_RATE

from .fields import BoolField, ChoiceField, IntField, LayersField, OptionalIntField, RealField, SectionForm


def _group(title: str, *widgets: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    for w in widgets:
        layout.addWidget(w)
    return box


class TrainingPanel(QWidget):
    """Edits `RunConfig.decoder` and `RunConfig.training`."""

    edited = Signal()

    def __init__(self, decoder: DecoderConfig, training: TrainingConfig, cuda_reason: str | None):
        super().__init__()
        self.decoder_form = SectionForm("decoder", decoder, [
            ("m", "latent dim m", IntField("m: latent dimension of the fitted model g_θ: R^m → R^n "
                                           "(may differ from the true m). 1 to 100.", 1, 100)),
            ("hidden", "hidden layers", LayersField(
                "Hidden layer widths of g_θ, e.g. 64,64. Empty: linear g_θ(z) = W z + b, i.e. "
                "probabilistic PCA. At most 8 layers of 1 to 4096.")),
            ("preprocess", "preprocess", ChoiceField(
                "How g_θ and σ see the data's columns: none; center (minus the training points' means); "
                "standardize (centred and divided by their standard deviations, for columns in different "
                "units). Part of the model: every log-likelihood stays in the data's own units (the change "
                "of variables included), so runs with and without it compare on one scale.", PREPROCESS,
                tips={"none": "the columns as they are",
                      "center": "x minus the training points' column means",
                      "standardize": "centred, then divided by each column's standard deviation"})),
            ("activation", "activation", ChoiceField("Activation between the layers of g_θ (and of the "
                                                     "VAE encoder).", ACTIVATIONS)),
            ("init", "start", ChoiceField(
                "Where training starts. ppca: at the closed-form linear fit of this m (probabilistic PCA, "
                "Tipping & Bishop 1999) through g_θ's linear path, σ and every estimator's posterior state "
                "(and the VAE encoder) from its exact posterior: the held-out score at step 0 is PPCA's, and "
                "a fit can only improve on the linear model. random: the network's random start.", INITS,
                tips={"ppca": "start at the linear model's MLE (probabilistic PCA)",
                      "random": "the network's random initialisation"})),
            ("sigma_mode", "σ mode", ChoiceField("shared: one σ for all n coordinates; per_dim: σ_j per "
                                                 "coordinate.", SIGMA_MODES)),
            ("learn_sigma", "learn σ", BoolField("Learn σ with θ (else it stays where it starts: σ init, or the "
                                                    "linear start's σ).", "learn σ")),
            ("sigma_init", "σ init", RealField("σ at the start. Empty: the linear start's (PPCA's σ) with "
                                               "start ppca, else half the data's mean standard deviation. "
                                               "(0, 1000], above the floor.", optional=True)),
            ("sigma_min", "σ floor", RealField(
                "σ_min: σ = σ_min + softplus(ρ) never goes below it. Empty: 10⁻³ × the data's standard "
                "deviation; 0: no floor, and the likelihood is unbounded as σ → 0 (Mattei & Frellsen "
                "2018). [0, 1000].", optional=True)),
        ])
        self.optimiser = QComboBox()
        self.optimiser.addItem("Adam")
        self.optimiser.setEnabled(False)
        self.optimiser.setToolTip("Optimiser: Adam (the engine's one optimiser)")
        self.training_form = SectionForm("training", training, [
            ("lr", "learning rate", RealField("η: Adam's learning rate. (0, 10].")),
            ("schedule", "schedule", ChoiceField(
                "Learning-rate schedule. plateau: η halved whenever the held-out estimate stops gaining "
                "(the tolerance over the window below); a plateau at η/32 is convergence. cosine: decay to "
                "5 % of η over the step cap or the time limit (it needs one), to the cap. constant: η; the "
                "first plateau is convergence.", SCHEDULES,
                tips={"plateau": "halve η at each plateau; converged at η/32",
                      "cosine": "decay over the cap; runs to it",
                      "constant": "η throughout; converged at the first plateau"})),
            ("batch_size", "batch size B", IntField("B: points per minibatch. 1 to 1 000 000.", 1, 1_000_000)),
            ("steps", "step cap", OptionalIntField(
                "An optional cap on the optimiser steps. Empty: train until converged, at most "
                f"{DEFAULT_MAX_STEPS:,} steps (none with a time limit). With a time limit too: whichever "
                "comes first. 1 to 10 000 000.".replace(",", " "), placeholder="until converged")),
            ("time_limit", "time limit (s)", RealField(
                "An optional cap on the seconds of training: the run stops when it converges, at the time "
                "limit or at the step cap, whichever comes first (the cosine schedule ends with it). Empty: "
                "none. (0, 10 000 000].", optional=True, placeholder="none")),
            ("tol", "tolerance", RealField(
                "Convergence: nats per point. The held-out estimate's mean over the last `window` "
                "evaluations gaining less than this on the window before is a plateau. [0, 1000].")),
            ("val_fraction", "held-out fraction", RealField(
                "Fraction of the N points held out for the held-out log-likelihood (never trained on). "
                "[0, 0.9].")),
            ("eval_every", "eval every", IntField("Held-out log-likelihood every this many steps. "
                                                  "1 to 10 000 000.", 1, 10_000_000)),
            ("patience", "window", IntField(
                "Held-out evaluations in each window of the convergence test (the run keeps its best "
                "evaluated state); 0: never converged, train to the cap. 0 to 100 000.", 0, 100_000)),
            ("snapshot_every", "plot every", IntField(
                f"The live plots may get new data every this many steps, at most {MAX_PROGRESS_RATE:g} times a "
                f"second (the manifold and latents {SNAPSHOT_RATE:g} times). 1 to 10 000 000.", 1, 10_000_000)),
            ("threads", "threads", IntField(
                "torch intra-op threads of the run. auto: one thread when a step is small (a second one costs "
                "more in hand-offs than it gains), else the cores idle at the start, at most "
                f"{MAX_AUTO}. The threads sleep while they wait, so a machine busy with other work does not "
                "collapse the run. 0 (auto) to 1024.", 0, 1024, special="auto")),
            ("device", "device", ChoiceField("Where torch trains: auto (CUDA if available, else CPU), cpu "
                                             "or cuda.", DEVICES)),
            ("seed", "seed", IntField("Seed of the training: initial weights, minibatches, the held-out "
                                      "split, Monte Carlo draws. 0 to 2147483647.", 0, 2**31 - 1)),
        ])
        self.training_form.form.insertRow(0, "optimiser", self.optimiser)
        if cuda_reason:
            self.training_form.fields["device"].disable_option("cuda", cuda_reason)
        layout = QVBoxLayout(self)
        layout.addWidget(_group("Decoder g_θ and σ", self.decoder_form))
        layout.addWidget(_group("Optimisation", self.training_form))
        layout.addStretch(1)
        self.decoder_form.edited.connect(self.edited)
        self.training_form.edited.connect(self.edited)

    def bind(self, decoder: DecoderConfig, training: TrainingConfig) -> None:
        self.decoder_form.bind(decoder)
        self.training_form.bind(training)
