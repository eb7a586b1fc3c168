"""Model panel: the true model Z ~ N(0, I_m), X | Z ~ N(f(Z), sigma^2 I_n) (`RunConfig.simulation`),
presets, Generate and Import."""

from __future__ import annotations

import random
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from engine.config import ACTIVATIONS, MIXINGS, SIGMOID_KINDS, SimulationConfig
from engine.presets import resources_dir

from .fields import ChoiceField, IntField, RealField, SectionForm

PRESET_DIR = resources_dir() / "presets"  # beside main.py, or inside the frozen bundle

MIXING_LABELS = {"linear": "linear  A z + b", "polynomial": "polynomial  b + Σ C_p z^p",
                 "sigmoid": "sigmoid  s(A z + b)", "mlp": "random MLP"}
FAMILY_FIELDS = {"polynomial": ("degree",), "sigmoid": ("sigmoid_kind",),
                 "mlp": ("mlp_depth", "mlp_width", "mlp_activation")}


def preset_files() -> list[Path]:
    return sorted(PRESET_DIR.glob("*.json"))


class ModelPanel(QWidget):
    """Edits `RunConfig.simulation`; asks the window to load a preset, generate or import data."""

    edited = Signal()
    preset_requested = Signal(str)
    generate_requested = Signal()
    import_requested = Signal()

    def __init__(self, section: SimulationConfig):
        super().__init__()
        layout = QVBoxLayout(self)

        presets = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_combo.setToolTip(f"Settings for the exercises, from {PRESET_DIR}")
        for path in preset_files():
            self.preset_combo.addItem(path.stem, str(path))
        self.preset_button = QPushButton("Load preset")
        self.preset_button.setToolTip("Replace every setting (model, estimator, training) by the preset's")
        self.preset_button.clicked.connect(self._load_preset)
        self.preset_button.setEnabled(self.preset_combo.count() > 0)
        self.preset_combo.currentIndexChanged.connect(
            lambda i: self.preset_button.setEnabled(i >= 0))
        presets.addWidget(self.preset_combo, 1)
        presets.addWidget(self.preset_button)
        layout.addLayout(presets)

        # imported data in use: these settings only describe a simulation that Generate would draw
        self.source_label = QLabel()
        self.source_label.setWordWrap(True)
        self.source_label.setStyleSheet("background: #fff4d6; color: #5a3d00; border: 1px solid #e0b44c; "
                                        "border-radius: 3px; padding: 4px;")
        self.source_label.hide()
        layout.addWidget(self.source_label)

        self.form = SectionForm("simulation", section, [
            ("n", "n", IntField("n: dimension of the data, x ∈ R^n. 1 to 1000.", 1, 1000)),
            ("m", "m", IntField("m: dimension of the true latents, z ~ N(0, I_m). 1 to 100.", 1, 100)),
            ("mixing", "mixing f", ChoiceField(
                "f: R^m → R^n, the true mixing: linear f(z) = A z + b; polynomial f(z) = b + Σ_p C_p z^p "
                "(elementwise powers); sigmoid f(z) = s(A z + b); random MLP. Coefficients are drawn "
                "from the seed.", MIXINGS, MIXING_LABELS)),
            ("degree", "degree d", IntField("d: degree of the polynomial f(z) = b + Σ_{p=1..d} C_p z^p. "
                                            "1 to 9.", 1, 9)),
            ("sigmoid_kind", "sigmoid s", ChoiceField("s: the sigmoid of f(z) = s(A z + b): logistic "
                                                      "1/(1+e^-u) or tanh.", SIGMOID_KINDS)),
            ("mlp_depth", "MLP depth", IntField("Hidden layers of the random MLP f. 1 to 8.", 1, 8)),
            ("mlp_width", "MLP width", IntField("Units per hidden layer of the random MLP f. 1 to 1024.",
                                                1, 1024)),
            ("mlp_activation", "MLP activation", ChoiceField("Activation a of the random MLP f.", ACTIVATIONS)),
            ("scale", "scale", RealField("Scale of f's random coefficients (their standard deviation "
                                         "factor). (0, 1000].")),
            ("sigma", "σ", RealField("σ: noise standard deviation, X | Z ~ N(f(Z), σ² I_n). (0, 1000].")),
            ("samples", "samples N", IntField("N: number of points (x_i, z_i) drawn. 2 to 10 000 000.",
                                              2, 10_000_000)),
            ("seed", "seed", IntField("Seed of the simulation: f's coefficients and the draws of z and ε. "
                                      "0 to 2147483647.", 0, 2**31 - 1)),
        ])
        seed_field = self.form.fields["seed"]
        self.new_seed_button = QPushButton("New seed")
        self.new_seed_button.setToolTip("Draw a new random seed (then Generate)")
        self.new_seed_button.clicked.connect(self._new_seed)
        seed_field.row.addWidget(self.new_seed_button)
        self.form.edited.connect(self._on_edited)
        layout.addWidget(self.form)

        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Draw N points from the model with these settings")
        self.generate_button.clicked.connect(self.generate_requested)
        self.import_button = QPushButton("Import data…")
        self.import_button.setToolTip("Use your own data: a .csv (columns x1..xn, optional z1..zm) or .npz file")
        self.import_button.clicked.connect(self.import_requested)
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.import_button)
        layout.addLayout(buttons)

        self.data_label = QLabel("No data yet: Generate, or Start (which generates first).")
        self.data_label.setWordWrap(True)
        self.data_label.setStyleSheet("color: #444;")
        layout.addWidget(self.data_label)
        layout.addStretch(1)
        self._update_rows()

    @property
    def section(self) -> SimulationConfig:
        return self.form.section

    def bind(self, section: SimulationConfig) -> None:
        self.form.bind(section)
        self._update_rows()

    def _update_rows(self) -> None:
        shown = FAMILY_FIELDS.get(self.section.mixing, ())
        for names in FAMILY_FIELDS.values():
            for name in names:
                self.form.set_row_visible(name, name in shown)

    def _on_edited(self) -> None:
        self._update_rows()
        self.edited.emit()

    def _new_seed(self) -> None:
        self.section.seed = random.SystemRandom().randrange(2**31)
        self.form.fields["seed"].set_value(self.section.seed)
        self.edited.emit()

    def _load_preset(self) -> None:
        if self.preset_combo.currentIndex() >= 0:
            self.preset_requested.emit(self.preset_combo.currentData())

    def show_preset(self, name: str | None, modified: bool = False) -> None:
        """Name the preset the settings hold; none (`name` None) or `modified`: the box says "custom"."""
        i = self.preset_combo.findText(name) if name is not None and not modified else -1
        self.preset_combo.setPlaceholderText(f"custom (changed from {name})" if name is not None and modified
                                             else "custom settings")
        if self.preset_combo.currentIndex() != i:
            self.preset_combo.setCurrentIndex(i)

    def set_source(self, imported: str | None) -> None:
        """`imported`: what the imported data in use are; None when the data (will) come from these settings."""
        if imported:
            self.source_label.setText(f"In use: {imported}. The settings below describe a simulation; Generate "
                                      "draws it and replaces the imported data.")
        self.source_label.setVisible(bool(imported))

    def set_data_text(self, text: str, stale: bool) -> None:
        self.data_label.setText(text + ("\nSettings changed since: Generate (or Start) draws new data."
                                        if stale else ""))
        self.data_label.setStyleSheet("color: #8a5a00;" if stale else "color: #444;")

    def set_busy(self, busy: bool) -> None:
        """Generate and Import need the worker thread."""
        self.generate_button.setEnabled(not busy)
        self.import_button.setEnabled(not busy)

