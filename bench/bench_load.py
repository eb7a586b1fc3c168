"""Threads under load: the same `main.py fit`, each in a fresh process (so OpenMP starts as a user's does),
alone and beside two busy processes, for --threads auto, 1 and 2.

    .venv/bin/python bench/bench_load.py [--repeats 3] [--warmup 60] [--cooldown 60] [--quick]

Fits (data written once with `main.py simulate`):
- n = m = 1 polynomial (`simulate --preset n1m1-polynomial`): `fit --estimator mle-quadrature --m 1
  --steps 300` (a small step: where a second thread costs more than it gains);
- n = 5, m = 2 MLP (sigma 0.1, 4000 points, seed 0): a default `fit --estimator vae` with --vae-steps
  (default 500) steps.
Each fit runs as `.venv/bin/python main.py fit ... --threads T --out DIR` with this process's environment
unchanged, (a) alone and (b) beside two bounded busy processes (each a one-thread numpy matmul loop with
a deadline, started --warmup seconds before the first loaded fit so that the one-minute load average, which
`auto` reads, sees them; killed in a finally block). After they are killed, --cooldown seconds pass before
the next alone block. The blocks alternate order from repeat to repeat; so do the fits within a block.

Reported per fit and thread setting (medians over repeats): the process's wall seconds (start-up, training,
scoring, saving: what the user waits) and the training seconds (run.json's wall_time); loaded/alone (median
of the per-repeat ratios); alone, auto against the best fixed count; the thread count `auto` chose.
Targets: loaded/alone <= 2.0; alone, auto within 5 % of the best fixed thread count.

Writes bench/load_results.json (or --out) and prints markdown tables. `--quick` is a smoke test (the
mle-quadrature fit only, 20 steps, one repeat, one-second warm-up: six processes, a minute or so); its figures
mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
THREADS = ("auto", "1", "2")
TARGET_LOADED = 2.0
TARGET_AUTO = 1.05
BUSY_PROCESSES = 2

# one core busy until the deadline: a single-threaded BLAS matmul loop on a 256 x 256 matrix (fits in cache)
BUSY_CODE = """
import sys, time
import numpy as np
deadline = time.monotonic() + float(sys.argv[1])
a = np.random.default_rng(0).standard_normal((256, 256))
while time.monotonic() < deadline:
    a = np.tanh(a @ a * 0.0625)
"""
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(args: list[str], label: str) -> tuple[float, str]:
    """`main.py ARGS` in a fresh process, this process's environment; (wall seconds, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.run([PYTHON, str(ROOT / "main.py"), *args], cwd=ROOT, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{label}: main.py {' '.join(args)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return wall, p.stderr


