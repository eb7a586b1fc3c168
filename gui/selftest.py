"""`main.py --self-test`: checks that this build works, from source or frozen, without a display.

One line per check; exit code 0 only when every check passes.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable

import numpy as np


def _checks() -> list[tuple[str, Callable[[], str]]]:
    import torch

    from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
    from engine.estimator_table import ESTIMATORS
    from engine.evaluate import heldout_loglik
    from engine.ppca import gaussian_loglik
    from engine.runs import fit, load_run, save_run
    from engine.simulate import simulate
    from engine.trainer import FINISHED

    data = simulate(SimulationConfig(mixing="linear", n=3, m=1, sigma=0.3, samples=400, seed=0))
    state: dict = {}

    def evaluator() -> str:
        A, b = data.truth.mixing.params["A"].numpy(), data.truth.mixing.params["b"].numpy()
        exact = gaussian_loglik(data.x, b, A @ A.T + 0.09 * np.eye(3)).mean()
        got = heldout_loglik(data.truth, data.x).mean
        if abs(got - exact) > 1e-4:
            raise AssertionError(f"evaluator {got:.6f} vs closed form {exact:.6f}")
        return f"{got:.6f} nats/point = closed form {exact:.6f}"

    def estimators() -> str:
        for name in ESTIMATORS:
            cfg = RunConfig(decoder=DecoderConfig(m=1, hidden=(8,)), estimator=EstimatorConfig(name=name, samples=8),
                            training=TrainingConfig(steps=5, batch_size=64, eval_every=5, device="cpu"))
            r = fit(cfg, data)
            if r.status not in FINISHED or not np.isfinite(r.metrics["heldout_loglik"]):
                raise AssertionError(f"{name}: {r.status} {r.message}")
            state["run"] = r
        return f"{len(ESTIMATORS)} estimators trained 5 steps each"

    def run_files() -> str:
        r = state["run"]
        with tempfile.TemporaryDirectory() as d:
            save_run(r, d)
            back = load_run(d)
            z = torch.linspace(-2, 2, 7).reshape(-1, 1)
            if not torch.equal(back.decoder.mean(z), r.decoder.mean(z).detach().cpu()):
                raise AssertionError("decoder outputs differ after the round trip")
        return "safetensors + JSON round trip exact"

    def window() -> str:
        from PySide6.QtCore import QSettings

        from gui.app import application, build_main_window
        from gui.settings import Settings

        app = application([])
        settings_dir = tempfile.mkdtemp()  # the user's own settings are left alone
        w = build_main_window(Settings(QSettings(os.path.join(settings_dir, "selftest.ini"),
                                                 QSettings.Format.IniFormat)))
        w.resize(1280, 800)
        w.show()
        for _ in range(5):
            app.processEvents()
        img = w.grab().toImage()
        ptr = img.constBits()
        arr = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes())
        w.close()
        if arr.std() < 5:
            raise AssertionError(f"screenshot is blank (pixel std {arr.std():.2f})")
        return f"main window {img.width()}x{img.height()}, pixel std {arr.std():.1f}"

    return [("imports", lambda: f"torch {torch.__version__}, numpy {np.__version__}"),
            ("evaluator", evaluator), ("estimators", estimators), ("run files", run_files), ("window", window)]


def run_self_test() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    t0 = time.perf_counter()
    failed = 0
    try:
        checks = _checks()
    except Exception:  # an import failure in a frozen build is what this test exists to catch
        print("FAIL imports\n" + traceback.format_exc(), flush=True)
        return 1
    for name, check in checks:
        try:
            print(f"ok   {name}: {check()}", flush=True)
        except Exception as e:
            failed += 1
            print(f"FAIL {name}: {e}\n{traceback.format_exc()}", flush=True)
    print(f"SELFTEST {'OK' if not failed else 'FAILED'} ({time.perf_counter() - t0:.1f} s)", flush=True)
    sys.stdout.flush()
    return 0 if not failed else 1
