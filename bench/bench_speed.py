"""Trainer overhead: seconds per training step of engine.trainer.train against a bare PyTorch loop of the
same objective, in the same process, on the same data, batch size and thread count.

The bare loop calls the estimator's own `objective` (the same objective, so that the ratio measures the
loop and nothing else) inside a plain Adam loop written here. The trainer adds
batching, schedule, NaN guard and parameter backup, history and the stop flag; evaluation and snapshots
are switched off for the comparison (they are features, measured separately).

    .venv/bin/python bench/bench_speed.py [--steps 400] [--repeats 9] [--threads 2]

Each repeat runs the bare loop and the trainer back to back; the overhead is the median over repeats of
the paired ratio trainer / bare, so that a neighbour's load, which drifts over seconds, hurts both
members of a pair alike. The table also gives the best time of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from engine.config import DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.estimators import build_estimator
from engine.networks import build_decoder
from engine.simulate import simulate
from engine.trainer import train

BATCH = 256


def bare_loop(cfg: RunConfig, x: torch.Tensor, steps: int) -> float:
    """Seconds per step of a plain Adam loop on the same objective: the estimator's `objective`, a random
    minibatch, backward, step. Nothing else."""
    torch.manual_seed(0)
    dec = build_decoder(x.shape[1], cfg.decoder, x)
    est = build_estimator(cfg.estimator, dec, x.shape[0], torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(est.trainable_parameters(), lr=cfg.training.lr)
    bgen = torch.Generator().manual_seed(2)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (BATCH,), generator=bgen)
        obj = est.objective(x[idx], idx, step).surrogate
        opt.zero_grad()
        (-obj).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def trainer_loop(cfg: RunConfig, data, steps: int) -> float:
    r = train(cfg, data)
    return r.history[-1]["time"] / steps  # the step loop only (the final evaluation comes after)


CASES = [("mle-quadrature", {}), ("mle-adaptive", {}), ("mle-importance", {"proposal": "prior"}),
         ("mle-importance", {"proposal": "laplace"}), ("mle-mcem", {}), ("vae", {}), ("iwae", {})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="estimator names to time (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("speed_results.json")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = simulate(SimulationConfig(mixing="sigmoid", n=3, m=2, sigma=0.1, samples=5000, seed=0))
    x = torch.as_tensor(data.x, dtype=torch.float32)
    rows = []
    print(f"{'estimator':28s} {'bare ms/step':>12s} {'trainer ms/step':>15s} {'overhead':>9s}")
    for name, extra in CASES:
        if a.only and name not in a.only:
            continue
        cfg = RunConfig(decoder=DecoderConfig(m=2, hidden=(64, 64)),
                        estimator=EstimatorConfig(name=name, nodes=12, samples=32, **extra),
                        training=TrainingConfig(steps=a.steps, batch_size=BATCH, eval_every=10**7,
                                                snapshot_every=10**7, val_fraction=0.0, schedule="constant"))
        bare, tr = [], []
        for i in range(a.repeats):  # pairs, alternating which runs first
            for which in ("bare", "trainer") if i % 2 == 0 else ("trainer", "bare"):
                if which == "bare":
                    bare.append(bare_loop(cfg, x, a.steps))
                else:
                    tr.append(trainer_loop(cfg, data, a.steps))
        overhead = statistics.median(t / b for b, t in zip(bare, tr, strict=True)) - 1
        label = name + (f" ({extra['proposal']})" if extra else "")
        rows.append({"estimator": label, "bare_ms": 1e3 * min(bare), "trainer_ms": 1e3 * min(tr),
                     "overhead": overhead, "bare_ms_all": [1e3 * b for b in bare],
                     "trainer_ms_all": [1e3 * t for t in tr]})
        print(f"{label:28s} {1e3 * min(bare):12.2f} {1e3 * min(tr):15.2f} {100 * overhead:8.1f}%", flush=True)
    Path(a.out).write_text(json.dumps({"threads": a.threads, "steps": a.steps, "repeats": a.repeats,
                                       "batch": BATCH, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
