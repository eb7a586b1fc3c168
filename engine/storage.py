"""Data files: saving and loading a `Dataset` as .npz or .csv, with atomic writes and strict checks.

Formats
-------
.npz  ``x`` (N, n) float64, optional ``z`` (N, m), and for simulated data the true model: ``truth_json``
      (a 0-d unicode array holding ``{"mixing": Mixing.describe(), "sigma": noise_sigma}``) plus one
      array ``truth/<name>`` per entry of ``Mixing.to_arrays()``. Read with ``allow_pickle=False``:
      object arrays are refused, never unpickled.
.csv  an optional header row, then one row of numbers per point. Columns named x1..xn, z1..zm are split
      into x and z; with no header, or other names, every column is x. Written with the header
      ``x1,...,xn[,z1,...,zm]`` and ``%.17g`` numbers (an exact round trip). The true model is not stored.

Every problem with a file raises `DataFileError`, naming the file, the place (row and column, or npz key)
and the fix; `load_dataset` raises nothing else.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .config import ACTIVATIONS, MIXINGS, SIGMOID_KINDS
from .memory import SHARE, available_bytes, gib
from .mixing import Mixing
from .outputs import atomic_write_bytes, atomic_write_text, atomic_writer  # noqa: F401  (re-exported)
from .simulate import Dataset, TrueModel

PathLike = str | os.PathLike[str]

SUFFIXES = (".npz", ".csv")
CSV_MEMORY_FACTOR = 200  # a CSV takes up to this many times its size in memory while it is parsed (one column)
TRUTH_PREFIX = "truth/"

# What zipfile / numpy may raise on a damaged archive. Only the archive-reading step is guarded by this.
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    ValueError,
    OSError,
    EOFError,
    KeyError,
    IndexError,
    OverflowError,
    NotImplementedError,  # an unknown compression method
    RuntimeError,  # e.g. "File is encrypted"
    MemoryError,
    SyntaxError,  # a .npy header that is not a Python literal
    tokenize.TokenError,  # ... or not even Python tokens
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_CSV_COLUMN = re.compile(r"([xz])([1-9][0-9]*)", re.IGNORECASE)


class DataFileError(ValueError):
    """A data file that cannot be read or written: the file, where in it, what is wrong, and the fix.

    ``str(err)`` reads e.g. ``data.csv: row 12, column 3: 'abc' is not a number; every cell must be
    numeric``.
    """

    def __init__(self, file: PathLike, problem: str, fix: str, where: str = ""):
        self.file = str(file)
        self.problem = problem
        self.fix = fix
        self.where = where
        place = f"{self.file}: {where}: " if where else f"{self.file}: "
        super().__init__(f"{place}{problem}; {fix}")

    def __reduce__(self):
        return (type(self), (self.file, self.problem, self.fix, self.where))


# ---------------------------------------------------------------------------------------------- checks


def _suffix(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        what = f"unknown file type {suffix!r}" if suffix else "no file extension"
        raise DataFileError(path, what, f"use one of {', '.join(SUFFIXES)}")
    return suffix


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _first_nonfinite(arr: np.ndarray) -> tuple[int, int, str] | None:
    """(row, column, 'NaN' | 'inf' | '-inf') of the first non-finite entry of a 2-D array, 0-based."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    i, j = np.unravel_index(int(np.argmax(bad)), arr.shape)
    v = float(arr[i, j])
    kind = "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return int(i), int(j), kind


_FINITE_FIX = "every value must be finite (remove or fill in missing values)"


