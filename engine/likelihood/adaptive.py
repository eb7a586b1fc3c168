"""The per-point Gaussians on which adaptive Gauss-Hermite places its rule, refined from the rule's own nodes.

Each training point b keeps q_b = N(c_b, L_b L_b^T); a visit integrates on z_g = c_b + L_b u_g
(`quadrature.adaptive_terms`) and, from the decoder outputs g_g = g(z_g) and summands t_g it has already
computed, refines q_b for the next visit without a decoder pass of its own:

    centre  c' = sum_g pi_g z_g,   pi = softmax_g t_g     the posterior mean by the same quadrature
                                                          (Naylor & Smith 1982);
    scale   H' = J^T S^-1 J + I,   J = sum_g w_g g_g u_g^T L^-1
                                                          J = Cov_q(g, z) Cov_q(z)^-1, the statistical linear
                                                          regression of g on z under q (posterior linearisation);
            L' = chol(H'^-1).

(Posterior-linearisation filters also add the regression's residual covariance to S; here H' is the
Gauss-Newton precision with J averaged over q.) For linear g, J is the true Jacobian whatever q is, so H'
is the exact posterior precision, and once q is the posterior c' is its mean exactly. c' is a convex
combination of the nodes, so it cannot run away.

A point's first visit, and a visit where one of the shared candidate starts beats c from outside q (more
than OTHER_MODE_RADIUS from c in q's metric), takes a Laplace fit instead (`laplace.laplace`: Gauss-Newton to
the mode, H there), so that a point can move to a higher mode as theta changes; a better candidate inside
q is the same mode seen from its side (the posterior mean need not be the highest point). The candidates
are tried for the whole batch every RESTART_EVERY steps: about every RESTART_EVERY visits of a point, in
one batched pass instead of a small one every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import LatentGaussianModel, log_joint
from .laplace import (
    FIRST_VISIT_STEPS,
    SEARCH_ROWS,
    candidate_starts,
    covariance_cholesky,
    gauss_newton_precision,
    laplace,
)

OTHER_MODE_RADIUS = 3.0  # a better candidate start this far from c (in q's standard deviations) is another mode


def refined_gaussian(z: Tensor, mean: Tensor, terms: Tensor, chol: Tensor, u: Tensor, logw: Tensor,
                     sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The next visit's centre c' and Cholesky factor L' (module docstring) from a visit's nodes z (B, G, m),
    decoder outputs g(z) (B, G, n), summands t (B, G), factor L (B, m, m) and the rule u (G, m), log w (G,):
    returns (B, m), (B, m, m)."""
    centre = torch.einsum("bg,bgi->bi", torch.softmax(terms, -1), z)  # (B, m)
    moment = torch.einsum("g,bgn,gj->bnj", logw.exp(), mean, u)  # (B, n, m) = E_q[g(z) u^T]
    J = torch.linalg.solve_triangular(chol, moment, upper=False, left=False)  # (B, n, m): J L = E[g u^T]
    s = sigma.expand(mean.shape[-1]) if sigma.dim() == 0 else sigma
    return centre, covariance_cholesky(gauss_newton_precision(J, s))


class WarmGrids(torch.nn.Module):
    """Per-training-point Gaussians q_b = N(c_b, L_b L_b^T) for adaptive Gauss-Hermite, tracked across visits."""

    def __init__(self, n_train: int, m: int):
        super().__init__()
        self.register_buffer("candidates", candidate_starts(m))  # (C, m)
        self.register_buffer("centres", torch.zeros(n_train, m))  # (N_train, m)
        self.register_buffer("chols", torch.eye(m).expand(n_train, m, m).clone())  # (N_train, m, m)
        self.register_buffer("seen", torch.zeros(n_train, dtype=torch.bool))  # (N_train,) visited before

    @torch.no_grad()
    def locate(self, model: LatentGaussianModel, x: Tensor, idx: Tensor, search: bool) -> tuple[Tensor, Tensor]:
        """q for rows `idx` of this visit: the stored one, or a Laplace fit on a first visit and, if `search`,
        where a candidate start beats the stored centre from outside q. Returns centre (B, m), chol (B, m, m)."""
        centre, chol = self.centres[idx].to(x.dtype), self.chols[idx].to(x.dtype)
        fresh = ~self.seen[idx]
        if search and not bool(fresh.all()):
            rows = (~fresh).nonzero().squeeze(1)
            cands = self.candidates.to(x.dtype)
            for part in rows.split(max(1, SEARCH_ROWS // len(cands))):  # at most SEARCH_ROWS decoder rows a pass
                best, which = log_joint(model, x[part], cands.unsqueeze(0).expand(len(part), -1, -1)).max(-1)
                here = log_joint(model, x[part], centre[part].unsqueeze(1)).squeeze(1)
                offset = torch.linalg.solve_triangular(chol[part], (cands[which] - centre[part]).unsqueeze(-1),
                                                       upper=False).squeeze(-1)  # (R, m): L^-1 (candidate - c)
                fresh[part[(best > here) & (offset.norm(dim=-1) > OTHER_MODE_RADIUS)]] = True
        if fresh.any():
            rows = fresh.nonzero().squeeze(1)
            centre[rows], chol[rows] = laplace(model, x[rows], centre[rows], self.candidates.to(x.dtype),
                                               iters=FIRST_VISIT_STEPS)
        self.seen[idx] = True
        return centre, chol

    @torch.no_grad()
    def store(self, idx: Tensor, centre: Tensor, chol: Tensor) -> None:
        """Keep the refined q of rows `idx` for their next visit (rows with a non-finite value keep the old one)."""
        ok = torch.isfinite(centre).all(-1) & torch.isfinite(chol).flatten(1).all(-1)  # (B,)
        self.centres[idx] = torch.where(ok.unsqueeze(-1), centre.to(self.centres.dtype), self.centres[idx])
        self.chols[idx] = torch.where(ok.view(-1, 1, 1), chol.to(self.chols.dtype), self.chols[idx])

    def stored_centres(self, rows: int) -> Tensor:
        """The stored centres (posterior means) of the first `rows` training points (what the live plots show)."""
        return self.centres[:rows]
