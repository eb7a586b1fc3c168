"""Accuracy against wall time: held-out gap to the true model (nats/point) for every estimator on the five
reference cases, on 2 CPU threads. Same data, split, decoder and step budget for every estimator.

    .venv/bin/python bench/bench_accuracy.py [--steps 2000] [--cases 0,1,2,3,4] [--estimators ...]

Writes bench/accuracy_results.json and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from engine.config import ESTIMATORS, DecoderConfig, EstimatorConfig, RunConfig, SimulationConfig, TrainingConfig
from engine.runs import fit
from engine.simulate import simulate

CASES = [
    ("n=m=1 polynomial", SimulationConfig(mixing="polynomial", n=1, m=1, sigma=0.1, samples=5000, seed=0)),
    ("n=2, m=1 sigmoid", SimulationConfig(mixing="sigmoid", n=2, m=1, sigma=0.05, samples=5000, seed=0)),
    ("n=5, m=2 MLP", SimulationConfig(mixing="mlp", n=5, m=2, sigma=0.1, samples=5000, seed=0)),
    ("n=10, m=3 linear", SimulationConfig(mixing="linear", n=10, m=3, sigma=0.3, samples=5000, seed=0)),
    ("n=20, m=4 MLP", SimulationConfig(mixing="mlp", n=20, m=4, sigma=0.1, samples=5000, seed=0)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--cases", default="0,1,2,3,4")
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--out", default=str(Path(__file__).with_name("accuracy_results.json")))
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    print("| case | estimator | held-out log-lik | gap to truth ± se | sigma (true) | wall s |")
    print("|---|---|---|---|---|---|")
    for ci in (int(c) for c in a.cases.split(",")):
        label, sim = CASES[ci]
        data = simulate(sim)
        for name in a.estimators.split(","):
            if name == "mle-quadrature" and sim.m > 3:
                continue
            hidden = () if sim.mixing == "linear" else (64, 64)
            cfg = RunConfig(simulation=sim, decoder=DecoderConfig(m=sim.m, hidden=hidden),
                            estimator=EstimatorConfig(name=name, nodes={1: 12, 2: 12, 3: 5}.get(sim.m, 3), samples=32),
                            training=TrainingConfig(steps=a.steps, batch_size=256, lr=3e-3, eval_every=500,
                                                    snapshot_every=10**7, val_fraction=0.2))
            r = fit(cfg, data)
            mt = r.metrics
            sig = mt["sigma"] if isinstance(mt["sigma"], float) else None
            rows.append({"case": label, "estimator": name, "heldout": mt["heldout_loglik"],
                         "truth": mt["true_heldout_loglik"], "gap": mt["gap_to_truth"], "gap_se": mt["gap_to_truth_se"],
                         "sigma": sig, "true_sigma": sim.sigma, "wall": r.wall_time, "status": r.status,
                         "method": mt["heldout_method"], "warnings": mt["warnings"]})
            s = "-" if sig is None else f"{sig:.3f}"
            print(f"| {label} | {name} | {mt['heldout_loglik']:.4f} | {mt['gap_to_truth']:.4f} ± "
                  f"{mt['gap_to_truth_se']:.4f} | {s} ({sim.sigma}) | {r.wall_time:.1f} |", flush=True)
    Path(a.out).write_text(json.dumps({"steps": a.steps, "threads": 2, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