def _as_matrix(file: PathLike, label: str, arr: np.ndarray, *, allow_1d: bool) -> np.ndarray:
    """Check that `arr` is a finite numeric (N, k) array with N, k >= 1; return it as float64."""
    what = "an (N, m) float array" if "z" in label else "an (N, n) float array"
    if arr.dtype.kind not in "iuf":
        raise DataFileError(file, f"dtype {arr.dtype} is not numeric", f"expected {what}", label)
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise DataFileError(file, f"{arr.ndim}-D array of shape {arr.shape}", f"expected {what}", label)
    if arr.shape[0] < 1:
        raise DataFileError(file, f"no rows (shape {arr.shape})", "the file must hold at least one point",
                            label)
    if arr.shape[1] < 1:
        raise DataFileError(file, f"no columns (shape {arr.shape})", f"expected {what}", label)
    out = np.ascontiguousarray(arr, dtype=np.float64)
    bad = _first_nonfinite(out)
    if bad is not None:
        i, j, kind = bad
        raise DataFileError(file, f"row {i + 1}, column {j + 1} is {kind} (0-based [{i}, {j}])", _FINITE_FIX,
                            label)
    return out


def _check_truth_fits(file: PathLike, truth: TrueModel, x: np.ndarray, z: np.ndarray | None) -> None:
    if truth.n != x.shape[1]:
        raise DataFileError(file, f"the true model has n={truth.n} outputs but x has {x.shape[1]} columns",
                            "x and the true model must agree; re-save the dataset", "true model")
    if z is not None and truth.m != z.shape[1]:
        raise DataFileError(file, f"the true model has m={truth.m} latents but z has {z.shape[1]} columns",
                            "z and the true model must agree; re-save the dataset", "true model")


def _check_mixing_desc(file: PathLike, desc: dict[str, Any]) -> None:
    """Validate the JSON description of a mixing before `Mixing.from_arrays` uses it."""

    def bad(field: str, value: Any, allowed: str) -> DataFileError:
        return DataFileError(file, f"mixing.{field}: got {value!r}", allowed, "key 'truth_json'")

    family = desc.get("family")
    if family not in MIXINGS:
        raise bad("family", family, f"expected one of {', '.join(MIXINGS)}")
    for dim in ("n", "m"):
        if not _is_int(desc.get(dim)) or desc[dim] < 1:
            raise bad(dim, desc.get(dim), "expected a positive integer")
    options = desc.get("options", {})
    if not isinstance(options, dict):
        raise bad("options", options, "expected a JSON object")
    ranges: dict[str, tuple[int, int]] = {}
    choices: dict[str, tuple[str, ...]] = {}
    if family == "polynomial":
        ranges["degree"] = (1, 9)
    elif family == "sigmoid":
        choices["sigmoid_kind"] = SIGMOID_KINDS
    elif family == "mlp":
        ranges.update(depth=(1, 8), width=(1, 1024))
        choices["activation"] = ACTIVATIONS
    for key, (lo, hi) in ranges.items():
        v = options.get(key)
        if not _is_int(v) or not lo <= v <= hi:
            raise bad(f"options.{key}", v, f"expected an integer from {lo} to {hi}")
    for key, allowed in choices.items():
        if options.get(key) not in allowed:
            raise bad(f"options.{key}", options.get(key), f"expected one of {', '.join(allowed)}")


def _truth_from_arrays(file: PathLike, doc_arr: np.ndarray, params: dict[str, np.ndarray]) -> TrueModel:
    """Rebuild the TrueModel from the `truth_json` array and the `truth/<name>` arrays."""
    where = "key 'truth_json'"
    fix = 'expected a 0-d unicode string holding {"mixing": {...}, "sigma": ...} as JSON'
    if doc_arr.ndim != 0 or doc_arr.dtype.kind != "U":
        raise DataFileError(file, f"dtype {doc_arr.dtype}, shape {doc_arr.shape}", fix, where)
    try:
        doc = json.loads(str(doc_arr[()]))
    except (ValueError, RecursionError) as exc:
        raise DataFileError(file, f"not valid JSON ({exc})", fix, where) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("mixing"), dict):
        raise DataFileError(file, "no 'mixing' object", fix, where)
    sigma = doc.get("sigma")
    if not _is_real(sigma) or sigma <= 0:
        raise DataFileError(file, f"sigma: got {sigma!r}", "expected a positive finite number", where)
    _check_mixing_desc(file, doc["mixing"])
    for name, arr in params.items():
        if arr.dtype.kind not in "iuf":
            raise DataFileError(file, f"dtype {arr.dtype} is not numeric", "expected a float array",
                                f"key '{TRUTH_PREFIX}{name}'")
    try:
        mixing = Mixing.from_arrays(doc["mixing"], params)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFileError(file, str(exc), "the true model's arrays do not match truth_json; re-save it",
                            "true model") from None
    return TrueModel(mixing, float(sigma))


