"""Outputs written as one unit (engine/outputs.py): the manifest, the overwrite rule, the lock, and SIGKILL at
every write step of a save leaving the old folder or the new one, never a mix."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.outputs import FAULT_ENV, MANIFEST, OutputError, UnitError, UnitWriter, verify
from engine.runs import RunFileError, load_run, run_files, save_run
from engine.simulate import simulate
from engine.storage import load_dataset, save_dataset
from engine.trainer import train

REPO = Path(__file__).resolve().parent.parent


def _write(target: Path, files: dict[str, bytes], overwrite: bool = False) -> Path:
    with UnitWriter(target, overwrite=overwrite, kind="run") as w:
        return w.write(files)


def test_a_unit_has_a_manifest_of_every_file_and_is_checked_on_load(tmp_path):
    d = _write(tmp_path / "u", {"a.json": b"{}", "sub/b.bin": b"\x00\x01"})
    doc = json.loads((d / MANIFEST).read_text())
    assert set(doc["files"]) == {"a.json", "sub/b.bin"}
    assert doc["files"]["sub/b.bin"]["size"] == 2
    assert verify(d)["kind"] == "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u"]  # no temporary or lock left behind

    (d / "a.json").write_bytes(b"[]")  # same size, other bytes
    with pytest.raises(UnitError, match="SHA-256"):
        verify(d)
    (d / "a.json").write_bytes(b"{}")
    (d / "extra.json").write_bytes(b"1")
    with pytest.raises(UnitError, match=r"extra\.json"):
        verify(d)
    (d / "extra.json").unlink()
    (d / "sub" / "b.bin").unlink()
    with pytest.raises(UnitError, match="missing"):
        verify(d)


def test_existing_outputs_are_replaced_whole_only_with_overwrite(tmp_path):
    target = tmp_path / "run"
    _write(target, {"run.json": b"{}", "encoder.json": b"{}"})
    with pytest.raises(OutputError, match="--overwrite"):
        _write(target, {"run.json": b"{}"})
    _write(target, {"run.json": b'{"new": 1}'}, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json", "run.json"]  # the old encoder is gone
    verify(target)

    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty, {"run.json": b"{}"})  # an empty folder made for it is not "existing"

    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="never replaced"):
        _write(foreign, {"run.json": b"{}"}, overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_out_that_is_a_file_or_under_a_file_is_refused_before_any_work(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        UnitWriter(f, overwrite=True, kind="run").__enter__()
    with pytest.raises(OutputError, match="is a file, not a folder"):
        UnitWriter(f / "run", overwrite=False, kind="run").__enter__()
    with pytest.raises(OutputError, match="is a folder, not a file"):
        UnitWriter(tmp_path, overwrite=True, kind="file").__enter__()


def test_a_second_writer_is_kept_out_by_the_lock(tmp_path):
    target = tmp_path / "run"
    with FileLock(str(tmp_path / ".run.lock")), pytest.raises(OutputError, match="another process"):
        UnitWriter(target, overwrite=False, kind="run").__enter__()
    with UnitWriter(target, overwrite=False, kind="run") as w, \
            pytest.raises(OutputError, match="another process"), UnitWriter(target, overwrite=True, kind="run"):
        w.write({"a": b"1"})
    assert not (tmp_path / ".run.lock").exists()


# ----------------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def two_runs():
    """Two tiny trained runs with different files (a VAE with an encoder, a direct MLE without)."""
    data = simulate(SimulationConfig(mixing="linear", n=2, m=1, sigma=0.3, samples=200, seed=3))
    out = []
    for name in ("vae", "mle-adaptive"):
        cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(8,)), estimator=EstimatorConfig(name=name),
                        training=TrainingConfig(steps=3, batch_size=50, eval_every=3, device="cpu"))
        out.append(train(cfg, data))
    return out


def test_a_run_folder_mixing_two_runs_is_refused(tmp_path, two_runs):
    vae, mle = two_runs
    a = save_run(vae, tmp_path / "a")
    assert load_run(a).encoder is not None
    b = save_run(mle, tmp_path / "b")
    (b / "encoder.json").write_bytes((a / "encoder.json").read_bytes())  # a stale file from another run
    with pytest.raises(RunFileError, match=r"encoder\.json"):
        load_run(b)


def _save_then_die(target: str, result, kill_at: int) -> None:
    os.environ[FAULT_ENV] = str(kill_at)
    save_run(result, target, overwrite=True)
    os._exit(0)  # not killed: every step done


def _contents(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_sigkill_at_every_step_of_a_save_leaves_the_old_run_or_the_new(tmp_path, two_runs):
    old_run, new_run = two_runs
    ctx = multiprocessing.get_context("fork")
    outcomes = set()
    for k in range(1, 30):
        target = tmp_path / f"run{k}"
        save_run(old_run, target)
        old = _contents(target)
        p = ctx.Process(target=_save_then_die, args=(str(target), new_run, k))
        p.start()
        p.join(60)
        killed = p.exitcode == -signal.SIGKILL
        assert p.exitcode in (0, -signal.SIGKILL)
        verify(target)
        now = _contents(target)
        assert now == old or set(now) == set(run_files(new_run)) | {MANIFEST}, k
        outcomes.add("old" if now == old else "new")
        load_run(target)
        if not killed:
            break
    assert outcomes == {"old", "new"} and not killed  # every step was hit, the last save completed


def test_sigkill_while_writing_a_data_file_leaves_the_old_file_or_the_new(tmp_path):
    old = simulate(SimulationConfig(mixing="linear", n=2, m=1, sigma=0.3, samples=50, seed=1))
    new = simulate(SimulationConfig(mixing="linear", n=2, m=1, sigma=0.3, samples=80, seed=2))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen = set()
    for k in (1, 2, 3):
        path = tmp_path / f"d{k}.npz"
        save_dataset(path, old)
        code = (f"import os; os.environ[{FAULT_ENV!r}] = '{k}'\n"
                "from engine.simulate import simulate; from engine.storage import save_dataset\n"
                "from engine.config import SimulationConfig\n"
                "save_dataset(%r, simulate(SimulationConfig(mixing='linear', n=2, m=1, sigma=0.3, samples=80, "
                "seed=2)))" % str(path))
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, timeout=120)
        assert r.returncode in (0, -signal.SIGKILL), r.stderr
        n = len(load_dataset(path))
        assert n in (len(old), len(new))
        seen.add(n)
    assert seen == {len(old), len(new)}
    assert np.array_equal(load_dataset(path).x, new.x)


def test_a_writer_removes_what_killed_writers_left(tmp_path):
    (tmp_path / ".run.tmp-abcd1234").mkdir()  # the names tempfile gives this program's temporaries
    (tmp_path / ".run.tmp-abcd1234" / "run.json").write_text("{}")
    (tmp_path / ".data.npz.x1y2z3w4.tmp").write_text("")
    (tmp_path / ".data.npz.mine.tmp").write_text("a user's file")  # not one of ours: left alone
    (tmp_path / ".other.tmp-abcd1234").mkdir()  # another output's: left alone
    with UnitWriter(tmp_path / "run", overwrite=False, kind="run"):
        pass
    with UnitWriter(tmp_path / "data.npz", overwrite=False, kind="file"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.npz.mine.tmp", ".other.tmp-abcd1234"]


def test_overwrite_never_replaces_a_folder_with_files_named_like_ours(tmp_path):
    """A manifest.json or run.json of someone else's does not make a folder ours."""
    for name, content in (("manifest.json", '{"name": "ext"}'), ("run.json", "{}"), ("compare.json", "[]")):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_text(content)
        (d / "thesis.tex").write_text("precious")
        with pytest.raises(OutputError, match="never replaced"):
            _write(d, {"run.json": b"{}"}, overwrite=True)
        assert (d / "thesis.tex").read_text() == "precious"


def test_a_folder_that_appears_while_a_unit_is_written_keeps_both(tmp_path):
    target = tmp_path / "run"
    with UnitWriter(target, overwrite=True, kind="run") as w:
        staging = w.staging()
        (staging / "run.json").write_bytes(b"{}")
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        with pytest.raises(OutputError, match="kept in"):
            w.commit()
    assert (target / "notes.txt").read_text() == "mine"
    assert (staging / "run.json").exists() and (staging / "manifest.json").exists()  # the finished unit
