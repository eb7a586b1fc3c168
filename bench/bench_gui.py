"""GUI overhead benchmark: training speed with the live plots on versus the same run headless, and how
long the GUI thread ever goes without running its event loop during training.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=. .venv/bin/python bench/bench_gui.py [--repeats 3]

For each configuration and repeat, in turn (interleaved, so a busy machine hurts all modes alike):
  headless-main    engine.runs.fit(config, data) in the main thread, no callback
  headless-thread  the same in a plain Python thread (the GUI trains in a worker thread)
  snapshots-thread the same with a no-op on_progress: the engine computes the plot snapshots (learned
                   manifold, inferred latents) every snapshot_every steps, which the GUI needs
  gui              Start in the main window (offscreen, 1680 x 1020, live plots redrawn at 15 Hz)
torch runs with --torch-threads intra-op threads (default 1) in every mode. Speed is
steps / RunResult.wall_time (the training loop only; scoring afterwards is the same in all modes).
A 10 ms QTimer in the GUI thread records the gaps between its ticks while the GUI run trains; the
largest gap is the longest stall, reported for the whole run and from the first snapshot on (the window's
repaint when Start is pressed, as the worker sets the run up, comes before it). Prints a table and writes
bench/gui_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PySide6.QtCore import QEventLoop, QObject, QSettings, Qt, QTimer

from engine.config import RunConfig
from engine.runs import fit
from engine.simulate import Dataset, simulate
from gui.app import build_main_window
from gui.main_window import MainWindow
from gui.settings import Settings

OUT = Path(__file__).resolve().parent / "gui_results.json"
SPEED_TARGET = 0.90  # GUI speed / headless speed
STALL_LIMIT_MS = 50.0


def configs() -> dict[str, RunConfig]:
    fast = RunConfig()  # n = m = 1: about a thousand steps a second, the hardest case for the GUI
    fast.decoder.hidden = (32, 32)
    fast.estimator.name = "mle-quadrature"
    fast.training.steps = 2000
    fast.training.device = "cpu"
    vae = RunConfig()
    vae.simulation.mixing, vae.simulation.n, vae.simulation.m = "sigmoid", 3, 2
    vae.decoder.m = 2
    vae.estimator.name = "vae"
    vae.training.steps = 1500
    vae.training.device = "cpu"
    return {"poly-n1m1-mle-quadrature": fast, "sigmoid-n3m2-vae": vae}


class GapMonitor(QObject):
    """Ticks every 10 ms in the GUI thread; the gaps between ticks are the GUI thread's stalls."""

    def __init__(self) -> None:
        super().__init__()
        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)
        self.gaps: list[float] = []
        self.last = 0.0
        self.recording = False

    def start(self) -> None:
        self.gaps, self.last, self.recording = [], time.perf_counter(), True
        self.timer.start()

    def stop(self) -> None:
        self.recording = False
        self.timer.stop()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.recording:
            self.gaps.append(now - self.last)
        self.last = now


def headless(config: RunConfig, data: Dataset, in_thread: bool, snapshots: bool = False) -> float:
    box: dict[str, Any] = {}

    def go() -> None:
        box["result"] = fit(config, data, on_progress=(lambda info: None) if snapshots else None)

    if in_thread:
        t = threading.Thread(target=go)
        t.start()
        t.join()
    else:
        go()
    result = box["result"]
    return result.steps_done / result.wall_time


