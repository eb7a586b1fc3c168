"""Data files: round trips, one clear DataFileError per kind of bad file, atomic writes, fuzzing."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PickleTrap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import MIXINGS, SimulationConfig
from engine.simulate import Dataset, simulate
from engine.storage import (
    DataFileError,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    load_dataset,
    save_dataset,
)

# ------------------------------------------------------------------------------------------- helpers


def _small(mixing: str = "polynomial", **kw) -> Dataset:
    kw = {"samples": 40, "seed": 7, **kw}
    return simulate(SimulationConfig(mixing=mixing, n=3, m=2, **kw))


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def _expect_error(path: Path, *words: str) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert path.name in msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return info.value


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()




# ----------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("mixing", MIXINGS)
def test_npz_round_trip_is_bitwise_and_rebuilds_truth(tmp_path, mixing):
    data = _small(mixing)
    path = tmp_path / "sub" / "data.npz"
    save_dataset(path, data)
    back = load_dataset(path)
    assert back.x.dtype == np.float64 and back.x.tobytes() == data.x.tobytes()
    assert back.z is not None and back.z.tobytes() == data.z.tobytes()
    assert back.truth is not None
    assert back.truth.noise_sigma == data.truth.noise_sigma
    assert back.truth.mixing.describe() == data.truth.mixing.describe()
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(back.truth.mean(z), data.truth.mean(z))
    assert back.truth.sigma_identified == data.truth.sigma_identified
    assert [p.name for p in path.parent.iterdir()] == ["data.npz"]


@pytest.mark.parametrize("mixing", MIXINGS)
def test_csv_round_trip(tmp_path, mixing):
    data = _small(mixing)
    path = tmp_path / "data.csv"
    save_dataset(path, data)
    assert path.read_text().splitlines()[0] == "x1,x2,x3,z1,z2"
    back = load_dataset(path)
    np.testing.assert_allclose(back.x, data.x, rtol=1e-15, atol=0)
    np.testing.assert_allclose(back.z, data.z, rtol=1e-15, atol=0)
    assert back.truth is None


def test_x_only_round_trips(tmp_path):
    x = np.array([[1.0, -0.0], [1e-300, 1e300], [np.pi, -np.e]])
    for name in ("a.npz", "a.csv"):
        save_dataset(tmp_path / name, Dataset(x))
        back = load_dataset(tmp_path / name)
        assert back.z is None and back.truth is None
        assert back.x.tobytes() == x.tobytes()


def test_csv_headers_and_layouts(tmp_path):
    plain = load_dataset(_write(tmp_path / "plain.csv", "1,2\r\n3,4\r\n\r\n"))
    np.testing.assert_array_equal(plain.x, [[1, 2], [3, 4]])
    assert plain.z is None
    named = load_dataset(_write(tmp_path / "named.csv", "\ufeffheight,weight\n1,2\n3,4\n"))
    np.testing.assert_array_equal(named.x, [[1, 2], [3, 4]])
    assert named.z is None
    split = load_dataset(_write(tmp_path / "split.csv", "z1,x1,X2\n1,2,3\n4,5,6\n"))
    np.testing.assert_array_equal(split.x, [[2, 3], [5, 6]])
    np.testing.assert_array_equal(split.z, [[1], [4]])
    _expect_error(_write(tmp_path / "bad.csv", "x1,x3\n1,2\n"), "row 1", "x1..xn")


def test_npz_1d_x_and_integer_x_are_accepted(tmp_path):
    back = load_dataset(_write(tmp_path / "a.npz", _npz_bytes(x=np.arange(5))))
    assert back.x.shape == (5, 1) and back.x.dtype == np.float64


def test_save_refuses_data_it_could_not_read_back(tmp_path):
    x = np.ones((4, 2))
    x[2, 1] = np.nan
    with pytest.raises(DataFileError, match="row 3, column 2 is NaN"):
        save_dataset(tmp_path / "a.npz", Dataset(x))
    with pytest.raises(DataFileError, match="rows"):
        save_dataset(tmp_path / "a.npz", Dataset(np.ones((4, 2)), np.ones((3, 1))))
    with pytest.raises(DataFileError, match=r"\.txt.*\.npz, \.csv"):
        save_dataset(tmp_path / "a.txt", Dataset(np.ones((4, 2))))
    assert list(tmp_path.iterdir()) == []


def test_error_message_and_pickling():
    err = DataFileError("data.csv", "'abc' is not a number", "every cell must be numeric", "row 12, column 3")
    assert str(err) == "data.csv: row 12, column 3: 'abc' is not a number; every cell must be numeric"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.where == "row 12, column 3"
    assert isinstance(err, ValueError)


# ------------------------------------------------------------------------------------------- bad files

_CSV_CASES = [
    ("nan.csv", "x1,x2\n1,2\n3,nan\n", ["row 3, column 2 is NaN"]),
    ("inf.csv", "1,2\n3,-inf\n", ["row 2, column 2 is -inf"]),
    ("overflow.csv", "1,2\n3,1e999\n", ["row 2, column 2 is inf"]),
    ("text.csv", "x1,x2\n1,2\n3,abc\n", ["row 3, column 2", "'abc' is not a number"]),
    ("semicolon.csv", "a;b\n1;2\n", ["row 2, column 1", "separated by commas"]),
    ("emptycell.csv", "1,2\n3,\n", ["row 2, column 2", "empty cell"]),
    ("ragged.csv", "1,2\n3,4\n5,6,7\n", ["row 3", "3 cells", "row 1 has 2"]),
    ("raggedhdr.csv", "x1,x2\n\n1\n", ["row 3", "1 cells", "the header has 2"]),
    ("empty.csv", "", ["file is empty"]),
    ("blank.csv", "\n  \n\n", ["file is empty"]),
    ("header.csv", "x1,x2,z1\n", ["no data rows"]),
    ("latin1.csv", b"x1\n\xe9\n", ["not UTF-8"]),
]


@pytest.mark.parametrize(("name", "content", "words"), _CSV_CASES, ids=[c[0] for c in _CSV_CASES])
def test_bad_csv(tmp_path, name, content, words):
    _expect_error(_write(tmp_path / name, content), *words)


def _nan_x():
    x = np.ones((6, 3))
    x[4, 1] = np.nan
    return x


_NPZ_CASES = [
    ("nokey.npz", lambda: _npz_bytes(data=np.ones((3, 2))), ["key 'x' missing", "'data'"]),
    ("threed.npz", lambda: _npz_bytes(x=np.ones((2, 3, 4))), ["key 'x'", "3-D", "(N, n)"]),
    ("scalar.npz", lambda: _npz_bytes(x=np.float64(1.0)), ["key 'x'", "0-D"]),
    ("norows.npz", lambda: _npz_bytes(x=np.ones((0, 3))), ["key 'x'", "no rows"]),
    ("strings.npz", lambda: _npz_bytes(x=np.array([["1", "2"]])), ["key 'x'", "not numeric"]),
    ("complex.npz", lambda: _npz_bytes(x=np.ones((2, 2), complex)), ["key 'x'", "not numeric"]),
    ("nan.npz", lambda: _npz_bytes(x=_nan_x()), ["key 'x'", "row 5, column 2 is NaN"]),
    ("inf.npz", lambda: _npz_bytes(x=np.ones((3, 2)), z=np.full((3, 1), np.inf)), ["key 'z'", "is inf"]),
    ("zrows.npz", lambda: _npz_bytes(x=np.ones((5, 2)), z=np.ones((4, 1))), ["key 'z'", "4 rows", "x has 5"]),
    ("z1d.npz", lambda: _npz_bytes(x=np.ones((5, 2)), z=np.ones(5)), ["key 'z'", "1-D"]),
    ("empty.npz", lambda: b"", ["file is empty"]),
    ("npy.npz", lambda: _npy_bytes(np.ones(3)), ["single .npy"]),
    ("text.npz", lambda: b"x1,x2\n1,2\n", ["not an .npz archive"]),
    ("trunc.npz", lambda: _npz_bytes(x=np.ones((50, 2)))[:300], ["truncated or corrupt"]),
]


@pytest.mark.parametrize(("name", "make", "words"), _NPZ_CASES, ids=[c[0] for c in _NPZ_CASES])
def test_bad_npz(tmp_path, name, make, words):
    _expect_error(_write(tmp_path / name, make()), *words)


def test_object_array_is_refused_not_unpickled(tmp_path, unpickled):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([[PickleTrap(), 1.0]], dtype=object))
    _expect_error(path, "key 'x'", "object", "refusing to unpickle")
    assert unpickled == []
    # also when the object array sits under a key that the loader only reads for the true model
    np.savez(path, x=np.ones((2, 1)), **{"truth/A": np.array([PickleTrap()], dtype=object)})
    _expect_error(path, "truth/A", "refusing to unpickle")
    assert unpickled == []


def test_bad_truth(tmp_path):
    data = _small("linear")
    good = tmp_path / "good.npz"
    save_dataset(good, data)
    with np.load(good) as npz:
        arrays = {k: npz[k] for k in npz.files}

    def variant(name: str, **changes) -> Path:
        new = {**arrays, **changes}
        new = {k: v for k, v in new.items() if v is not None}
        return _write(tmp_path / name, _npz_bytes(**new))

    doc = json.loads(str(arrays["truth_json"]))
    _expect_error(variant("shape.npz", **{"truth/A": np.ones((3, 3))}), "true model", "truth/A", "shape")
    _expect_error(variant("missing.npz", **{"truth/b": None}), "true model", "truth/b", "missing")
    _expect_error(variant("json.npz", truth_json=np.array("{not json")), "truth_json", "not valid JSON")
    _expect_error(variant("bytes.npz", truth_json=np.array(b"{}")), "truth_json", "unicode")
    bad_family = {**doc, "mixing": {**doc["mixing"], "family": "spline"}}
    _expect_error(variant("fam.npz", truth_json=np.array(json.dumps(bad_family))), "mixing.family", "spline")
    bad_sigma = {**doc, "sigma": -1}
    _expect_error(variant("sigma.npz", truth_json=np.array(json.dumps(bad_sigma))), "sigma", "positive")
    bad_n = {**doc, "mixing": {**doc["mixing"], "n": 2}}
    wide_a = {"truth/A": np.ones((2, 2)), "truth/b": np.ones(2)}
    _expect_error(variant("n.npz", truth_json=np.array(json.dumps(bad_n)), **wide_a), "n=2", "3 columns")


def test_unknown_suffix_and_missing_file(tmp_path):
    _expect_error(_write(tmp_path / "data.txt", "1,2\n"), "'.txt'", ".npz, .csv")
    _expect_error(_write(tmp_path / "data", "1,2\n"), "no file extension")
    _expect_error(tmp_path / "absent.npz", "file not found")
    _expect_error(tmp_path / "absent.csv", "file not found")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataFileError, match=r"dir\.csv"):
        load_dataset(tmp_path / "dir.csv")


# ------------------------------------------------------------------------------------------ atomic write


def test_atomic_write_helpers(tmp_path):
    path = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(path, "héllo\r\n")
    assert path.read_bytes() == "héllo\r\n".encode()
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"new")
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]
    with pytest.raises(ValueError, match="mode"), atomic_writer(path, "a"):
        pass


def test_failed_replace_leaves_original_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    save_dataset(path, _small())
    before = path.read_bytes()

    def broken(*_args, **_kw):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        save_dataset(path, _small(seed=8))
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(tmp_path / "data.csv", "x1\n1\n")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]


def test_failure_mid_write_leaves_original_and_no_temp(tmp_path):
    path = tmp_path / "data.npz"
    save_dataset(path, _small())
    before = path.read_bytes()
    unpicklable = np.array([lambda: 0], dtype=object)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)), atomic_writer(path, "wb") as f:
        np.savez(f, x=np.ones((3, 2)), y=unpicklable)
    with pytest.raises(RuntimeError, match="half way"), atomic_writer(path, "wb") as f:
        f.write(b"partial")
        raise RuntimeError("half way")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"]
    assert load_dataset(path).truth is not None


# ------------------------------------------------------------------------------------- property tests

_FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_or_refuse(name: str, content: bytes | str) -> None:
    """Loading must return a sound Dataset or raise DataFileError; any other exception fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / name, content)
        try:
            data = load_dataset(path)
        except DataFileError as err:
            assert str(err).startswith(str(path))
            return
    assert isinstance(data, Dataset)
    assert data.x.ndim == 2 and data.x.shape[0] >= 1 and data.x.shape[1] >= 1
    assert data.x.dtype == np.float64 and np.isfinite(data.x).all()
    if data.z is not None:
        assert data.z.ndim == 2 and data.z.shape[0] == data.x.shape[0] and np.isfinite(data.z).all()
    if data.truth is not None:
        assert data.truth.n == data.x.shape[1]
        assert data.truth.mean(torch.zeros(1, data.truth.m, dtype=torch.float64)).shape == (1, data.truth.n)


