"""Training speed as a user gets it: `main.py fit` (the CLI path, in this process) against a bare PyTorch
VAE loop and Pyro SVI written here, and every estimator's cost per step relative to the VAE's.

    .venv/bin/python bench/bench_speed.py [--steps N] [--repeats 5] [--estimator-repeats 3] [--quick]

Data: the n = 5, m = 2 random-MLP model (sigma 0.1, 4000 points, seed 0), written to a temporary .npz.

1. VAE speed. `engine.cli.main(["fit", "--data", FILE, "--estimator", "vae", "--out", DIR, "--threads",
   "1"])` with every other setting at its default (progress bar on, written to os.devnull; periodic
   held-out evaluation on), against
   - a bare VAE loop written in this file (no project code): pytorch/examples style, encoder
     n -> 64 -> 64 -> 2m tanh (mean and log s), decoder m -> 64 -> 64 -> n tanh, one learned sigma through
     softplus, Gaussian log-likelihood, analytic KL, batch 256, Adam lr 3e-3, random minibatches of the same
     training rows (the fit's 80 % split), torch.set_num_threads(1);
   - Pyro SVI (pyro-ppl, the `bench` extra; skipped with a note when it is not installed) with the same
     networks, Trace_ELBO, pyro.optim.Adam, batch 256, 1 thread.
   All three run in this process, the same number of steps, interleaved (which goes first alternates from
   repeat to repeat). Speed is samples/s = steps * batch / training seconds; for the fit the training
   seconds are run.json's wall_time (the step loop, its periodic evaluation and progress reports; not the
   scoring afterwards). The fit/bare figure is the median over repeats of the paired ratio.
   Target: fit >= 0.95 x the bare loop.
2. Every estimator, the same CLI path: ms per step as the user runs it, and with the periodic evaluation
   off (`--config` with eval_every = 10^7; the one evaluation at the last step remains), the latter as a
   ratio to the VAE's step without evaluation in the same round (median over rounds).
   Target: mle-adaptive and mle-importance (Laplace proposal, the default) <= 3 x a VAE step.

The held-out scoring that `fit` does after the training (outside wall_time, tens of seconds a fit here)
is replaced by a stub while this script runs, unless --score.

Writes bench/speed_results.json (or --out) and prints markdown tables. `--quick` is a smoke test (20 steps, one
repeat, about half a minute); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import engine  # noqa: F401  (first: engine/__init__ sets OpenMP's wait policy before torch loads, as main.py does)

# isort: split
import torch
import torch.nn.functional as F
from torch import nn

from engine.estimator_table import ESTIMATORS

BATCH = 256
LR = 3e-3
HIDDEN = 64
TARGET_RATIO = {"mle-adaptive": 3.0, "mle-importance": 3.0}  # eval-off step / vae eval-off step, at most
TARGET_FIT_VS_BARE = 0.95
BENCH_STEPS = 2000  # steps of every timed fit (a run until converged has no fixed length to compare)


# ---------------------------------------------------------------------------------------------------------
# The references: a bare PyTorch VAE loop and Pyro SVI. No project code in this section.
# ---------------------------------------------------------------------------------------------------------


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class BareDecoder(nn.Module):
    """m -> 64 -> 64 -> n tanh MLP and one sigma = softplus(rho). Has what engine.evaluate.heldout_loglik
    scores: attributes n and m, mean(z) (..., m) -> (..., n), sigma() of shape ()."""

    def __init__(self, n: int, m: int, sigma0: float, hidden: int = HIDDEN):
        super().__init__()
        self.n, self.m = n, m
        self.net = nn.Sequential(nn.Linear(m, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n))
        self.rho = nn.Parameter(torch.tensor(_inv_softplus(sigma0)))

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def sigma(self) -> torch.Tensor:
        return F.softplus(self.rho)


class BareEncoder(nn.Module):
    """n -> 64 -> 64 -> 2m tanh MLP: the mean and log standard deviation of q(z | x)."""

    def __init__(self, n: int, m: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 2 * m))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_s = self.net(x).chunk(2, dim=-1)
        return mu, log_s


@dataclass
class RefResult:
    """A reference fit: the decoder (scorable), how many steps it took and its training seconds."""

    decoder: BareDecoder
    encoder: BareEncoder
    steps: int
    seconds: float
    batch: int

    @property
    def samples_per_s(self) -> float:
        return self.steps * self.batch / self.seconds


def _nets(x: torch.Tensor, m: int, seed: int) -> tuple[BareDecoder, BareEncoder]:
    torch.manual_seed(seed)
    sigma0 = 0.5 * float(x.std(0).mean())  # half the data's mean standard deviation
    return BareDecoder(x.shape[1], m, sigma0), BareEncoder(x.shape[1], m)


def bare_vae(x: torch.Tensor, m: int, steps: int, *, time_limit: float | None = None, seed: int = 0,
             batch: int = BATCH, lr: float = LR) -> RefResult:
    """The bare loop: random minibatch, reparameterised ELBO (Gaussian log-likelihood, analytic KL), Adam.
    Stops after `steps` or `time_limit` seconds, whichever comes first. x: (N, n) float32 training rows."""
    torch.set_num_threads(1)
    dec, enc = _nets(x, m, seed)
    opt = torch.optim.Adam([*dec.parameters(), *enc.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)
    N, B = x.shape[0], min(batch, x.shape[0])
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    step = 0
    t0 = time.perf_counter()
    while step < steps:
        xb = x[torch.randint(0, N, (B,), generator=gen)]
        mu, log_s = enc(xb)
        z = mu + log_s.exp() * torch.randn(mu.shape, generator=gen)
        s = dec.sigma()
        rec = (-0.5 * ((xb - dec.mean(z)) / s) ** 2 - s.log() - half_log_2pi).sum(-1)
        kl = 0.5 * (mu**2 + (2 * log_s).exp() - 1 - 2 * log_s).sum(-1)
        loss = (kl - rec).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if time_limit is not None and time.perf_counter() - t0 >= time_limit:
            break
    return RefResult(dec, enc, step, time.perf_counter() - t0, B)


def pyro_available() -> str | None:
    """None when Pyro can be imported, else why not."""
    try:
        import pyro  # noqa: F401
    except ImportError as e:
        return f"pyro-ppl not importable ({e}); install the bench extra: pip install -c constraints.txt '.[bench]'"
    return None


def pyro_svi(x: torch.Tensor, m: int, steps: int, *, time_limit: float | None = None, seed: int = 0,
             batch: int = BATCH, lr: float = LR) -> RefResult:
    """Pyro SVI with the same networks: Trace_ELBO (a sampled KL), pyro.optim.Adam, random minibatches."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO

    torch.set_num_threads(1)
    pyro.clear_param_store()
    dec, enc = _nets(x, m, seed)
    pyro.set_rng_seed(seed)

    def model(xb: torch.Tensor) -> None:
        pyro.module("decoder", dec)
        with pyro.plate("data", xb.shape[0]):
            z = pyro.sample("z", dist.Normal(xb.new_zeros(xb.shape[0], m), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(dec.mean(z), dec.sigma()).to_event(1), obs=xb)

    def guide(xb: torch.Tensor) -> None:
        pyro.module("encoder", enc)
        with pyro.plate("data", xb.shape[0]):
            mu, log_s = enc(xb)
            pyro.sample("z", dist.Normal(mu, log_s.exp()).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), loss=Trace_ELBO())
    gen = torch.Generator().manual_seed(seed + 1)
    N, B = x.shape[0], min(batch, x.shape[0])
    step = 0
    t0 = time.perf_counter()
    while step < steps:
        svi.step(x[torch.randint(0, N, (B,), generator=gen)])
        step += 1
        if time_limit is not None and time.perf_counter() - t0 >= time_limit:
            break
    return RefResult(dec, enc, step, time.perf_counter() - t0, B)