# ------------------------------------------------------------------------------------------------- save


def save_dataset(path: PathLike, data: Dataset) -> None:
    """Write `data` to `path` (.npz or .csv, by suffix) atomically; see the module docstring for formats.

    The data are checked first (finite 2-D x, z with the same rows, a matching true model), so a file that
    `load_dataset` would refuse is never written. A .csv file keeps x and z but not the true model.
    """
    suffix = _suffix(path)
    x = _as_matrix(path, "x", np.asarray(data.x), allow_1d=False)
    z = None if data.z is None else _as_matrix(path, "z", np.asarray(data.z), allow_1d=False)
    if z is not None and z.shape[0] != x.shape[0]:
        raise DataFileError(path, f"z has {z.shape[0]} rows but x has {x.shape[0]}",
                            "x and z must have one row per point", "z")
    if suffix == ".csv":  # x's own names only without z (a header mixing names and z1.. reads as all x)
        names = list(data.names) if z is None else [f"x{i + 1}" for i in range(x.shape[1])]
        if z is not None:
            names += [f"z{i + 1}" for i in range(z.shape[1])]
        table = x if z is None else np.hstack([x, z])
        with atomic_writer(path, "w") as f:
            f.write(",".join(names) + "\n")
            np.savetxt(f, table, fmt="%.17g", delimiter=",", newline="\n")
        return
    arrays: dict[str, np.ndarray] = {"x": x}
    if z is not None:
        arrays["z"] = z
    if data.columns is not None:
        arrays["columns"] = np.array([str(c)[:MAX_NAME] for c in data.columns])
    if data.truth is not None:
        _check_truth_fits(path, data.truth, x, z)
        try:
            doc = json.dumps({"mixing": data.truth.mixing.describe(), "sigma": float(data.truth.noise_sigma)})
        except (TypeError, ValueError) as exc:
            raise DataFileError(path, f"cannot encode as JSON ({exc})",
                                "mixing options must be plain JSON values", "true model") from None
        arrays["truth_json"] = np.array(doc)
        for name, arr in data.truth.mixing.to_arrays().items():
            arrays[f"{TRUTH_PREFIX}{name}"] = np.ascontiguousarray(arr, dtype=np.float64)
    with atomic_writer(path, "wb") as f:
        np.savez(f, **arrays)


# ------------------------------------------------------------------------------------------------- load


