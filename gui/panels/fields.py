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
from PySide6.QtGui import QValidator
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
ERROR_STYLE = "color: #c62828; font-size: 11px;"
WARNING_STYLE = "color: #8a5a00; font-size: 11px;"
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
        self.error_label = QLabel()  # the error, else the field's own notice, else the window's warning
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.hide()
        outer.addWidget(self.error_label)
        self._error = ""  # the value cannot be used: Start is refused
        self._notice = ""  # what the field did with text it could not take (until the next edit)
        self._warning = ""  # a legal but unwise setting (set by the window's checks)

    def value(self) -> Any:
        """The parsed value; raises ValueError with a message when the text cannot be parsed."""
        raise NotImplementedError

    def set_value(self, value: Any) -> None:
        raise NotImplementedError

    def set_error(self, message: str | None) -> None:
        self._error = message or ""
        self._show_message()

    def set_warning(self, message: str | None) -> None:
        """A setting that works but is unwise: said beside the field, in amber; it does not block Start."""
        self._warning = message or ""
        self._show_message()

    def set_notice(self, message: str | None) -> None:
        self._notice = message or ""
        self._show_message()

    def _show_message(self) -> None:
        text = self._error or self._notice or self._warning
        style = "" if not self._error else INVALID_STYLE
        if self.editor.styleSheet() != style:
            self.editor.setStyleSheet(style)
        self.error_label.setStyleSheet(ERROR_STYLE if self._error else WARNING_STYLE)
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    @property
    def error(self) -> str:
        return self._error

    @property
    def warning(self) -> str:
        return self._warning

    @property
    def notice(self) -> str:
        return self._notice


class LenientSpinBox(QSpinBox):
    """A spin box that keeps whatever is typed: QSpinBox drops every key that cannot lead to a number in
    range ("1e5", "2,000", a letter), without a word. Here such text stays, `IntField` says what is wrong
    with it, and Qt puts the last good value back when editing ends (Enter or leaving the field)."""

    def validate(self, text: str, pos: int) -> object:
        state, text, pos = super().validate(text, pos)
        if state == QValidator.State.Invalid:
            state = QValidator.State.Intermediate
        return state, text, pos

    def strict_state(self) -> QValidator.State:
        """Qt's own verdict on the text now: Acceptable, Intermediate (could become a number in range) or Invalid."""
        text = self.lineEdit().text()
        if self.specialValueText() and text == self.specialValueText():
            return QValidator.State.Acceptable  # the minimum's name ("auto"), which QSpinBox.validate refuses
        return QSpinBox.validate(self, text, len(text))[0]


class IntField(Field):
    """A whole number in a spin box; with `special`, the minimum is shown as that text (e.g. "auto" for 0).

    The config follows the text as it is typed. Text that is not a whole number in range is kept, marked
    and named under the field (Start is refused meanwhile); when editing ends, the spin box shows its last
    good value again and the field says that the text was not taken."""

    def __init__(self, tip: str, lo: int, hi: int, *, special: str = ""):
        self.spin = LenientSpinBox()
        self.spin.setRange(lo, min(hi, INT_MAX))
        if special:
            self.spin.setSpecialValueText(special)
        self.spin.setAccelerated(True)
        super().__init__(tip, self.spin)
        self._typed = ""  # the last text typed that could not be taken
        self.spin.valueChanged.connect(self.edited)
        self.spin.lineEdit().textEdited.connect(self._on_text_edited)
        self.spin.editingFinished.connect(self._on_editing_finished)

    def _range(self) -> str:
        lo, hi = self.spin.minimum(), self.spin.maximum()
        special = f" ({self.spin.specialValueText()} = {lo})" if self.spin.specialValueText() else ""
        return f"a whole number from {lo:,} to {hi:,}{special}".replace(",", " ")

    def _text_problem(self) -> str:
        """Why the text cannot be taken ('' when it can)."""
        if self.spin.strict_state() == QValidator.State.Acceptable:
            return ""
        text = self.spin.cleanText().strip() or self.spin.lineEdit().text().strip()
        return f"{text!r} is not {self._range()}" if text else f"enter {self._range()}"

    def _on_text_edited(self, text: str) -> None:
        self.set_notice(None)
        problem = self._text_problem()
        self._typed = text if problem else ""
        if problem:  # valueChanged does not come for text that is not a number in range
            self.edited.emit()

    def _on_editing_finished(self) -> None:
        typed, self._typed = self._typed, ""
        if typed and not self._text_problem():  # Qt restored the last good value
            self.edited.emit()  # the form forgets the problem
            self.set_notice(f"{typed.strip()!r} was not {self._range()}: kept {self.spin.text()}")

    def value(self) -> int:
        problem = self._text_problem()
        if problem:
            raise ValueError(problem)
        return int(self.spin.value())

    def set_value(self, value: Any) -> None:
        self._typed = ""
        self.set_notice(None)
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
            raise ValueError(f"{text!r} is not a whole number; empty: {self.line.placeholderText()}") from None

    def set_value(self, value: Any) -> None:
        self.line.setText("" if value is None else str(int(value)))

    def set_placeholder(self, text: str) -> None:
        """What empty text stands for; shown only while the field is empty."""
        if self.line.placeholderText() != text:
            self.line.setPlaceholderText(text)


class ChoiceField(Field):
    """One of `options`, shown by its label (the option itself if none); `tips`: a tooltip for each option."""

    def __init__(self, tip: str, options: Sequence[str], labels: dict[str, str] | None = None,
                 tips: dict[str, str] | None = None):
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(8)
        for opt in options:
            self.combo.addItem((labels or {}).get(opt, opt), opt)
            if tips and opt in tips:
                self.combo.setItemData(self.combo.count() - 1, tips[opt], Qt.ItemDataRole.ToolTipRole)
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
            field.set_error(config_message(err) if mine and err is not None else None)
            hit = hit or mine
        return hit

    def set_row_visible(self, name: str, visible: bool) -> None:
        self.form.setRowVisible(self.fields[name], visible)

    def show_warnings(self, warnings: dict[str, str]) -> None:
        """Warn beside each field whose dotted path is a key of `warnings`; clear the others' warnings."""
        for name, field in self.fields.items():
            field.set_warning(warnings.get(f"{self.prefix}.{name}"))

    def label_of(self, path: str) -> str | None:
        """The label the form shows for a dotted field path (`simulation.sigma` -> "σ"), None if not its own."""
        prefix, _, name = path.partition(".")
        label = self.labels.get(name) if prefix == self.prefix else None
        return label.text() if label is not None else None


def config_message(err: ConfigError) -> str:
    """The reason shown under a field; None is an empty optional field, i.e. the automatic value."""
    got = "auto" if err.value is None else repr(err.value)
    return f"got {got if len(got) <= 40 else got[:37] + '...'}; {err.allowed}"