def gui_run(window: MainWindow, monitor: GapMonitor, config: RunConfig) -> dict[str, float]:
    window.apply_config(config)
    loop = QEventLoop()
    training_over: dict[str, float] = {}

    def on_progress(info: dict[str, Any]) -> None:
        if info.get("phase") == "evaluating":
            monitor.stop()  # the stall monitor covers training only
            training_over["t"] = time.perf_counter()
        elif "first_snapshot" not in training_over and info.get("setup") is not None:
            training_over["first_snapshot"] = len(monitor.gaps)

    window.controller.progress.connect(on_progress)
    window.controller.finished.connect(loop.quit)
    frames0 = window.clock.frames
    t0 = time.perf_counter()
    monitor.start()
    window.start()
    loop.exec()
    monitor.stop()
    window.controller.progress.disconnect(on_progress)
    window.controller.finished.disconnect(loop.quit)
    record = window.results.records[-1]
    seconds = training_over.get("t", time.perf_counter()) - t0
    gaps = sorted(monitor.gaps)
    steady = sorted(monitor.gaps[training_over.get("first_snapshot", 0):])
    return {"steps_per_sec": record.metrics["steps"] / record.metrics["wall_time"],
            "max_gap_ms": 1000 * gaps[-1], "p99_gap_ms": 1000 * gaps[int(0.99 * (len(gaps) - 1))],
            "steady_max_gap_ms": 1000 * steady[-1],
            "redraws_per_sec": (window.clock.frames - frames0) / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads in every mode (default 1: on a busy or 2-core machine "
                             "torch's default spin-waiting threads make timings of small models erratic)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        window = build_main_window(Settings(QSettings(str(Path(tmp) / "bench.ini"), QSettings.Format.IniFormat)))
        window.resize(1680, 1020)
        window.show()
        monitor = GapMonitor()
        loop = QEventLoop()
        QTimer.singleShot(3000, loop.quit)  # window shown, torch warmed up by the worker
        loop.exec()
        results: dict[str, Any] = {}
        for name, config in configs().items():
            data = simulate(config.simulation)
            fit(config, data)  # warm caches for every mode
            runs: dict[str, list[Any]] = {"headless-main": [], "headless-thread": [], "snapshots-thread": [],
                                          "gui": []}
            for repeat in range(args.repeats):
                runs["headless-main"].append(headless(config, data, in_thread=False))
                runs["headless-thread"].append(headless(config, data, in_thread=True))
                runs["snapshots-thread"].append(headless(config, data, in_thread=True, snapshots=True))
                runs["gui"].append(gui_run(window, monitor, config))
                last = runs["gui"][-1]
                print(f"{name} #{repeat + 1}: headless main {runs['headless-main'][-1]:.0f} steps/s, "
                      f"thread {runs['headless-thread'][-1]:.0f} steps/s, with snapshots "
                      f"{runs['snapshots-thread'][-1]:.0f} steps/s, GUI {last['steps_per_sec']:.0f} steps/s, "
                      f"max stall {last['max_gap_ms']:.1f} ms (after the first snapshot "
                      f"{last['steady_max_gap_ms']:.1f} ms)", flush=True)
            gui_speed = statistics.median(r["steps_per_sec"] for r in runs["gui"])
            main_speed = statistics.median(runs["headless-main"])
            thread_speed = statistics.median(runs["headless-thread"])
            snapshot_speed = statistics.median(runs["snapshots-thread"])
            results[name] = {
                "steps": config.training.steps, "snapshot_every": config.training.snapshot_every,
                "headless_main_steps_per_sec": main_speed, "headless_thread_steps_per_sec": thread_speed,
                "snapshots_thread_steps_per_sec": snapshot_speed, "gui_steps_per_sec": gui_speed,
                "gui_vs_snapshots_thread": gui_speed / snapshot_speed,
                "gui_vs_headless_main": gui_speed / main_speed, "gui_vs_headless_thread": gui_speed / thread_speed,
                "max_gap_ms": max(r["max_gap_ms"] for r in runs["gui"]),
                "steady_max_gap_ms": max(r["steady_max_gap_ms"] for r in runs["gui"]),
                "p99_gap_ms": max(r["p99_gap_ms"] for r in runs["gui"]),
                "redraws_per_sec": statistics.median(r["redraws_per_sec"] for r in runs["gui"]),
                "raw": runs,
            }
        window.close()
    worst_ratio = min(min(r["gui_vs_headless_main"], r["gui_vs_headless_thread"]) for r in results.values())
    worst_gap = max(r["steady_max_gap_ms"] for r in results.values())
    worst_gap_with_start = max(r["max_gap_ms"] for r in results.values())
    summary = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "qt_platform": os.environ["QT_QPA_PLATFORM"], "load_before": load_before,
                    "load_after": os.getloadavg()},
        "repeats": args.repeats, "results": results,
        "worst_gui_vs_headless": worst_ratio, "worst_gui_stall_ms": worst_gap,
        "worst_gui_stall_with_run_start_ms": worst_gap_with_start,
        "pass_speed": worst_ratio >= SPEED_TARGET, "pass_stall": worst_gap <= STALL_LIMIT_MS,
    }
    OUT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{'configuration':26} {'headless main':>13} {'thread':>8} {'+snapshots':>11} {'GUI':>7} {'GUI/main':>9} "
          f"{'GUI/thread':>11} {'GUI/+snap':>10} {'max stall':>10} {'(steady)':>9} {'p99 stall':>10} {'redraws/s':>10}")
    for name, r in results.items():
        print(f"{name:26} {r['headless_main_steps_per_sec']:11.0f}/s {r['headless_thread_steps_per_sec']:6.0f}/s "
              f"{r['snapshots_thread_steps_per_sec']:9.0f}/s {r['gui_steps_per_sec']:5.0f}/s "
              f"{r['gui_vs_headless_main']:9.2f} {r['gui_vs_headless_thread']:11.2f} "
              f"{r['gui_vs_snapshots_thread']:10.2f} "
              f"{r['max_gap_ms']:8.1f}ms {r['steady_max_gap_ms']:7.1f}ms {r['p99_gap_ms']:8.1f}ms "
              f"{r['redraws_per_sec']:10.1f}")
    print(f"speed: GUI at least {SPEED_TARGET:.0%} of headless: {'PASS' if summary['pass_speed'] else 'FAIL'} "
          f"(worst {worst_ratio:.2f}); GUI thread stall at most {STALL_LIMIT_MS:.0f} ms: "
          f"{'PASS' if summary['pass_stall'] else 'FAIL'} (worst {worst_gap:.1f} ms once the first snapshot is "
          f"drawn; {worst_gap_with_start:.1f} ms counting the repaint when Start is pressed)")
    print(f"load average before/after: {load_before} / {os.getloadavg()} on {os.cpu_count()} CPUs; wrote {OUT}")
    return 0 if summary["pass_speed"] and summary["pass_stall"] else 1


if __name__ == "__main__":
    sys.exit(main())