def _valid_npz() -> bytes:
    """A small saved dataset with z and an mlp true model: the seed of the corruption tests."""
    with tempfile.TemporaryDirectory() as tmp:
        save_dataset(Path(tmp) / "v.npz", _small("mlp", samples=5, mlp_depth=1, mlp_width=3))
        return (Path(tmp) / "v.npz").read_bytes()


_VALID_NPZ = _valid_npz()
_CSVISH = st.lists(
    st.lists(st.text(alphabet="0123456789.-+eEnaifxz ,\"'", max_size=6), min_size=1, max_size=4).map(
        ",".join),
    max_size=8,
).map("\n".join)


@_FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from([".csv", ".npz"]))
def test_fuzz_random_bytes(content, suffix):
    _load_or_refuse("f" + suffix, content)


@_FUZZ
@given(content=st.one_of(st.text(max_size=300), _CSVISH), suffix=st.sampled_from([".csv", ".npz"]))
def test_fuzz_random_text(content, suffix):
    _load_or_refuse("f" + suffix, content)


def test_valid_npz_fixture_loads():
    _load_or_refuse("f.npz", _VALID_NPZ)
    with tempfile.TemporaryDirectory() as tmp:
        assert load_dataset(_write(Path(tmp) / "f.npz", _VALID_NPZ)).truth is not None