# ---------------------------------------------------------------------------------------------------------
# The user path: main.py fit through engine.cli.main, in this process.
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scoring_stubbed(stub: bool = True) -> Iterator[None]:
    """While active, `engine.runs.fit` skips the held-out scoring that follows the training (tens of seconds
    for these data on one thread, outside run.json's wall_time, so outside every figure here)."""
    if not stub:
        yield
        return
    import engine.runs as runs

    original = runs.score_run

    def stub_score(result, *args, **kwargs) -> dict:
        return {"wall_time": result.wall_time, "steps": result.steps_done, "note": "not scored (bench_speed)"}

    runs.score_run = stub_score
    try:
        yield
    finally:
        runs.score_run = original


def cli_fit(data_file: Path, estimator: str, out: Path, steps: int | None, config: Path | None = None,
            m: int | None = None, score: bool = False) -> dict:
    """`main.py fit --data FILE --estimator NAME --out DIR --threads 1` (+ --steps, --config, --m), progress
    bar to os.devnull, stdout (the metrics JSON) swallowed, the scoring afterwards stubbed unless `score`.
    Returns run.json's speed figures."""
    from engine.cli import main as cli_main

    argv = ["fit", "--data", str(data_file), "--estimator", estimator, "--out", str(out), "--threads", "1"]
    if steps is not None:
        argv += ["--steps", str(steps)]
    if config is not None:
        argv += ["--config", str(config)]
    if m is not None:
        argv += ["--m", str(m)]
    with (open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(io.StringIO()),
          scoring_stubbed(not score)):
        try:
            rc = cli_main(argv)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the CLI installed its Ctrl-C handler
    if rc != 0:
        raise RuntimeError(f"main.py {' '.join(argv)} exited {rc}; run it by hand to see why")
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    batch = min(run["config"]["training"]["batch_size"], run["n_train"])
    return {"wall_time": run["wall_time"], "steps": run["steps_done"], "batch": batch, "threads": run.get("threads"),
            "samples_per_s": run["steps_done"] * batch / run["wall_time"],
            "ms_per_step": 1e3 * run["wall_time"] / run["steps_done"]}


