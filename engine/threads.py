"""How many intra-op threads torch uses, chosen for the work of a step and the machine's idle cores.

Two rules (figures in bench/RESULTS.md, "Threads under load"):
- OpenMP's threads sleep when they wait (`OMP_WAIT_POLICY=PASSIVE`). With the default busy-waiting, a
  team that shares its cores with other processes spins on them and a run becomes many times slower.
  libgomp reads the variable once, when torch is imported, so `configure_openmp()` runs first in
  `main.py` and in `engine/__init__.py`.
- `auto` (threads = 0) takes one thread when a step is small, where a second thread costs more in
  hand-offs than it gains, and otherwise the cores that are idle when the run starts, at most MAX_AUTO.
"""

from __future__ import annotations

import os

MAX_AUTO = 8
SMALL_STEP_FLOPS = 2e8  # below this many multiply-adds a step, one thread is fastest (bench/bench_load.py)


def configure_openmp() -> None:
    """Passive OpenMP waiting, unless the user chose a policy; effective only before `import torch`."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def idle_cores() -> int:
    """Usable cores minus the machine's one-minute load average (at least one)."""
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, round(cores - load)))


def auto_threads(step_flops: float) -> int:
    """One thread for a small step, else the idle cores (at most MAX_AUTO)."""
    if step_flops < SMALL_STEP_FLOPS:
        return 1
    return min(MAX_AUTO, idle_cores())


def apply_threads(requested: int, step_flops: float) -> int:
    """Set torch's intra-op threads: `requested` if > 0, else the automatic choice. Returns the count."""
    import torch

    n = requested if requested > 0 else auto_threads(step_flops)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
