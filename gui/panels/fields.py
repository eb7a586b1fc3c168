"""Input fields bound to one attribute of one config dataclass, and the form that holds them.

A field shows the attribute's value and writes a parsed value back; it keeps no other state. Text that
cannot be parsed stays in the field (red, with the reason beside it) and the attribute keeps its last
valid value; the window refuses to start a run while any field has a problem. Range checks are the
engine's: `RunConfig.validate()` raises `ConfigError` naming the field, and the form shows it there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import ConfigError

INVALID_STYLE = "background-color: #ffe1e1; border: 1px solid #c62828;"
INT_MAX = 2**31 - 1  # a QSpinBox holds a C int


class Field(QWidget):
    """An input widget plus an error line under it. Subclasses implement value() and set_value()."""

    edited = Signal()

    def __init__(self, tip: str, editor: QWidget):
        super().__init__()
        self.editor = editor
        self.setToolTip(tip)
        editor.setToolTip(tip)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(1)
        self.row = QHBoxLayout()
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addWidget(editor, 1)
        outer.addLayout(self.row)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828; font-size: 11px;")
        self.error_label.hide()
        outer.addWidget(self.error_label)

    def value(self) -> Any:
        """The parsed value; raises ValueError with a message when the text cannot be parsed."""
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def set_error(self, message: str | None) -> None:
        self.editor.setStyleSheet(INVALID_STYLE if message else "")
        self.error_label.setText(message or "")
        self.error_label.setVisible(bool(message))

    @property
    def error(self) -> str:
        return self.error_label.text()


class IntField(Field):
    """A whole number in a spin box; with `special`, the minimum is shown as that text (e.g. "auto" for 0)."""

    def __init__(self, tip: str, lo: int, hi: int, *, special: str = ""):
        self.spin = QSpinBox()
        self.spin.setRange(lo, min(hi, INT_MAX))
        if special:
            self.spin.setSpecialValueText(special)
        self.spin.setAccelerated(True)
        self.spin.setKeyboardTracking(False)
        super().__init__(tip, self.spin)
        self.spin.valueChanged.connect(self.edited)

    def value(self) -> int:
        return int(self.spin.value())

    def set_value(self, value: Any) -> None:
        self.spin.blockSignals(True)
        self.spin.setValue(int(value))
        self.spin.blockSignals(False)


class RealField(Field):
    """A number typed as text ("0.1", "3e-4"); with `optional`, empty text means None (shown as `auto`)."""

    def __init__(self, tip: str, *, optional: bool = False, placeholder: str = "auto"):
        self.line = QLineEdit()
        self.optional = optional
        if optional:
            self.line.setPlaceholderText(placeholder)
        super().__init__(tip, self.line)
        self.line.textEdited.connect(self.edited)

    def value(self) -> float | None:
        text = self.line.text().strip()
        if not text and self.optional:
            return None
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number" if text else "enter a number") from None
        if not math.isfinite(v):
            raise ValueError("expected a finite number")
        return v

    def set_value(self, value: Any) -> None:
        self.line.setText("" if value is None else f"{value:g}")


class OptionalIntField(Field):
    """A whole number typed as text; empty text means None (the engine's default, named by the placeholder)."""

    def __init__(self, tip: str, placeholder: str = "auto"):
        self.line = QLineEdit()
        self.line.setPlaceholderText(placeholder)
        super().__init__(tip, self.line)
        self.line.textEdited.connect(self.edited)

    def value(self) -> int | None:
        text = self.line.text().strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number; empty: auto") from None

    def set_value(self, value: Any) -> None:
        self.line.setText("" if value is None else str(int(value)))

    def set_placeholder(self, text: str) -> None:
        """What empty text stands for; shown only while the field is empty."""
        if self.line.placeholderText() != text:
            self.line.setPlaceholderText(text)


class ChoiceField(Field):
    def __init__(self, tip: str, options: Sequence[str], labels: dict[str, str] | None = None):
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(8)
        for opt in options:
            self.combo.addItem((labels or {}).get(opt, opt), opt)
        super().__init__(tip, self.combo)
        self.combo.currentIndexChanged.connect(self.edited)

    def value(self) -> str:
        return str(self.combo.currentData())

    def set_value(self, value: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.setCurrentIndex(max(0, self.combo.findData(value)))
        self.combo.blockSignals(False)

    def disable_option(self, option: str, reason: str) -> None:
        """Grey out one option and say why in its tooltip."""
        i = self.combo.findData(option)
        item = self.combo.model().item(i)  # a QStandardItemModel, QComboBox's default
        item.setEnabled(False)
        item.setToolTip(reason)


class BoolField(Field):
    def __init__(self, tip: str, text: str = ""):
        self.check = QCheckBox(text)
        super().__init__(tip, self.check)
        self.check.toggled.connect(self.edited)

    def value(self) -> bool:
        return self.check.isChecked()

    def set_value(self, value: Any) -> None:
        self.check.blockSignals(True)
        self.check.setChecked(bool(value))
        self.check.blockSignals(False)


class LayersField(Field):
    """Layer widths as text, "64,64"; empty text is no hidden layer."""

    def __init__(self, tip: str):
        self.line = QLineEdit()
        self.line.setPlaceholderText("none (linear)")
        super().__init__(tip, self.line)
        self.line.textEdited.connect(self.edited)

    def value(self) -> tuple[int, ...]:
        parts = [p.strip() for p in self.line.text().replace(";", ",").split(",")]
        if parts == [""]:
            return ()
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError("expected whole numbers separated by commas, e.g. 64,64") from None

    def set_value(self, value: Any) -> None:
        self.line.setText(",".join(str(int(h)) for h in value))


class SectionForm(QWidget):
    """A form editing one config dataclass (a section of the RunConfig, e.g. `simulation`)."""

    edited = Signal()

    def __init__(self, prefix: str, section: Any, rows: Sequence[tuple[str, str, Field]]):
        super().__init__()
        self.prefix = prefix
        self.section = section
        self.fields: dict[str, Field] = {}
        self.labels: dict[str, QLabel] = {}
        self._parse_errors: dict[str, str] = {}
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        for name, text, field in rows:
            label = QLabel(text)
            label.setToolTip(field.toolTip())
            self.form.addRow(label, field)
            self.fields[name], self.labels[name] = field, label
            field.edited.connect(functools.partial(self._on_edited, name))
        self.refresh()

    def bind(self, section: Any) -> None:
        """Edit another instance of the section (after a preset or a config file was opened)."""
        self.section = section
        self.refresh()

    def refresh(self) -> None:
        """Show the section's values; text that could not be parsed is dropped."""
        self._parse_errors.clear()
        for name, field in self.fields.items():
            field.set_value(getattr(self.section, name))
            field.set_error(None)

    def _on_edited(self, name: str) -> None:
        field = self.fields[name]
        try:
            value = field.value()
        except ValueError as exc:
            self._parse_errors[name] = str(exc)
            field.set_error(str(exc))
        else:
            self._parse_errors.pop(name, None)
            field.set_error(None)
            setattr(self.section, name, value)
        self.edited.emit()

    def parse_problems(self) -> list[tuple[str, str]]:
        """(dotted field, message) of every field whose text cannot be parsed."""
        return [(f"{self.prefix}.{name}", msg) for name, msg in self._parse_errors.items()]

    def show_config_error(self, err: ConfigError | None) -> bool:
        """Mark the field named by `err` (others are cleared); True if it is one of this form's fields."""
        hit = False
        for name, field in self.fields.items():
            if name in self._parse_errors:
                continue
            mine = err is not None and err.field == f"{self.prefix}.{name}"
            field.set_error(_config_message(err) if mine and err is not None else None)
            hit = hit or mine
        return hit

    def set_row_visible(self, name: str, visible: bool) -> None:
        self.form.setRowVisible(self.fields[name], visible)


def _config_message(err: ConfigError) -> str:
    """The reason shown under a field; None is an empty optional field, i.e. the automatic value."""
    got = "auto" if err.value is None else repr(err.value)
    return f"got {got}; {err.allowed}"
