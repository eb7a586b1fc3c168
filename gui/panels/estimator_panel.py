"""Estimator panel: which objective is maximised and its settings (`RunConfig.estimator`), with the
objective's formula and one line on its bias and cost (engine/estimator_table.py)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget

from engine.config import (
    FIXED_GRID_BUDGET,
    PROPOSALS,
    SAMPLERS,
    VAE_SIGMA_UPDATES,
    EstimatorConfig,
    default_nodes,
)
from engine.estimator_table import ESTIMATORS, INFO

from .fields import BoolField, ChoiceField, IntField, LayersField, OptionalIntField, RealField, SectionForm


class EstimatorPanel(QWidget):
    """Edits `RunConfig.estimator`. `fitted_m` reads the fitted latent dimension (`RunConfig.decoder.m`,
    edited in the Training panel), which the automatic node count depends on; the window calls
    `show_defaults()` when it changes."""

    edited = Signal()

    def __init__(self, section: EstimatorConfig, fitted_m: Callable[[], int] = lambda: 1):
        super().__init__()
        self.fitted_m = fitted_m
        layout = QVBoxLayout(self)
        self.nodes_field = OptionalIntField(
            "G: Gauss-Hermite nodes per latent dimension; the grid has G^m points (at most 20 000). "
            "mle-adaptive takes a compact rule of the same degree 2G - 1 where there is one: for m = 2, "
            "7 points with G = 3 and 12 with G = 4; for m >= 3 and G = 3, 1 + 2m + 2^m points (2m + 2^m from m = 6). "
            "Empty: auto, chosen by the fitted m (Training panel): mle-adaptive 16 for m = 1 and 3 (degree 5) "
            "for m >= 2; mle-quadrature the most nodes whose grid has at most "
            f"{FIXED_GRID_BUDGET} points per batch (2 to 200). 2 to 200.")
        self.form = SectionForm("estimator", section, [
            ("name", "estimator", ChoiceField(
                "The objective maximised over θ and σ. Direct MLE estimates log p(x) = log ∫ p(x|z) p(z) dz "
                "itself (four ways); vae and iwae maximise a lower bound through an encoder q(z|x).",
                ESTIMATORS, tips={e: INFO[e].label for e in ESTIMATORS})),
            ("nodes", "nodes G", self.nodes_field),
            ("samples", "samples K", IntField("K: importance samples per point (mle-importance, iwae). "
                                              "1 to 100 000.", 1, 100_000)),
            ("proposal", "proposal q", ChoiceField(
                "q(z|x) of mle-importance: the prior N(0, I), or the Laplace approximation at the "
                "posterior mode (mixed with the prior for safe weights).", PROPOSALS)),
            ("sampler", "sampler", ChoiceField("MCMC kernel of mle-mcem: Langevin (MALA) or Hamiltonian "
                                               "Monte Carlo.", SAMPLERS)),
            ("mcmc_steps", "MCMC steps", IntField("MCMC transitions of the persistent chains per training "
                                                  "step. 1 to 1000.", 1, 1000)),
            ("leapfrog_steps", "leapfrog L", IntField("L: leapfrog steps per HMC transition. 1 to 100.",
                                                      1, 100)),
            ("target_accept", "target accept", RealField("Acceptance rate the MCMC step size is adapted "
                                                         "towards. [0.05, 0.99].")),
            ("encoder_hidden", "encoder hidden", LayersField(
                "Hidden layer widths of the encoder q_φ(z|x) = N(μ_φ(x), diag s_φ(x)²), e.g. 64,64; "
                "empty = linear. At most 8 layers of 1 to 4096.")),
            ("beta", "β", RealField("β: weight of the KL term, E_q log p(x|z) − β KL(q ‖ p). [0, 100]; "
                                    "1 is the ELBO.")),
            ("warmup_steps", "KL warm-up", IntField("Steps over which β ramps linearly from 0 (0 = none). "
                                                    "0 to 10 000 000.", 0, 10_000_000)),
            ("dreg", "DReG", BoolField("Doubly-reparameterised encoder gradient for iwae (Tucker et al. "
                                       "2019): lower variance as K grows.", "doubly reparameterised")),
            ("vae_sigma", "σ update", ChoiceField(
                "σ of the VAE decoder: learned by gradient, or set each step to its closed-form optimum "
                "σ² = mean squared reconstruction error.", VAE_SIGMA_UPDATES)),
        ])
        self.form.edited.connect(self._on_edited)
        layout.addWidget(self.form)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        layout.addWidget(line)
        self.kind_label = QLabel()
        self.kind_label.setWordWrap(True)
        self.kind_label.setStyleSheet("font-weight: bold;")
        self.formula_label = QLabel()
        self.formula_label.setWordWrap(True)
        self.formula_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.formula_label.setStyleSheet("font-family: 'DejaVu Sans Mono', monospace; font-size: 12px;")
        self.formula_label.setToolTip("The objective this estimator maximises (per point)")
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        self.summary_label.setStyleSheet("font-style: italic; color: #444;")
        self.summary_label.setToolTip("Bias and cost of the estimator")
        for w in (self.kind_label, self.formula_label, self.summary_label):
            layout.addWidget(w)
        layout.addStretch(1)
        self._update()

    @property
    def section(self) -> EstimatorConfig:
        return self.form.section

    def bind(self, section: EstimatorConfig) -> None:
        self.form.bind(section)
        self._update()

    def _on_edited(self) -> None:
        self._update()
        self.edited.emit()

    def _update(self) -> None:
        info = INFO[self.section.name]
        relevant = info.settings
        for field in self.form.fields:
            if field != "name":
                shown = field in relevant and (field != "leapfrog_steps" or self.section.sampler == "hmc")
                self.form.set_row_visible(field, shown)
        kind = "Direct maximum likelihood" if info.family == "mle" else "Variational lower bound (encoder q_φ)"
        self.kind_label.setText(f"{kind}: {info.label.removeprefix('direct MLE, ')}")
        self.formula_label.setText(info.formula)
        self.summary_label.setText(info.summary)
        self.show_defaults()

    def show_defaults(self) -> None:
        """Name the node count an empty nodes field stands for, for this estimator and the fitted m."""
        m = self.fitted_m()
        self.nodes_field.set_placeholder(f"auto: {default_nodes(self.section.name, m)} for m = {m}")
