"""A batched exact solver for box-constrained convex quadratic programs (internal module of
:mod:`kalmannet_ctrl.controllers.mpc`, used by its QP and LTV solvers).

Solves, for every row b of a batch,

    minimize ½ z' H_b z + g_b' z   subject to   lo_b <= z <= hi_b,

with H_b symmetric positive definite. Each iteration solves one equality-constrained problem
(the minimizer over a face of the box: some variables fixed at a bound, the others free) with one
batched Cholesky factorization, so the answer is exact to round-off once the optimal face is
found. Two methods run one after the other:

1. The primal-dual active set method (Hintermüller, Ito & Kunisch, SIAM J. Optim. 13, 2002): the
   face is guessed from the projection of z − D⁻¹∇f (D = diag H), the face problem solved, and
   the guess repeated. When the guess repeats, the KKT conditions hold exactly. It usually needs
   a handful of iterations, but it can cycle on badly conditioned problems.
2. For the rows where it has not finished after ``pdas_iterations``: the primal active set
   method (Nocedal & Wright, *Numerical Optimization*, Alg. 16.3) from the best feasible point
   seen: a step toward the face minimizer, cut at the first bound met (which then joins the
   working set), and, at a face minimizer, the release of the bound with the most negative
   multiplier. The objective decreases strictly between face minimizers, so it terminates
   finitely.

Everything runs in torch on the whole batch at once; rows leave the batch as they finish.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["BoxQPResult", "solve_box_qp"]

#: Relative tolerance on round-off: of the KKT residual and of negative multipliers.
_ROUND_OFF = 1e-11


class BoxQPResult(NamedTuple):
    """Solution of a batch of box-constrained QPs.

    Attributes
    ----------
    solution : Tensor, (B, N)
        The minimizers (within the bounds).
    iterations : int
        Face problems solved for the slowest row (0 when the starting point or the
        unconstrained minimizer was already optimal).
    converged : Tensor, (B,) bool
        Rows whose KKT conditions hold; False only for rows stopped by ``max_iterations``
        (then ``solution`` holds the last feasible iterate).

    Shapes
    ------
    solution (B, N), converged (B,)
    """

    solution: Tensor
    iterations: int
    converged: Tensor


def solve_box_qp(
    hessian: Tensor,
    linear: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    start: Tensor | None = None,
    unconstrained: Tensor | None = None,
    max_iterations: int | None = None,
    pdas_iterations: int = 20,
) -> BoxQPResult:
    """Minimize ½ z'Hz + g'z over lo <= z <= hi for a batch of problems, exactly.

    Parameters
    ----------
    hessian : Tensor, (N, N) shared by the batch, or (B, N, N)
        Symmetric positive definite H.
    linear : Tensor, (B, N)
        g.
    lower, upper : Tensor, (N,) or (B, N)
        Bounds with lower <= upper; infinite entries leave that side free.
    start : Tensor, (B, N), optional
        Warm start (e.g. the previous solution, shifted), projected onto the box. Each row
        starts from it or from the projected unconstrained minimizer, whichever has the lower
        objective.
    unconstrained : Tensor, (B, N), optional
        −H⁻¹g when the caller has it already (computed here otherwise). Rows where it lies in
        the box are returned as they are.
    max_iterations : int, optional
        Cap on the face problems solved per row (default 50 + 4 N). Rows that reach it are
        returned with ``converged`` False.
    pdas_iterations : int
        Iterations of the primal-dual active set method before the primal active set method
        takes over.

    Returns
    -------
    BoxQPResult
        solution (B, N), iterations, converged (B,).

    Shapes
    ------
    hessian (N, N) or (B, N, N), linear (B, N), lower/upper (N,) or (B, N),
    start/unconstrained (B, N) -> solution (B, N)

    Notes
    -----
    The caller guarantees valid inputs (finite H and g, H positive definite, lower <= upper);
    nothing is checked here. Call it under ``torch.no_grad()``: the solution is not meant to be
    differentiated through the iterations.
    """
    Bsz, N = linear.shape
    if max_iterations is None:
        max_iterations = 50 + 4 * N
    lo = lower.expand(Bsz, N)
    hi = upper.expand(Bsz, N)
    if unconstrained is None:
        L = torch.linalg.cholesky(hessian)
        if hessian.dim() == 2:
            unconstrained = -torch.cholesky_solve(linear.mT, L).mT
        else:
            unconstrained = -torch.cholesky_solve(linear.unsqueeze(-1), L).squeeze(-1)
    outside = ((unconstrained < lo) | (unconstrained > hi)).any(-1)
    converged = torch.ones(Bsz, dtype=torch.bool, device=linear.device)
    if not bool(outside.any()):
        return BoxQPResult(unconstrained, 0, converged)

    rows = outside.nonzero().squeeze(-1)
    H = hessian if hessian.dim() == 2 else hessian[rows]
    g, lo, hi = linear[rows], lo[rows], hi[rows]
    z = _clip(unconstrained[rows], lo, hi)
    if start is not None:
        z_warm = _clip(start[rows], lo, hi)
        use_warm = _objective(H, g, z_warm) < _objective(H, g, z)
        z = torch.where(use_warm[:, None], z_warm, z)
    solver = _BoxQP(H, g, lo, hi)
    z_sol, ok, iterations = solver.solve(z, max_iterations, pdas_iterations)
    solution = unconstrained.clone()
    solution[rows] = z_sol
    converged[rows] = ok
    return BoxQPResult(solution, iterations, converged)


def _clip(z: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(z, lo), hi)


def _matvec(H: Tensor, z: Tensor) -> Tensor:
    """H z for a batch: z (b, N), H (N, N) or (b, N, N) -> (b, N) (H symmetric)."""
    return z @ H if H.dim() == 2 else (H @ z.unsqueeze(-1)).squeeze(-1)


def _objective(H: Tensor, g: Tensor, z: Tensor) -> Tensor:
    """½ z'Hz + g'z for a batch: z (b, N) -> (b,)."""
    return ((0.5 * _matvec(H, z) + g) * z).sum(-1)


class _BoxQP:
    """The iterations on the rows that need them (b rows, compacted as rows finish)."""

    def __init__(self, H: Tensor, g: Tensor, lo: Tensor, hi: Tensor) -> None:
        self.H, self.g, self.lo, self.hi = H, g, lo, hi
        self.diag = torch.diagonal(H, dim1=-2, dim2=-1).expand_as(g)
        self.absH = H.abs()
        self.zero = torch.zeros((), dtype=g.dtype, device=g.device)
        b = g.shape[0]
        self.rows = torch.arange(b, device=g.device)  # positions in the output of active rows
        self.out = torch.empty_like(g)
        self.ok = torch.zeros(b, dtype=torch.bool, device=g.device)

    # -- bookkeeping -------------------------------------------------------------------------------
    def _finish(self, done: Tensor, z: Tensor, ok: bool, *others: Tensor) -> list[Tensor]:
        """Store the rows ``done``, drop them from the active rows; return ``others`` compacted."""
        idx = self.rows[done]
        self.out[idx] = z[done]
        self.ok[idx] = ok
        keep = ~done
        self.rows = self.rows[keep]
        if self.H.dim() == 3:
            self.H, self.absH = self.H[keep], self.absH[keep]
        self.g, self.lo, self.hi, self.diag = (
            self.g[keep],
            self.lo[keep],
            self.hi[keep],
            self.diag[keep],
        )
        return [t[keep] for t in others]

    def _grad(self, z: Tensor) -> Tensor:
        return _matvec(self.H, z) + self.g

    def _round_off(self, z: Tensor) -> Tensor:
        """Size of the round-off in D⁻¹∇f at z: (|H| |z| + |g|) / diag, times a small factor."""
        return _ROUND_OFF * (_matvec(self.absH, z.abs()) + self.g.abs()) / self.diag

    def _face_minimizer(self, fixed: Tensor, value: Tensor) -> Tensor:
        """argmin ½ z'Hz + g'z with z_i = value_i on ``fixed`` (b, N), the others free.

        Solves [H_FF 0; 0 D_AA] z = [−g_F − H_FA v_A; D_AA v_A] by one batched Cholesky (a
        principal submatrix H_FF of a positive definite H is positive definite).
        """
        free = ~fixed
        v = torch.where(fixed, value, self.zero)
        Hm = torch.where(free.unsqueeze(-1) & free.unsqueeze(-2), self.H, self.zero)
        Hm = Hm + torch.diag_embed(torch.where(fixed, self.diag, self.zero))
        rhs = torch.where(free, -self.g - _matvec(self.H, v), self.diag * v)
        L = torch.linalg.cholesky(Hm)
        z = torch.cholesky_solve(rhs.unsqueeze(-1), L).squeeze(-1)
        return torch.where(fixed, value, z)  # exactly on the bounds

    # -- the two methods ---------------------------------------------------------------------------
    def solve(
        self, z: Tensor, max_iterations: int, pdas_iterations: int
    ) -> tuple[Tensor, Tensor, int]:
        """From feasible z (b, N): (solution, converged, iterations)."""
        grad = self._grad(z)
        # a warm start that is optimal already (within round-off)
        residual = z - _clip(z - grad / self.diag, self.lo, self.hi)
        done = (residual.abs() <= self._round_off(z)).all(-1)
        iterations = 0
        if bool(done.any()):
            z, grad = self._finish(done, z, True, z, grad)
        if self.rows.numel():
            z, iterations = self._primal_dual(z, grad, min(pdas_iterations, max_iterations))
        if self.rows.numel():
            iterations = self._primal(z, max_iterations - iterations, iterations)
        return self.out, self.ok, iterations

    def _primal_dual(self, z: Tensor, grad: Tensor, max_iterations: int) -> tuple[Tensor, int]:
        """Primal-dual active set iterations; returns the best feasible points of the rows left.

        Finished rows (the guessed face repeats: exact KKT point) are stored.
        """
        best, best_f = z, _objective(self.H, self.g, z)
        prev_lo = prev_hi = None  # the face guessed one and two iterations ago
        prev2_lo = prev2_hi = None
        iterations = 0
        for it in range(max_iterations + 1):
            s = z - grad / self.diag
            at_lo, at_hi = s < self.lo, s > self.hi
            if prev_lo is not None:
                done = ((at_lo == prev_lo) & (at_hi == prev_hi)).all(-1)
                if bool(done.any()):
                    # (the clip moves a free variable by round-off at most)
                    z_done = _clip(z, self.lo, self.hi)
                    z, at_lo, at_hi, best, best_f, prev_lo, prev_hi = self._finish(
                        done, z_done, True, z, at_lo, at_hi, best, best_f, prev_lo, prev_hi
                    )
                    if prev2_lo is not None:
                        prev2_lo, prev2_hi = prev2_lo[~done], prev2_hi[~done]
                    if not self.rows.numel():
                        break
            if prev2_lo is not None and bool(
                ((at_lo == prev2_lo) & (at_hi == prev2_hi)).all(-1).all()
            ):
                break  # every row left cycles between two faces
            if it == max_iterations:
                break
            iterations = it + 1
            fixed = at_lo | at_hi
            z = self._face_minimizer(fixed, torch.where(at_lo, self.lo, self.hi))
            grad = self._grad(z)
            prev2_lo, prev2_hi, prev_lo, prev_hi = prev_lo, prev_hi, at_lo, at_hi
            # the projection of the (possibly infeasible) iterate, kept when it is the best
            z_feasible = _clip(z, self.lo, self.hi)
            f = _objective(self.H, self.g, z_feasible)
            better = f < best_f
            best = torch.where(better[:, None], z_feasible, best)
            best_f = torch.where(better, f, best_f)
        return best, iterations

    def _primal(self, z: Tensor, budget: int, iterations: int) -> int:
        """Primal active set iterations from feasible z; every row left is stored."""
        lo, hi = self.lo, self.hi
        w_lo, w_hi = z == lo, z == hi
        w_hi &= ~w_lo  # a fixed variable (lo == hi) counts once
        b = z.shape[0]
        at_minimum = torch.zeros(b, dtype=torch.bool, device=z.device)
        # release one bound at a time after a step of length zero (degenerate), all the bounds
        # with negative multipliers otherwise
        cautious = torch.zeros(b, dtype=torch.bool, device=z.device)
        for step in range(budget + 1):
            if bool(at_minimum.any()):
                # at a face minimizer: optimal, or release bounds with negative multipliers
                grad = self._grad(z)
                mult = torch.where(w_lo, grad, torch.where(w_hi, -grad, self.zero)) / self.diag
                mult = torch.where(w_lo | w_hi, mult + self._round_off(z), self.zero)
                worst, j = mult.min(-1)
                done = at_minimum & (worst >= 0)
                if bool(done.any()):
                    z, w_lo, w_hi, at_minimum, j, mult, cautious = self._finish(
                        done, z, True, z, w_lo, w_hi, at_minimum, j, mult, cautious
                    )
                    if not self.rows.numel():
                        return iterations
                    lo, hi = self.lo, self.hi
                one = torch.arange(z.shape[1], device=z.device) == j.unsqueeze(-1)
                release = at_minimum.unsqueeze(-1) & torch.where(
                    cautious.unsqueeze(-1), one, mult < 0
                )
                w_lo, w_hi = w_lo & ~release, w_hi & ~release
            if step == budget:
                break
            iterations += 1
            fixed = w_lo | w_hi
            target = self._face_minimizer(fixed, torch.where(w_lo, lo, hi))
            d = target - z
            # ratio test: the largest step in [0, 1] that keeps the free variables in the box
            inf = torch.full_like(z, torch.inf)
            ratio = torch.where(
                d < 0, (lo - z) / d, torch.where(d > 0, (hi - z) / d, inf)
            ).clamp_min(0.0)
            ratio = torch.where(fixed, inf, ratio)
            alpha, _ = ratio.min(-1)
            cautious = alpha <= 0.0
            full = alpha >= 1.0
            alpha = alpha.clamp_max(1.0)
            z = torch.where(full[:, None], target, _clip(z + alpha[:, None] * d, lo, hi))
            blocking = ~full[:, None] & ~fixed & (ratio <= alpha[:, None])
            w_lo |= blocking & (d < 0)
            w_hi |= blocking & (d > 0)
            z = torch.where(w_lo, lo, torch.where(w_hi, hi, z))
            at_minimum = full
        self._finish(torch.ones_like(at_minimum), z, False)
        return iterations
