"""The results table: one row per run of the session (trained here or opened from a folder), with a
checkbox that overlays the run's curves in the training-curve plot."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

from ..session import RunRecord, Session

Index = QModelIndex | QPersistentModelIndex
SORT_ROLE = Qt.ItemDataRole.UserRole


def _num(v: Any) -> float:
    """A sortable number (NaN for missing values)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return math.nan


def _fmt(v: Any, digits: int = 3) -> str:
    x = _num(v)
    return "—" if math.isnan(x) else f"{x:.{digits}f}"


def _pm(mean: Any, se: Any) -> str:
    if math.isnan(_num(mean)):
        return "—"
    return f"{_num(mean):.3f} ± {_num(se):.3f}" if not math.isnan(_num(se)) else f"{_num(mean):.3f}"


def _sigma(metrics: dict[str, Any]) -> tuple[str, float]:
    s = metrics.get("sigma")
    if s is None:
        return ("not identified" if metrics.get("sigma_identified") is False else "—"), math.nan
    if isinstance(s, list):
        return ", ".join(f"{v:.3g}" for v in s[:3]) + (" …" if len(s) > 3 else ""), float(s[0])
    floor = " (at floor)" if metrics.get("sigma_at_floor") else ""
    return f"{s:.4g}{floor}", float(s)


def _data(r: RunRecord) -> tuple[str, str]:
    if r.data_label:
        return r.data_label, r.data_summary
    sim = r.config.simulation  # a run opened from a folder: the simulation settings it was saved with
    return f"{sim.mixing} n={sim.n} m={sim.m}", r.data_summary


def scoring_note(metrics: dict[str, Any]) -> str:
    """Why a run has no held-out metrics, in a few words ('' when it was scored)."""
    if metrics.get("scoring_failed"):
        return "scoring failed"
    if metrics.get("scoring_stopped"):
        return "scoring stopped"
    if metrics.get("scored") is False or not metrics:
        return "not scored"
    return ""


def _scoring_detail(metrics: dict[str, Any]) -> str:
    """The scoring's own message: the reason it failed, or its first warning."""
    failed = metrics.get("scoring_failed")
    if failed:
        return f"the scoring failed: {failed}"
    warnings = metrics.get("warnings") or []
    return str(warnings[0]) if warnings and scoring_note(metrics) else ""


def _heldout(r: RunRecord) -> tuple[str, float]:
    note = scoring_note(r.metrics)
    if note and math.isnan(_num(r.metrics.get("heldout_loglik"))):
        return note, math.nan
    value = r.metrics.get("heldout_loglik")
    return _pm(value, r.metrics.get("heldout_loglik_se")), _num(value)


def _status(r: RunRecord) -> tuple[str, str]:
    note = scoring_note(r.metrics)
    text = f"{r.status}, {note}" if note else r.status
    return text, text


# header, tooltip, (record -> (text, sort value))
Column = tuple[str, str, Callable[[RunRecord], tuple[str, Any]]]
COLUMNS: list[Column] = [
    ("overlay", "Tick to overlay this run's curves in the training-curve plot", lambda r: ("", r.run_id)),
    ("run", "Run number in this session", lambda r: (f"#{r.run_id}", r.run_id)),
    ("estimator", "The objective that was maximised", lambda r: (r.estimator, r.estimator)),
    ("data", "The data the run was fitted on", lambda r: (_data(r)[0], _data(r)[0])),
    ("held-out log-lik", "Average log p(x) of held-out points under the fit, nats/point ± standard error "
     "(the one evaluator, for every estimator)", _heldout),
    ("gap to truth", "True model's held-out log-lik minus the fit's (≥ 0 up to noise; 0 is perfect)",
     lambda r: (_pm(r.metrics.get("gap_to_truth"), r.metrics.get("gap_to_truth_se")),
                _num(r.metrics.get("gap_to_truth")))),
    ("σ", "Fitted noise σ (true σ in the tooltip of the data column)",
     lambda r: _sigma(r.metrics)),
    ("Procrustes R²", "Inferred latents vs true z after the best rotation (1 is perfect)",
     lambda r: (_fmt(r.metrics.get("procrustes_r2")), _num(r.metrics.get("procrustes_r2")))),
    ("MCC", "Mean correlation of matched latent coordinates (1 is perfect)",
     lambda r: (_fmt(r.metrics.get("mcc")), _num(r.metrics.get("mcc")))),
    ("time (s)", "Training wall time", lambda r: (_fmt(r.metrics.get("wall_time"), 1),
                                                  _num(r.metrics.get("wall_time")))),
    ("steps", "Optimiser steps done", lambda r: (str(r.metrics.get("steps", "—")), _num(r.metrics.get("steps")))),
    ("status", "converged, cap_reached (the step cap or the time limit came first), stopped or failed; and "
     "whether the held-out scoring was stopped or "
     "failed (the reason in the tooltip)", _status),
]
CSV_FIELDS = ("run", "estimator", "mixing", "n", "m", "samples", "heldout_loglik", "heldout_loglik_se",
              "true_heldout_loglik", "gap_to_truth", "gap_to_truth_se", "sigma", "true_sigma", "procrustes_r2",
              "mcc", "heldout_elbo", "ppca_heldout_loglik", "wall_time", "steps", "status", "message")