class Busy:
    """Two processes that each keep one core busy for at most `limit` seconds; stop() kills them."""

    def __init__(self, count: int, limit: float):
        env = {**os.environ, **ONE_THREAD_ENV}
        self.procs = [subprocess.Popen([PYTHON, "-c", BUSY_CODE, str(limit)], env=env, stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]

    def alive(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()


def make_data(tmp: Path, samples: int, quick: bool) -> dict[str, Path]:
    poly, mlp = tmp / "poly-n1m1.npz", tmp / "mlp-n5m2.npz"
    extra = ["--samples", str(samples)] if quick else []
    run_cli(["simulate", "--preset", "n1m1-polynomial", *extra, "--out", str(poly)], "simulate")
    run_cli(["simulate", "--mixing", "mlp", "--n", "5", "--m", "2", "--sigma", "0.1", "--samples", str(samples),
             "--seed", "0", "--out", str(mlp)], "simulate")
    return {"poly": poly, "mlp": mlp}


def cases(data: dict[str, Path], quad_steps: int, vae_steps: int) -> list[dict]:
    return [
        {"key": "quad", "case": f"n=m=1 polynomial, mle-quadrature, {quad_steps} steps",
         "args": ["--data", str(data["poly"]), "--estimator", "mle-quadrature", "--m", "1",
                  "--steps", str(quad_steps)]},
        {"key": "vae", "case": f"n=5, m=2 MLP, vae, {vae_steps} steps",
         "args": ["--data", str(data["mlp"]), "--estimator", "vae", "--steps", str(vae_steps)]},
    ]


def one_fit(case: dict, threads: str, condition: str, repeat: int, tmp: Path, busy: Busy | None) -> dict:
    out = tmp / f"run-{len(list(tmp.glob('run-*')))}"
    load = os.getloadavg()[0]
    wall, _ = run_cli(["fit", *case["args"], "--threads", threads, "--out", str(out)], case["case"])
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    row = {"case": case["case"], "threads": threads, "condition": condition, "repeat": repeat,
           "process_s": wall, "train_s": run["wall_time"], "steps": run["steps_done"],
           "threads_used": run.get("threads"), "loadavg_1min_at_start": load}
    if busy is not None:
        row["busy_alive_after"] = busy.alive()
    print(f"  {condition:6s} {case['case']:45s} --threads {threads:4s}: {wall:6.2f} s process, "
          f"{run['wall_time']:6.2f} s training, {run.get('threads')} threads used (load {load:.2f})", flush=True)
    return row


def block(condition: str, fit_cases: list[dict], repeat: int, tmp: Path, busy: Busy | None) -> list[dict]:
    rows = []
    order = [(c, t) for c in fit_cases for t in THREADS]
    if repeat % 2:
        order.reverse()
    for case, threads in order:
        rows.append(one_fit(case, threads, condition, repeat, tmp, busy))
    return rows


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rows: list[dict], fit_cases: list[dict]) -> list[dict]:
    out = []
    for case in fit_cases:
        sel = [r for r in rows if r["case"] == case["case"]]
        by: dict[tuple[str, str], dict[int, dict]] = {}
        for r in sel:
            by.setdefault((r["threads"], r["condition"]), {})[r["repeat"]] = r
        summary: dict = {"case": case["case"], "threads": {}}
        for t in THREADS:
            alone, loaded = by.get((t, "alone"), {}), by.get((t, "loaded"), {})
            common = sorted(set(alone) & set(loaded))
            s = {}
            for key in ("process_s", "train_s"):
                s[f"alone_{key}"] = _med([r[key] for r in alone.values()])
                s[f"loaded_{key}"] = _med([r[key] for r in loaded.values()])
                s[f"loaded_over_alone_{key}"] = _med([loaded[i][key] / alone[i][key] for i in common])
            s["threads_used_alone"] = sorted({r["threads_used"] for r in alone.values()}, key=str)
            s["threads_used_loaded"] = sorted({r["threads_used"] for r in loaded.values()}, key=str)
            s["loaded_ok_process"] = s["loaded_over_alone_process_s"] <= TARGET_LOADED
            s["loaded_ok_train"] = s["loaded_over_alone_train_s"] <= TARGET_LOADED
            summary["threads"][t] = s
        for key in ("process_s", "train_s"):
            fixed = {t: summary["threads"][t][f"alone_{key}"] for t in THREADS if t != "auto"}
            best = min(fixed, key=fixed.get)
            ratio = summary["threads"]["auto"][f"alone_{key}"] / fixed[best]
            summary[f"auto_over_best_fixed_{key}"] = ratio
            summary[f"best_fixed_{key}"] = best
        summary["auto_ok_process"] = summary["auto_over_best_fixed_process_s"] <= TARGET_AUTO
        summary["auto_ok_train"] = summary["auto_over_best_fixed_train_s"] <= TARGET_AUTO
        out.append(summary)
    return out


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_tables(summaries: list[dict], meta: dict) -> None:
    print(f"\n### Threads under load ({meta['repeats']} repeats, {BUSY_PROCESSES} busy one-core processes, "
          f"{os.cpu_count()} cores)\n")
    print("| fit | --threads | threads used (alone / loaded) | alone s (process / training) | "
          "loaded s (process / training) | loaded / alone (process / training) | <= 2.0 (process / training) |")
    print("|---|---|---|---|---|---|---|")
    for s in summaries:
        for t in THREADS:
            r = s["threads"][t]
            used = f"{','.join(map(str, r['threads_used_alone']))} / {','.join(map(str, r['threads_used_loaded']))}"
            print(f"| {s['case']} | {t} | {used} | {r['alone_process_s']:.2f} / {r['alone_train_s']:.2f} | "
                  f"{r['loaded_process_s']:.2f} / {r['loaded_train_s']:.2f} | "
                  f"{r['loaded_over_alone_process_s']:.2f} / {r['loaded_over_alone_train_s']:.2f} | "
                  f"{_verdict(r['loaded_ok_process'])} / {_verdict(r['loaded_ok_train'])} |")
    print("\n| fit | auto / best fixed, alone (process) | (training) | best fixed (process / training) | "
          "<= 1.05 (process / training) |")
    print("|---|---|---|---|---|")
    for s in summaries:
        print(f"| {s['case']} | {s['auto_over_best_fixed_process_s']:.3f} | {s['auto_over_best_fixed_train_s']:.3f} | "
              f"{s['best_fixed_process_s']} / {s['best_fixed_train_s']} | {_verdict(s['auto_ok_process'])} / "
              f"{_verdict(s['auto_ok_train'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the alone and loaded blocks (default 3)")
    ap.add_argument("--quad-steps", type=int, default=300, help="steps of the mle-quadrature fit (default 300)")
    ap.add_argument("--vae-steps", type=int, default=500, help="steps of the vae fit (default 500)")
    ap.add_argument("--samples", type=int, default=4000, help="points of the n=5, m=2 data (default 4000)")
    ap.add_argument("--warmup", type=float, default=60.0,
                    help="seconds the busy processes run before the first loaded fit (default 60)")
    ap.add_argument("--cooldown", type=float, default=60.0,
                    help="seconds after they are killed before an alone block (default 60)")
    ap.add_argument("--busy-limit", type=float, default=3600.0,
                    help="deadline of each busy process in seconds (they are killed earlier; default 3600)")
    ap.add_argument("--cases", default="quad,vae", help="which fits: quad (n=m=1 mle-quadrature), vae (n=5, m=2)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: the quad fit only, 20 steps, one repeat, one-second warm-up")
    ap.add_argument("--out", help="results JSON (default bench/load_results.json; with --quick a temporary file)")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.quad_steps, a.vae_steps, a.samples, a.warmup, a.cooldown = 1, 20, 20, 400, 1.0, 1.0
        a.cases = "quad"
    wanted = {c.strip() for c in a.cases.split(",") if c.strip()}
    if not wanted or wanted - {"quad", "vae"}:
        ap.error(f"--cases: expected quad, vae or quad,vae, got {a.cases!r}")
    a.out = a.out or str(Path(tempfile.gettempdir()) / "load_results.quick.json" if a.quick
                         else Path(__file__).with_name("load_results.json"))
    meta = {"repeats": a.repeats, "cases": sorted(wanted), "quad_steps": a.quad_steps, "vae_steps": a.vae_steps,
            "samples": a.samples,
            "warmup": a.warmup, "cooldown": a.cooldown, "cpu_count": os.cpu_count(), "python": Path(PYTHON).name,
            "quick": a.quick, "busy_processes": BUSY_PROCESSES, "started": time.ctime(),
            "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                    if k in os.environ}}
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so `finally` kills the busy ones
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as d:
        tmp = Path(d)
        fit_cases = [c for c in cases(make_data(tmp, a.samples, a.quick), a.quad_steps, a.vae_steps)
                     if c["key"] in wanted]
        last = None
        for r in range(a.repeats):
            for condition in ("alone", "loaded") if r % 2 == 0 else ("loaded", "alone"):
                if condition == "alone":
                    if last == "loaded":
                        time.sleep(a.cooldown)
                    rows += block("alone", fit_cases, r, tmp, None)
                else:
                    busy = Busy(BUSY_PROCESSES, a.busy_limit)
                    try:
                        time.sleep(a.warmup)
                        rows += block("loaded", fit_cases, r, tmp, busy)
                    finally:
                        busy.stop()
                last = condition
    summaries = summarise(rows, fit_cases)
    Path(a.out).write_text(json.dumps({**meta, "summary": summaries, "runs": rows}, indent=2), encoding="utf-8")
    print_tables(summaries, meta)
    print(f"\nwrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
