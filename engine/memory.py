"""Memory before allocation: what a setting will ask for, checked against what this machine has free.

A training step keeps, for every row it passes through the networks, each layer's activations for the
backward pass, their gradients and the activation's output: about 3 x 4 bytes x rows x (sum of the layer
widths) in float32. Readers cap what a file's header may ask for by the same free memory.
"""

from __future__ import annotations

import psutil

from .config import ConfigError

SHARE = 0.8  # of the free memory one allocation may take


def available_bytes() -> int:
    """Memory free for this process now (psutil's `available`: free plus reclaimable caches)."""
    return int(psutil.virtual_memory().available)


def rows_bytes(rows: int, widths: list[int], dtype_bytes: int = 4, copies: int = 3) -> int:
    """Bytes of `rows` points through layers of these widths, `copies` tensors a layer (forward and backward)."""
    return copies * dtype_bytes * rows * sum(widths)


def gib(b: float) -> str:
    return f"{b / 2**30:.1f} GB" if b >= 2**28 else f"{b / 2**20:.0f} MB"


def require(need: int, field: str, value: object, what: str, fix: str) -> None:
    """Refuse, as a ConfigError naming `field`, a setting whose `what` needs more than SHARE of free memory."""
    free = available_bytes()
    if need > SHARE * free:
        raise ConfigError(field, value, f"{what} would need about {gib(need)} of memory and {gib(free)} are "
                                        f"free; {fix}")
