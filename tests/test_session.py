"""gui/session.py without a display: the state machine's transitions, the data in use, the warnings, the runs
and the events the window draws from. Qt is never imported."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import RunConfig, SimulationConfig, TrainingConfig
from engine.runs import fit, save_run
from gui import tasks
from gui.session import IllegalTransition, Session, run_colour
from gui.state import ENABLED, TRANSITIONS, RunState

ROOT = Path(__file__).resolve().parents[1]


def test_the_session_module_imports_no_qt():
    code = ("import sys, gui.session; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'shiboken6', 'pyqtgraph'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _session(**events: list) -> tuple[Session, list[tuple[str, Any]]]:
    cfg = RunConfig()
    cfg.simulation = SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.1, samples=200, seed=1)
    cfg.decoder.hidden = (8,)
    cfg.training = TrainingConfig(steps=5, batch_size=32, eval_every=5, device="cpu")
    s = Session(cfg)
    seen: list[tuple[str, Any]] = []
    s.subscribe(lambda event, value: seen.append((event, value)))
    return s, seen


def test_every_state_has_transitions_and_controls():
    assert set(TRANSITIONS) == set(RunState) == set(ENABLED)


@pytest.mark.parametrize(("path", "ok"), [
    (["running", "scoring", "done", "idle"], True),  # a run, its scoring, Reset
    (["paused", "running", "stopping", "scoring", "done"], True),  # Step, Resume, Stop in training: still scored
    (["running", "failed", "idle"], True),  # a failed run, its dialog closed
    (["running", "scoring", "stopping", "done", "running"], True),  # Stop in the scoring, then a new run
    (["scoring"], False),  # no run to score
    (["running", "idle"], False),  # Reset is not offered while a run goes
    (["running", "done", "scoring"], False),
    (["stopping"], False),
])
def test_state_machine_allows_the_moves_the_controls_make_and_refuses_others(path, ok):
    s, seen = _session()
    moves = [RunState(p) for p in path]
    if ok:
        for state in moves:
            s.move_to(state)
        assert s.state == moves[-1] and [v for e, v in seen if e == "state"] == moves
    else:
        with pytest.raises(IllegalTransition):
            for state in moves:
                s.move_to(state)
    s.move_to(s.state)  # staying put is always allowed


def test_data_in_use_follows_the_settings_and_imported_data_never_go_stale(tmp_path):
    s, seen = _session()
    assert s.data_stale() and s.data_in_use() is None
    bundle = tasks.generate_data(copy.deepcopy(s.config.simulation), s.config.training)
    s.set_data(bundle)
    assert seen[-1] == ("data", bundle) and s.data_in_use() is bundle and not s.m_auto
    s.config.simulation.sigma = 0.2  # other settings: Start would draw new data
    assert s.data_stale() and s.data_in_use() is None
    imported = tasks.DataBundle(bundle.dataset, str(tmp_path / "x.csv"), None, bundle.x_shown, None, None, None)
    imported.dataset.truth, imported.dataset.z = None, None
    s.set_data(imported, imported=True)
    assert s.data_in_use() is imported and s.m_auto and s.suggests_m()
    assert "PPCA's suggestion" in s.warnings()["decoder.m"]
    s.take_m(1)
    assert not s.suggests_m() and s.config.decoder.m == 1


def test_warnings_and_the_split_problem_name_their_fields():
    s, _ = _session()
    s.config.simulation.m, s.config.decoder.m = 3, 4
    s.config.estimator.name, s.config.estimator.samples = "iwae", 5000
    w = s.warnings()
    assert set(w) == {"simulation.m", "decoder.m", "estimator.samples"}
    assert "m = 3 > n = 2" in w["simulation.m"] and "fitted m = 4 > n = 2" in w["decoder.m"]
    assert "K = 5 000" in w["estimator.samples"]
    assert s.split_problem() is None
    s.config.simulation.samples = 2
    err = s.split_problem()
    assert err is not None and err.field == "simulation.samples"


def test_runs_get_numbers_and_colours_and_enter_the_table_selected(tmp_path):
    s, seen = _session()
    s.set_data(tasks.generate_data(copy.deepcopy(s.config.simulation), s.config.training))
    live = s.begin_run(s.config.estimator.name)
    assert (live.run_id, live.colour, s.live) == (1, run_colour(1), live)
    s.move_to(RunState.RUNNING)
    s.scoring_began()
    assert live.scoring and s.state == RunState.SCORING
    result = fit(s.config, s.data.dataset)
    assert s.end_run() is live and s.live is None
    seen.clear()
    record = s.add_trained(tasks.TrainedRun(result, None), live)
    assert [e for e, _ in seen] == ["record_adding", "record", "selection"]
    assert record.run_id == 1 and record.colour == live.colour and s.selected_record() is record
    assert record.objective_label == "log p(x)" and record.data_label == "sigmoid n=2 m=1"
    second = s.add_trained(tasks.TrainedRun(result, None))  # a run of Choose m: no live phase
    assert second.run_id == 2 and second.colour == run_colour(2) and s.selected == 2
    save_run(result, tmp_path / "run")
    opened = tasks.open_run(str(tmp_path / "run"))(lambda p: None, lambda: False)
    third = s.add_opened(opened)
    assert third.run_id == 3 and third.saved is not None and len(third.history.step) == 5
    assert [r.run_id for r in s.records] == [1, 2, 3]
    s.select(1)
    assert s.selected_record() is record and seen[-1] == ("selection", 1)
    assert s.next_sample_seed() == 1 and s.next_sample_seed() == 2


def test_a_runs_alignment_is_drawn_only_with_the_data_it_was_fitted_to():
    s, _ = _session()
    first = tasks.generate_data(copy.deepcopy(s.config.simulation), s.config.training)
    s.set_data(first)
    result = fit(s.config, first.dataset)
    record = s.add_trained(tasks.TrainedRun(result, tasks.learned_manifold(result.decoder, first)))
    view = s.manifold_of(record)
    assert view is record.manifold and view.latent_map is not None
    s.config.simulation.seed = 7  # other data of the same n: the map says nothing about their truth
    s.set_data(tasks.generate_data(copy.deepcopy(s.config.simulation), s.config.training))
    raw = s.manifold_of(record)
    assert raw is not None and raw.latent_map is None and raw.aligned_values is None
    assert raw.shown(aligned=True)[1] is record.manifold.values
    s.config.simulation.n = 3  # another dimension: nothing to draw
    s.set_data(tasks.generate_data(copy.deepcopy(s.config.simulation), s.config.training))
    assert s.manifold_of(record) is None
