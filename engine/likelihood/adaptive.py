"""The per-point Gaussians on which adaptive Gauss-Hermite places its rule, refined from the rule's own nodes.

Each training point b keeps q_b = N(c_b, L_b L_b^T); a visit integrates on z_g = c_b + L_b u_g
(`quadrature.adaptive_terms`) and, from the decoder outputs g_g = g(z_g) it has already computed, refines q_b
for the next visit without a decoder pass of its own, by posterior linearisation (Garcia-Fernandez et al.
2015): replace g by its statistical linear regression under q,

    g(z) ~ gbar + J (z - c),   gbar = sum_g w_g g_g,   J = sum_g w_g g_g u_g^T L^-1
                                                       (J = Cov_q(g, z) Cov_q(z)^-1),

and take the posterior of that linear-Gaussian model:

    H' = J^T S^-1 J + I,                       L' = chol(H'^-1),
    c' = c + H'^-1 (J^T S^-1 (x - gbar) - c)   a Gauss-Newton step with J averaged over q.

(Posterior-linearisation filters also add the regression's residual covariance to S; here H' is the
Gauss-Newton precision.) For linear g, J is the true Jacobian whatever q is, so one refinement gives the
exact posterior from any start. For a narrow q it is a Gauss-Newton step towards the mode.

The regression has a blind spot: a q much wider than the posterior averages the slope of a saturating g
over regions the posterior never visits, so J^T S^-1 J + I stays small, a fixed point at the wrong width
(as Gauss-Newton's precision is wrong at a mode where g is flat). The mode search below repairs a q that
sits away from the posterior's mass; one that is only too wide keeps it.

A point's first visit, and a visit where one of the shared candidate starts beats c from outside q (more
than OTHER_MODE_RADIUS from c in q's metric), takes a Laplace fit (`laplace.laplace`: Gauss-Newton to the
mode, H there), so that a point can move to a higher mode as theta changes; a better candidate inside q is
the same mode seen from its side (c need not be the highest point). The candidates are tried for the whole
batch every RESTART_EVERY steps: about every RESTART_EVERY visits of a point, in one batched pass instead
of a small one every step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..model import LatentGaussianModel, log_joint
from .laplace import (
    FIRST_VISIT_STEPS,
    candidate_starts,
    covariance_cholesky,
    gauss_newton_precision,
    laplace,
    search_chunks,
)

OTHER_MODE_RADIUS = 3.0  # a better candidate start this far from c (in q's standard deviations) is another mode


def refined_gaussian(x: Tensor, centre: Tensor, chol: Tensor, mean: Tensor, u: Tensor, logw: Tensor,
                     sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The next visit's centre c' and Cholesky factor L' (module docstring) from a visit's points x (B, n),
    its q = N(c (B, m), L L^T (B, m, m)), the decoder outputs g(z_g) (B, G, n) and the rule u (G, m),
    log w (G,): returns (B, m), (B, m, m)."""
    w = logw.exp()
    gbar = w @ mean  # (B, n) = E_q g(z)
    moment = mean.transpose(1, 2) @ (w.unsqueeze(1) * u)  # (B, n, m) = E_q[g(z) u^T]
    J = torch.linalg.solve_triangular(chol, moment, upper=False, left=False)  # (B, n, m): J L = E[g u^T]
    s = sigma.expand(mean.shape[-1]) if sigma.dim() == 0 else sigma
    L = covariance_cholesky(gauss_newton_precision(J, s))  # (B, m, m)
    grad = (J.transpose(1, 2) @ ((x - gbar) / s**2).unsqueeze(-1)).squeeze(-1) - centre  # (B, m)
    return centre + (L @ (L.transpose(1, 2) @ grad.unsqueeze(-1))).squeeze(-1), L  # c + H'^-1 grad


class WarmGrids(torch.nn.Module):
    """Per-training-point Gaussians q_b = N(c_b, L_b L_b^T) for adaptive Gauss-Hermite, tracked across visits."""

    def __init__(self, n_train: int, m: int):
        super().__init__()
        self.register_buffer("candidates", candidate_starts(m))  # (C, m)
        self.register_buffer("centres", torch.zeros(n_train, m))  # (N_train, m)
        self.register_buffer("chols", torch.eye(m).expand(n_train, m, m).clone())  # (N_train, m, m)
        self.register_buffer("seen", torch.zeros(n_train, dtype=torch.bool))  # (N_train,) visited before

    @torch.no_grad()
    def start_at(self, centres: Tensor, sd: Tensor) -> None:
        """Every point's q at N(centres_b, diag sd^2), taken as visited: centres (N_train, m), sd (m,)."""
        self.centres.copy_(centres.to(self.centres))
        self.chols.copy_(torch.diag(sd.to(self.chols)).expand_as(self.chols))
        self.seen.fill_(True)

    @torch.no_grad()
    def locate(self, model: LatentGaussianModel, x: Tensor, idx: Tensor, search: bool) -> tuple[Tensor, Tensor]:
        """q for rows `idx` of this visit: the stored one, or a Laplace fit on a first visit and, if `search`,
        where a candidate start beats the stored centre from outside q. Returns centre (B, m), chol (B, m, m)."""
        centre, chol = self.centres[idx].to(x.dtype), self.chols[idx].to(x.dtype)
        fresh = ~self.seen[idx]
        if search and not bool(fresh.all()):
            rows = (~fresh).nonzero().squeeze(1)
            cands = self.candidates.to(x.dtype)
            for part in search_chunks(rows, cands):
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
