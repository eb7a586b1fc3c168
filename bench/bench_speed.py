"""Trainer overhead: seconds per training step of engine.trainer.train against a bare PyTorch loop of the
same objective, in the same process, on the same data, batch size and thread count.

The bare loop calls the estimator's own `objective` (the same objective, so that the ratio measures the
loop and nothing else) inside a plain Adam loop written here. The trainer adds
batching, schedule, NaN guard and parameter backup, history and the stop flag; evaluation and snapshots
are switched off for the comparison (they are features, measured separately).

    .venv/bin/python bench/bench_speed.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).with_name("speed_results.json")))
    a = ap.parse_args()
    torch.set_num_threads(2)
    data = simulate(SimulationConfig(mixing="sigmoid", n=3, m=2, sigma=0.1, samples=5000, seed=0))
    x = torch.as_tensor(data.x, dtype=torch.float32)
    rows = []
    print(f"{'estimator':28s} {'bare ms/step':>12s} {'trainer ms/step':>15s} {'overhead':>9s}")
    for name, extra in CASES:
        cfg = RunConfig(decoder=DecoderConfig(m=2, hidden=(64, 64)),
                        estimator=EstimatorConfig(name=name, nodes=12, samples=32, **extra),
                        training=TrainingConfig(steps=a.steps, batch_size=BATCH, eval_every=10**7,
                                                snapshot_every=10**7, val_fraction=0.0, schedule="constant"))
        bare, tr = [], []
        for _ in range(a.repeats):  # interleaved, best of repeats: robust to a busy machine
            bare.append(bare_loop(cfg, x, a.steps))
            tr.append(trainer_loop(cfg, data, a.steps))
        b, t = min(bare), min(tr)
        label = name + (f" ({extra['proposal']})" if extra else "")
        rows.append({"estimator": label, "bare_ms": 1e3 * b, "trainer_ms": 1e3 * t, "overhead": t / b - 1})
        print(f"{label:28s} {1e3 * b:12.2f} {1e3 * t:15.2f} {100 * (t / b - 1):8.1f}%")
    Path(a.out).write_text(json.dumps({"threads": 2, "steps": a.steps, "batch": BATCH, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