def write_data(directory: Path, samples: int) -> tuple[Path, torch.Tensor]:
    """The n = 5, m = 2 MLP data set as a .npz, and the fit's training rows as float32 (its default split)."""
    from engine.config import SimulationConfig, TrainingConfig
    from engine.simulate import simulate
    from engine.storage import save_dataset
    from engine.trainer import split_indices

    data = simulate(SimulationConfig(mixing="mlp", n=5, m=2, sigma=0.1, samples=samples, seed=0))
    path = directory / "mlp-n5m2.npz"
    save_dataset(path, data)
    tc = TrainingConfig()
    train_idx, _ = split_indices(len(data), tc.val_fraction, tc.seed)
    return path, torch.as_tensor(data.x[train_idx], dtype=torch.float32)


def eval_off_config(directory: Path, m: int) -> Path:
    """A RunConfig JSON with the periodic held-out evaluation off (eval_every = 10^7, and so no convergence test:
    patience 0), else the defaults."""
    from engine.config import RunConfig

    cfg = RunConfig()
    cfg.decoder.m = m  # with --config, the CLI takes m from the config, not from the data
    cfg.training.eval_every = 10**7
    cfg.training.patience = 0
    path = directory / "eval-off.json"
    path.write_text(cfg.to_json(), encoding="utf-8")
    return path


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def vae_section(data_file: Path, x_train: torch.Tensor, tmp: Path, steps: int, repeats: int,
                with_pyro: bool, score: bool) -> dict:
    fit_runs, bare_runs, pyro_runs = [], [], []
    for r in range(repeats):
        order = ["fit", "bare", "pyro"] if r % 2 == 0 else ["pyro", "bare", "fit"]
        for which in order:
            if which == "fit":
                fit_runs.append(cli_fit(data_file, "vae", tmp / f"vae-{r}", steps, score=score))
            elif which == "bare":
                b = bare_vae(x_train, 2, steps)
                bare_runs.append({"seconds": b.seconds, "steps": b.steps, "samples_per_s": b.samples_per_s})
            elif with_pyro:
                p = pyro_svi(x_train, 2, steps)
                pyro_runs.append({"seconds": p.seconds, "steps": p.steps, "samples_per_s": p.samples_per_s})
        print(f"  repeat {r + 1}/{repeats}: fit {fit_runs[-1]['samples_per_s']:.0f}, bare "
              f"{bare_runs[-1]['samples_per_s']:.0f}" + (f", pyro {pyro_runs[-1]['samples_per_s']:.0f}"
                                                         if pyro_runs else "") + " samples/s", flush=True)
    ratio = _med([f["samples_per_s"] / b["samples_per_s"] for f, b in zip(fit_runs, bare_runs, strict=True)])
    out = {"fit": fit_runs, "bare": bare_runs, "pyro": pyro_runs, "fit_over_bare": ratio,
           "fit_over_bare_target": TARGET_FIT_VS_BARE, "fit_over_bare_ok": ratio >= TARGET_FIT_VS_BARE}
    if pyro_runs:
        out["pyro_over_bare"] = _med([p["samples_per_s"] / b["samples_per_s"]
                                      for p, b in zip(pyro_runs, bare_runs, strict=True)])
    return out


def estimator_section(data_file: Path, tmp: Path, steps: int, repeats: int, config: Path,
                      score: bool) -> dict:
    user: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    off: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    ratios: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
    for r in range(repeats):
        order = ESTIMATORS if r % 2 == 0 else ESTIMATORS[::-1]
        for name in order:
            user[name].append(cli_fit(data_file, name, tmp / f"{name}-user-{r}", steps, score=score)["ms_per_step"])
            off[name].append(cli_fit(data_file, name, tmp / f"{name}-off-{r}", steps, config, 2,
                                     score=score)["ms_per_step"])
            print(f"  round {r + 1}/{repeats} {name}: {user[name][-1]:.2f} ms/step, {off[name][-1]:.2f} without "
                  "evaluation", flush=True)
        for name in ESTIMATORS:
            ratios[name].append(off[name][-1] / off["vae"][-1])
    rows = []
    for name in ESTIMATORS:
        ratio = _med(ratios[name])
        target = TARGET_RATIO.get(name)
        rows.append({"estimator": name, "ms_per_step_user": _med(user[name]), "ms_per_step_eval_off": _med(off[name]),
                     "ratio_to_vae_eval_off": ratio, "target": target,
                     "ok": None if target is None else ratio <= target,
                     "ms_user_all": user[name], "ms_eval_off_all": off[name], "ratios_all": ratios[name]})
    return {"rows": rows}