class ResultsModel(QAbstractTableModel):
    """The session's records as a table: rows appear as the session adds them."""

    overlay_toggled = Signal(int, bool)

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        session.subscribe(self._on_session)

    @property
    def records(self) -> list[RunRecord]:
        return self.session.records

    def _on_session(self, event: str, value: Any) -> None:
        if event == "record_adding":
            row = len(self.records)
            self.beginInsertRows(QModelIndex(), row, row)
        elif event == "record":
            self.endInsertRows()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section][0]
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section][1]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self.records[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[col][2](r)[0]
        if role == SORT_ROLE:
            return COLUMNS[col][2](r)[1]
        if col == 0 and role == Qt.ItemDataRole.CheckStateRole:
            return Qt.CheckState.Checked if r.checked else Qt.CheckState.Unchecked
        if col == 0 and role == Qt.ItemDataRole.DecorationRole:
            return QColor(r.colour)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == 3:
                true_sigma = r.metrics.get("true_sigma")
                return _data(r)[1] + (f"; true σ = {true_sigma:g}" if isinstance(true_sigma, float) else "")
            if col in (4, 11):
                detail = _scoring_detail(r.metrics)
                return "\n".join(t for t in ((r.message if col == 11 else ""), detail) if t) or None
            if col == 6:
                return r.metrics.get("sigma_note") or ""
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        return base | Qt.ItemFlag.ItemIsUserCheckable if index.column() == 0 else base

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if index.column() != 0 or role != Qt.ItemDataRole.CheckStateRole:
            return False
        r = self.records[index.row()]
        r.checked = Qt.CheckState(value) == Qt.CheckState.Checked
        self.dataChanged.emit(index, index, [role])
        self.overlay_toggled.emit(r.run_id, r.checked)
        return True

    def set_checked(self, run_id: int, checked: bool) -> None:
        for row, r in enumerate(self.records):
            if r.run_id == run_id:
                self.setData(self.index(row, 0), Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked,
                             Qt.ItemDataRole.CheckStateRole)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in self.records:
            sim = r.config.simulation
            row = {k: r.metrics.get(k) for k in CSV_FIELDS}
            row.update(run=r.run_id, estimator=r.estimator, mixing=sim.mixing, n=sim.n, m=sim.m,
                       samples=sim.samples, status=r.status, message=r.message)
            if r.imported_from:  # not the simulation settings: the file it was fitted on
                row.update(mixing=f"imported:{r.imported_from}", n=r.decoder.n, m=None, samples=None)
            note = scoring_note(r.metrics)
            if note:
                row["message"] = f"{r.message}; {note}" if r.message else note
            if isinstance(row["sigma"], list):
                row["sigma"] = " ".join(f"{v:.6g}" for v in row["sigma"])
            w.writerow({k: "" if v is None else v for k, v in row.items()})
        return buf.getvalue()


class ResultsTable(QTableView):
    """Sortable view of the results; selecting a row makes that run the one sampled, saved, inspected."""

    run_selected = Signal(int)

    def __init__(self, model: ResultsModel):
        super().__init__()
        self.results = model
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.proxy.setSortRole(SORT_ROLE)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setAlternatingRowColors(True)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self.selectionModel().selectionChanged.connect(self._on_selection)

    def _on_selection(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            source = self.proxy.mapToSource(rows[0])
            self.run_selected.emit(self.results.records[source.row()].run_id)

    def select_run(self, run_id: int) -> None:
        for row, r in enumerate(self.results.records):
            if r.run_id == run_id:
                self.selectRow(self.proxy.mapFromSource(self.results.index(row, 0)).row())
