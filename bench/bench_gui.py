"""GUI overhead benchmark: training speed with the live plots on versus the same run headless, and how
long the GUI thread ever goes without running its event loop during training.

    QT_QPA_PLATFORM=offscreen PYTHONPATH=. .venv/bin/python bench/bench_gui.py [--repeats 3] [--torch-threads N]

For each configuration and repeat, in turn (interleaved, so a busy machine hurts all modes alike):
  headless         engine.runs.fit(config, data) in the main thread of a fresh Python process, no
                   callback: what `main.py fit` does
  headless+snap    the same with a no-op on_progress: the engine also computes the plot snapshots (learned
                   manifold, inferred latents) that the GUI needs
  gui              Start in the main window (offscreen, 1680 x 1020, live plots redrawn at 15 Hz), in this
                   process, whose main thread runs no torch computation (as in the app: the worker thread
                   draws the data and trains)
torch runs with its default number of intra-op threads (what users get) unless --torch-threads is given,
in every mode. The headless runs are in a separate process because libgomp slows every OpenMP team once
two threads of a process have each started one on a machine with as many cores as torch threads (its
spin-waiting is throttled when it manages more threads than there are CPUs): a baseline trained in this
process's main thread would slow the GUI's worker thread down threefold. Speed is steps /
RunResult.wall_time (the training loop only; scoring afterwards is the same in all modes).
Stalls are measured in a second GUI run of each repeat: a 10 ms QTimer in the GUI thread records the
gaps between its ticks while the run trains; the largest gap (which includes the timer's own 10 ms) is the
longest stall. The speed is taken from the other run, without that timer (the two take turns going
first): its hundred Python calls a second each take the GIL from the training thread, which cost the
fastest run about 3 % of its speed (measured), a cost of the measurement that the app does not have.
Prints a table and writes bench/gui_results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from PySide6.QtCore import QEventLoop, QObject, QSettings, Qt, QTimer

from engine.config import RunConfig
from engine.progress import ScoringProgress, TrainingProgress
from engine.runs import fit
from engine.simulate import simulate
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


def headless_child(name: str, threads: int | None) -> None:
    """In a fresh process: fit `name` headless and with snapshots; print the steps per second as JSON."""
    if threads:
        torch.set_num_threads(threads)
    config = configs()[name]
    data = simulate(config.simulation)
    fit(config, data)  # warms caches, as the GUI's first run does
    speeds = {}
    for mode, callback in (("headless", None), ("headless+snap", lambda info: None)):
        result = fit(config, data, on_progress=callback)
        speeds[mode] = result.steps_done / result.wall_time
    print(json.dumps(speeds))


def headless(name: str, threads: int | None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--headless-child", name]
    if threads:
        cmd += ["--torch-threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def gui_run(window: MainWindow, config: RunConfig, monitor: GapMonitor | None = None) -> dict[str, float]:
    """Start `config` in the window and wait until it is done: its training speed and redraw rate, and
    with a monitor the GUI thread's stalls."""
    window.apply_config(config)
    loop = QEventLoop()
    training_over: dict[str, float] = {}

    def on_progress(p: Any) -> None:
        if isinstance(p, ScoringProgress):
            if monitor is not None:
                monitor.stop()  # the stall monitor covers training only
            training_over["t"] = time.perf_counter()
        elif "first_snapshot" not in training_over and isinstance(p, TrainingProgress) and p.setup is not None \
                and monitor is not None:
            training_over["first_snapshot"] = len(monitor.gaps)

    window.controller.progress.connect(on_progress)
    window.controller.finished.connect(loop.quit)
    frames0 = window.clock.frames
    t0 = time.perf_counter()
    if monitor is not None:
        monitor.start()
    window.start()
    loop.exec()
    window.controller.progress.disconnect(on_progress)
    window.controller.finished.disconnect(loop.quit)
    record = window.results.records[-1]
    seconds = training_over.get("t", time.perf_counter()) - t0
    out = {"steps_per_sec": record.metrics["steps"] / record.metrics["wall_time"],
           "redraws_per_sec": (window.clock.frames - frames0) / seconds}
    if monitor is not None:
        monitor.stop()
        gaps = sorted(monitor.gaps)
        steady = sorted(monitor.gaps[training_over.get("first_snapshot", 0):])
        out |= {"max_gap_ms": 1000 * gaps[-1], "p99_gap_ms": 1000 * gaps[int(0.99 * (len(gaps) - 1))],
                "steady_max_gap_ms": 1000 * steady[-1]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch intra-op threads in every mode (default: torch's own choice, as users get)")
    parser.add_argument("--headless-child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.headless_child:
        headless_child(args.headless_child, args.torch_threads)
        return 0
    if args.torch_threads:
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
            gui_run(window, config)  # the worker draws the data; warms caches
            runs: dict[str, list[Any]] = {"headless": [], "headless+snap": [], "gui": [], "gui_monitored": []}
            for repeat in range(args.repeats):
                speeds = headless(name, args.torch_threads)
                runs["headless"].append(speeds["headless"])
                runs["headless+snap"].append(speeds["headless+snap"])
                for watched in ((False, True) if repeat % 2 == 0 else (True, False)):  # either goes first
                    if watched:
                        runs["gui_monitored"].append(gui_run(window, config, monitor))
                    else:
                        runs["gui"].append(gui_run(window, config))
                last, watched = runs["gui"][-1], runs["gui_monitored"][-1]
                print(f"{name} #{repeat + 1}: headless {speeds['headless']:.0f} steps/s, with snapshots "
                      f"{speeds['headless+snap']:.0f} steps/s, GUI {last['steps_per_sec']:.0f} steps/s "
                      f"({watched['steps_per_sec']:.0f} with the stall monitor), longest stall "
                      f"{watched['max_gap_ms']:.1f} ms (after the first snapshot "
                      f"{watched['steady_max_gap_ms']:.1f} ms)",
                      flush=True)
            gui_speed = statistics.median(r["steps_per_sec"] for r in runs["gui"])
            monitored_speed = statistics.median(r["steps_per_sec"] for r in runs["gui_monitored"])
            headless_speed = statistics.median(runs["headless"])
            snapshot_speed = statistics.median(runs["headless+snap"])
            results[name] = {
                "steps": config.training.steps, "snapshot_every": config.training.snapshot_every,
                "headless_steps_per_sec": headless_speed, "headless_snapshots_steps_per_sec": snapshot_speed,
                "gui_steps_per_sec": gui_speed, "gui_vs_headless": gui_speed / headless_speed,
                "gui_vs_headless_snapshots": gui_speed / snapshot_speed,
                "gui_monitored_steps_per_sec": monitored_speed,
                "gui_monitored_vs_headless": monitored_speed / headless_speed,
                "max_gap_ms": max(r["max_gap_ms"] for r in runs["gui_monitored"]),
                "steady_max_gap_ms": max(r["steady_max_gap_ms"] for r in runs["gui_monitored"]),
                "p99_gap_ms": max(r["p99_gap_ms"] for r in runs["gui_monitored"]),
                "redraws_per_sec": statistics.median(r["redraws_per_sec"] for r in runs["gui"]),
                "raw": runs,
            }
        window.close()
    worst_ratio = min(r["gui_vs_headless"] for r in results.values())
    worst_gap = max(r["max_gap_ms"] for r in results.values())
    summary = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "qt_platform": os.environ["QT_QPA_PLATFORM"], "load_before": load_before,
                    "load_after": os.getloadavg()},
        "repeats": args.repeats, "results": results,
        "worst_gui_vs_headless": worst_ratio, "worst_gui_stall_ms": worst_gap,
        "pass_speed": worst_ratio >= SPEED_TARGET, "pass_stall": worst_gap <= STALL_LIMIT_MS,
    }
    OUT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"{'configuration':26} {'headless':>10} {'+snapshots':>11} {'GUI':>7} {'GUI/headless':>13} "
          f"{'(monitored)':>12} {'longest stall':>14} {'(steady)':>9} {'p99 stall':>10} {'redraws/s':>10}")
    for name, r in results.items():
        print(f"{name:26} {r['headless_steps_per_sec']:8.0f}/s {r['headless_snapshots_steps_per_sec']:9.0f}/s "
              f"{r['gui_steps_per_sec']:5.0f}/s {r['gui_vs_headless']:13.2f} {r['gui_monitored_vs_headless']:12.2f} "
              f"{r['max_gap_ms']:12.1f}ms {r['steady_max_gap_ms']:7.1f}ms {r['p99_gap_ms']:8.1f}ms "
              f"{r['redraws_per_sec']:10.1f}")
    print(f"speed: GUI at least {SPEED_TARGET:.0%} of headless: {'PASS' if summary['pass_speed'] else 'FAIL'} "
          f"(worst {worst_ratio:.2f}); GUI thread stall at most {STALL_LIMIT_MS:.0f} ms: "
          f"{'PASS' if summary['pass_stall'] else 'FAIL'} (worst {worst_gap:.1f} ms, from Start to the end of "
          f"training)")
    print(f"load average before/after: {load_before} / {os.getloadavg()} on {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}; wrote {OUT}")
    return 0 if summary["pass_speed"] and summary["pass_stall"] else 1


if __name__ == "__main__":
    sys.exit(main())