@_FUZZ
@given(
    cut=st.one_of(st.none(), st.integers(0, len(_VALID_NPZ) - 1)),
    flips=st.lists(st.tuples(st.integers(0, len(_VALID_NPZ) - 1), st.integers(1, 255)), max_size=4),
)
def test_fuzz_corrupted_npz(cut, flips):
    raw = bytearray(_VALID_NPZ)
    for pos, mask in flips:
        raw[pos] ^= mask
    _load_or_refuse("f.npz", bytes(raw[:cut]))


def test_history_csv_round_trips_and_a_bad_file_gives_no_history(tmp_path):
    import math

    from engine.runs import history_csv, load_history

    rows = [{"step": 1.0, "objective": -1.5, "heldout": math.nan}, {"step": 2.0, "objective": -1.25, "heldout": -1.3}]
    (tmp_path / "history.csv").write_text(history_csv(rows), encoding="utf-8")
    back = load_history(tmp_path)
    assert [r["step"] for r in back] == [1.0, 2.0] and back[1]["heldout"] == -1.3 and math.isnan(back[0]["heldout"])
    (tmp_path / "history.csv").write_text("step,objective\n1,abc\n", encoding="utf-8")
    assert load_history(tmp_path) == []
    (tmp_path / "history.csv").unlink()
    assert load_history(tmp_path) == []
    (tmp_path / "history.csv").mkdir()
    assert load_history(tmp_path) == []
