"""What every training objective provides to the one trainer.

`objective(x, idx, step)` returns a scalar *surrogate* whose gradient is the estimator's gradient of the
average log-likelihood (or of the bound it maximises), and the value to report. The trainer maximises it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import Tensor, nn

from ..estimator_table import objective_label
from ..memory import rows_bytes
from ..networks import Decoder
from ..ppca import LinearStart


@dataclass
class Objective:
    surrogate: Tensor  # scalar; its gradient is the estimate, the trainer ascends it
    value: float  # what the objective estimates (nats per point), for the history
    logs: dict[str, float] = field(default_factory=dict)


class Estimator(nn.Module):
    """A training objective for the decoder; owns any per-point state (modes, chains) and an encoder."""

    name = "base"

    @property
    def value_label(self) -> str:
        """What `Objective.value` estimates, for plots and the history (engine/estimator_table.py)."""
        return objective_label(self.name)

    def __init__(self, decoder: Decoder, n_train: int):
        super().__init__()
        self.decoder = decoder
        self.n_train = n_train

    def objective(self, x: Tensor, idx: Tensor, step: int) -> Objective:
        """x: (B, n) a minibatch, idx: (B,) its rows in the training set."""
        raise NotImplementedError

    def decoder_rows(self, batch: int) -> int:
        """Rows a step passes through the networks, forward and backward (for the thread policy)."""
        return batch

    def step_flops(self, batch: int) -> float:
        """Multiply-adds of a step, about: forward and backward cost three times the forward's."""
        return 3.0 * self.decoder_rows(batch) * self.decoder.macs_per_row()

    def step_bytes(self, batch: int) -> int:
        """Memory a step needs, about: its decoder rows through the decoder's layers (engine/memory.py)."""
        return rows_bytes(self.decoder_rows(batch), self.decoder.widths())

    def start_from(self, start: LinearStart, y_train: np.ndarray) -> None:
        """Start the per-point state (adaptive rules, proposals, chains, the encoder) at the exact posterior of
        the linear model the decoder starts at, z | y_i ~ N(start.posterior_mean(y_i), diag start.posterior_sd()^2),
        y_train (N_train, n) in the decoder's units. Estimators without such state have nothing to do."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The decoder's parameters (and the encoder's, for a VAE)."""
        return [p for p in self.decoder.parameters() if p.requires_grad]

    def inferred_latents(self, x: Tensor) -> Tensor | None:
        """Cheap per-point latent summaries for live plots (encoder means, chain states), or None."""
        return None