def print_tables(res: dict) -> None:
    v = res["vae"]
    print(f"\n### VAE: `main.py fit` against the references ({res['steps_vae']} steps, batch {BATCH}, 1 thread, "
          f"{len(v['bare'])} interleaved repeats)\n")
    print("| loop | samples/s (median) | samples/s (best) | median paired ratio to bare |")
    print("|---|---|---|---|")
    lines = [("`main.py fit --estimator vae --threads 1` (user path)", v["fit"], v["fit_over_bare"]),
             ("bare PyTorch loop", v["bare"], 1.0)]
    if v["pyro"]:
        lines.append(("Pyro SVI (Trace_ELBO)", v["pyro"], v["pyro_over_bare"]))
    for label, runs, ratio in lines:
        sps = [r["samples_per_s"] for r in runs]
        print(f"| {label} | {_med(sps):.0f} | {max(sps):.0f} | {ratio:.3f} |")
    if res.get("pyro_note"):
        print(f"\nPyro: {res['pyro_note']}")
    verdict = "met" if v["fit_over_bare_ok"] else "NOT met"
    print(f"\nTarget fit >= {TARGET_FIT_VS_BARE} x bare: {v['fit_over_bare']:.3f} ({verdict})")
    if not res["estimators"]["rows"]:
        return
    print(f"\n### Estimators, the same CLI path ({res['steps_estimators']} steps, median of "
          f"{res['estimator_repeats']} rounds)\n")
    print("| estimator | ms/step (user path) | ms/step (evaluation off) | x vae step (evaluation off) | target |")
    print("|---|---|---|---|---|")
    for row in res["estimators"]["rows"]:
        target = "-" if row["target"] is None else f"<= {row['target']:g} ({'met' if row['ok'] else 'NOT met'})"
        print(f"| {row['estimator']} | {row['ms_per_step_user']:.2f} | {row['ms_per_step_eval_off']:.2f} | "
              f"{row['ratio_to_vae_eval_off']:.2f} | {target} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps of every run (default: the CLI's default, 2000)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of fit / bare / Pyro (default 5)")
    ap.add_argument("--estimator-repeats", type=int, default=3, help="rounds over the estimators (default 3)")
    ap.add_argument("--samples", type=int, default=4000, help="data points (default 4000)")
    ap.add_argument("--skip-estimators", action="store_true", help="only the VAE comparison")
    ap.add_argument("--no-pyro", action="store_true", help="leave Pyro SVI out")
    ap.add_argument("--score", action="store_true",
                    help="let each fit score itself afterwards as the CLI does (slow; outside every figure)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 20 steps, one repeat, figures meaningless")
    ap.add_argument("--out", help="results JSON (default bench/speed_results.json; with --quick a temporary file)")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.repeats, a.estimator_repeats = a.steps or 20, 1, 1
    a.out = a.out or str(Path(tempfile.gettempdir()) / "speed_results.quick.json" if a.quick
                         else Path(__file__).with_name("speed_results.json"))
    steps_vae = a.steps if a.steps is not None else BENCH_STEPS
    pyro_note = "left out (--no-pyro)" if a.no_pyro else pyro_available()
    res: dict = {"torch": torch.__version__, "batch": BATCH, "threads": 1, "quick": a.quick,
                 "data": {"mixing": "mlp", "n": 5, "m": 2, "sigma": 0.1, "samples": a.samples, "seed": 0},
                 "steps_vae": steps_vae, "steps_estimators": steps_vae, "repeats": a.repeats,
                 "estimator_repeats": a.estimator_repeats, "pyro_note": pyro_note, "scored": a.score,
                 "started": time.ctime()}
    if pyro_note is None:
        import pyro

        res["pyro"] = pyro.__version__
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as d:
        tmp = Path(d)
        data_file, x_train = write_data(tmp, a.samples)
        print(f"VAE: user path against the bare loop{'' if pyro_note else ' and Pyro SVI'}", flush=True)
        res["vae"] = vae_section(data_file, x_train, tmp, steps_vae, a.repeats, pyro_note is None, a.score)
        if not a.skip_estimators:
            print("Estimators:", flush=True)
            res["estimators"] = estimator_section(data_file, tmp, steps_vae, a.estimator_repeats,
                                                  eval_off_config(tmp, 2), a.score)
    Path(a.out).write_text(json.dumps(res, indent=2), encoding="utf-8")
    if "estimators" not in res:
        res["estimators"] = {"rows": []}
    print_tables(res)
    print(f"\nwrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