def unreadable(path: PathLike, max_bytes: int | None = None) -> str | None:
    """Why `path` cannot be read as an input file, or None. A FIFO, device or socket (or a link to one) is
    refused before any read, which could block or never end; so is a file over `max_bytes`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, device or socket)"
    if max_bytes is not None and st.st_size > max_bytes:
        return f"{gib(st.st_size)}, more than the {gib(max_bytes)} that fit in memory here"
    return None


def _read_head(path: PathLike, size: int | None) -> bytes:
    """The first `size` bytes of the file (all of it for None, within what memory allows), with file-system
    errors as DataFileError."""
    problem = unreadable(path, None if size is not None else available_bytes() // CSV_MEMORY_FACTOR)
    if problem:
        raise DataFileError(path, problem, "give a .npz or .csv data file (check the path)")
    try:
        with open(path, "rb") as f:
            return f.read() if size is None else f.read(size)
    except OSError as exc:
        raise DataFileError(path, f"cannot read the file ({exc.strerror or exc})",
                            "check that it exists and is readable") from None


def load_dataset(path: PathLike) -> Dataset:
    """Read a Dataset from a .npz or .csv file; raises DataFileError (only) for any problem with the file."""
    suffix = _suffix(path)
    return _load_npz(path) if suffix == ".npz" else _load_csv(path)


def _read_npz_member(file: PathLike, npz: Any, key: str) -> np.ndarray:
    """One array of an open NpzFile, checking its .npy header before numpy allocates or unpickles."""
    member = f"{key}.npy" if f"{key}.npy" in npz.zip.namelist() else key
    info = npz.zip.getinfo(member)
    with npz.zip.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataFileError(file, f".npy format version {version} is not supported",
                                "re-save it with numpy.savez", f"key {key!r}")
        offset = f.tell()
    if dtype.hasobject:
        raise DataFileError(file, f"holds Python objects (dtype {dtype}); refusing to unpickle",
                            "save plain numeric arrays (float64), not object arrays", f"key {key!r}")
    expected = math.prod(shape) * dtype.itemsize
    if 8 * math.prod(shape) > SHARE * available_bytes() / 2:  # read, then converted to float64
        raise DataFileError(file, f"header asks for shape {shape} ({gib(8 * math.prod(shape))} as float64), more "
                            "than fits in memory here", "use a smaller data set or a machine with more memory",
                            f"key {key!r}")
    if expected != info.file_size - offset:
        raise DataFileError(file, f"truncated or corrupt: header says shape {shape} of {dtype} "
                            f"({expected} bytes) but {info.file_size - offset} bytes follow",
                            "re-save it with numpy.savez or save_dataset", f"key {key!r}")
    return np.asarray(npz[key])


def _load_npz(path: PathLike) -> Dataset:
    head = _read_head(path, 8)
    if not head:
        raise DataFileError(path, "file is empty", "expected an .npz archive written by numpy.savez")
    if head.startswith(_NPY_MAGIC):
        raise DataFileError(path, "a single .npy array, not an .npz archive",
                            "save with numpy.savez(path, x=...) or save_dataset")
    if not head.startswith(_ZIP_MAGICS):
        raise DataFileError(path, "not an .npz archive (no zip signature)",
                            "expected a file written by numpy.savez or save_dataset")
    try:
        with np.load(path, allow_pickle=False) as npz:
            wanted = [k for k in npz.files if k in ("x", "z", "truth_json", "columns") or k.startswith(TRUTH_PREFIX)]
            arrays = {k: _read_npz_member(path, npz, k) for k in wanted}
            found = list(npz.files)
    except DataFileError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise DataFileError(path, f"the archive is truncated or corrupt ({type(exc).__name__}: {exc})",
                            "re-save it with numpy.savez or save_dataset") from None
    if "x" not in arrays:
        keys = ", ".join(repr(k) for k in found[:10]) or "none"
        raise DataFileError(path, "key 'x' missing",
                            f"expected an (N, n) float array under 'x' (keys found: {keys})")
    x = _as_matrix(path, "key 'x'", arrays["x"], allow_1d=True)
    z = None
    if "z" in arrays:
        z = _as_matrix(path, "key 'z'", arrays["z"], allow_1d=False)
        if z.shape[0] != x.shape[0]:
            raise DataFileError(path, f"{z.shape[0]} rows but x has {x.shape[0]}",
                                "z must have one row per point of x", "key 'z'")
    columns = None
    if "columns" in arrays:
        c = arrays["columns"]
        if c.dtype.kind != "U" or c.ndim != 1 or len(c) != x.shape[1]:
            raise DataFileError(path, f"dtype {c.dtype}, shape {c.shape}", f"expected {x.shape[1]} column names "
                                "(a 1-D string array, one per column of x)", "key 'columns'")
        columns = tuple(str(v)[:MAX_NAME] for v in c)
    truth = None
    if "truth_json" in arrays:
        params = {k[len(TRUTH_PREFIX):]: v for k, v in arrays.items() if k.startswith(TRUTH_PREFIX)}
        truth = _truth_from_arrays(path, arrays["truth_json"], params)
        _check_truth_fits(path, truth, x, z)
    return Dataset(x, z, truth, columns)


def _cell_error(file: PathLike, line: int, col: int, cell: str) -> DataFileError:
    where = f"row {line}, column {col}"
    if not cell.strip():
        return DataFileError(file, "empty cell", "every cell must be numeric", where)
    shown = cell if len(cell) <= 40 else cell[:37] + "..."
    fix = "every cell must be numeric"
    if any(sep in cell.strip() for sep in (";", "\t", " ")):
        fix += " and columns must be separated by commas"
    return DataFileError(file, f"{shown!r} is not a number", fix, where)


def _parse_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


MAX_NAME = 40  # characters of a column name kept


def _split_header(file: PathLike, header: list[str], line: int) -> tuple[list[int], list[int], tuple[str, ...] | None]:
    """Column indices of x and of z, and x's names: split by x1..xn / z1..zm names (no names kept), else every
    column is x, named by the header."""
    names = [h.strip() for h in header]
    matches = [_CSV_COLUMN.fullmatch(h) for h in names]
    if not all(matches):
        kept = tuple((h[:MAX_NAME] or f"x{j + 1}") for j, h in enumerate(names))
        return list(range(len(names))), [], kept
    xs = [(int(m[2]), j) for j, m in enumerate(matches) if m is not None and m[1].lower() == "x"]
    zs = [(int(m[2]), j) for j, m in enumerate(matches) if m is not None and m[1].lower() == "z"]
    in_order = [k for k, _ in xs] == list(range(1, len(xs) + 1)) and [k for k, _ in zs] == list(
        range(1, len(zs) + 1))
    if not xs or not in_order:
        shown = ",".join(names)
        raise DataFileError(file, f"columns {shown if len(shown) <= 80 else shown[:77] + '...'} are not x1..xn "
                            "followed by z1..zm", "name the columns x1..xn[,z1..zm] (other names read every column "
                            "as x)", f"row {line} (header)")
    return [j for _, j in xs], [j for _, j in zs], None


def _load_csv(path: PathLike) -> Dataset:
    raw = _read_head(path, None)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(path, f"not UTF-8 text (byte {exc.start})",
                            "save it as a plain UTF-8 CSV file of numbers") from None
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DataFileError(path, f"not valid CSV ({exc})", "cells must be plain numbers separated by commas",
                            f"row {reader.line_num}") from None
    if not rows:
        raise DataFileError(path, "file is empty", "expected rows of comma-separated numbers")
    first_line, first = rows[0]
    text_cells = [j for j, c in enumerate(first) if _parse_float(c) is None]
    has_header = bool(text_cells)
    if has_header and len(text_cells) < len(first):  # a header names every column; a data row is all numbers
        j = text_cells[0]
        shown = first[j] if len(first[j]) <= 40 else first[j][:37] + "..."
        raise DataFileError(path, f"{shown!r} is not a number, but other cells of the first row are",
                            "a header row names every column (e.g. x1,x2); a data row holds only numbers",
                            f"row {first_line}, column {j + 1}")
    x_cols, z_cols, columns = (_split_header(path, first, first_line) if has_header
                               else (list(range(len(first))), [], None))
    data_rows = rows[1:] if has_header else rows
    if not data_rows:
        raise DataFileError(path, "no data rows after the header", "add at least one row of numbers")
    width = len(first)
    reference = "the header" if has_header else f"row {first_line}"
    values: list[list[float]] = []
    for line, row in data_rows:
        if len(row) != width:
            raise DataFileError(path, f"{len(row)} cells, but {reference} has {width}",
                                "every row must have the same number of columns", f"row {line}")
        try:
            values.append([float(c) for c in row])
        except ValueError:
            col = next(j for j, c in enumerate(row) if _parse_float(c) is None)
            raise _cell_error(path, line, col + 1, row[col]) from None
    table = np.array(values, dtype=np.float64)
    bad = _first_nonfinite(table)
    if bad is not None:
        i, j, kind = bad
        raise DataFileError(path, f"row {data_rows[i][0]}, column {j + 1} is {kind}", _FINITE_FIX)
    x = np.ascontiguousarray(table[:, x_cols])
    z = np.ascontiguousarray(table[:, z_cols]) if z_cols else None
    return Dataset(x, z, None, columns)
