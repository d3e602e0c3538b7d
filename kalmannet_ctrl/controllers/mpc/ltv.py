"""Sequential linearization (real-time iteration) for MPC on a nonlinear model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from ..._validation import check_positive_int
from ...models.base import one_pass_jacobians
from ...models.linear import LinearGaussianModel
from ._boxqp import solve_box_qp
from .solver import Plan, PlanRequest, Setup, Solver, finite, warn_unconverged

if TYPE_CHECKING:
    from .problem import MPC

__all__ = ["LTV", "LTVSetup"]

#: Step lengths the line search tries (besides keeping the previous plan).
_LINE_SEARCH_STEPS = (1.0, 0.5, 0.25)


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class LTV(Solver):
    """Sequential linearization: the real-time iteration of Diehl et al. (2005) in
    multiple-shooting form (the default for a nonlinear model).

    f is linearized at the previous plan and its predicted states, shifted by one step and
    started from x̂_{t|t} (all H Jacobians in one batched call; no sequential rollout: the
    defects f(x̄_k, ū_k) − x̄_{k+1} enter the linearized dynamics), and the condensed box-QP
    gives the correction (Gauss-Newton on the cost); repeated ``iterations`` times. Rows
    without a previous plan (first step, episode start) are linearized along the rollout of
    the zero plan. A ``cost_state`` hook is treated as a translation (its Jacobian as the
    identity), which holds for wrappings. A local method: it follows the gradient from the
    warm start (e.g. it does not find a pendulum's swing-up from hanging down, a stationary
    point; use :class:`MPPI`). On a linear model without ``cost_state`` one iteration gives
    the :class:`QP` answer.

    Parameters
    ----------
    iterations : int
        Linearizations per step (>= 1).
    line_search : bool
        Choose the step length 1, 1/2 or 1/4 (or keep the previous plan) by the cost of the
        plans rolled out on the model (False: no rollout; with it, one more rollout, H
        sequential calls of f, per iteration).
    max_qp_iterations : int, optional
        Cap on the face problems solved per box-QP (default 50 + 4 H n_u); a RuntimeWarning
        is issued and the best feasible correction used when it is reached.

    Raises
    ------
    TypeError
        If ``iterations`` or ``max_qp_iterations`` is not an integer, or ``line_search`` not
        a bool.
    ParameterError
        If ``iterations`` or ``max_qp_iterations`` is < 1.

    Shapes
    ------
    per iteration: Jacobians (B·H, n_x, n_x) and (B·H, n_x, n_u), one (B, H·n_u) box-QP

    Examples
    --------
    >>> LTV(iterations=2, line_search=True)
    LTV(iterations=2, line_search=True, max_qp_iterations=None)
    """

    name: ClassVar[str] = "ltv"
    iterations: int = 1
    line_search: bool = False
    max_qp_iterations: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "iterations", check_positive_int(self.iterations, "iterations"))
        if not isinstance(self.line_search, bool):
            raise TypeError(
                f"line_search: expected a bool, found {type(self.line_search).__name__}"
            )
        if self.max_qp_iterations is not None:
            cap = check_positive_int(self.max_qp_iterations, "max_qp_iterations")
            object.__setattr__(self, "max_qp_iterations", cap)

    def bind(self, problem: MPC) -> LTVSetup:
        """The linearization set-up of ``problem`` (the model's one-pass Jacobians, if any).

        Shapes
        ------
        problem : horizon H, n_x, n_u -> LTVSetup
        """
        return LTVSetup(self, problem)


class LTVSetup(Setup):
    """:class:`LTV` bound to one problem.

    Shapes
    ------
    plan: x0 (B, n_x), warm (B, H, n_u), trajectory (B, H + 1, n_x) -> plan (B, H, n_u),
    trajectory (B, H + 1, n_x)
    """

    solver: LTV

    def __init__(self, solver: LTV, problem: MPC) -> None:
        super().__init__(solver, problem)
        self._joint_jacobians = one_pass_jacobians(problem.model)

    def warm_trajectory(
        self, xhat: Tensor, warm: Tensor, previous: Tensor | None, fresh: Tensor | None
    ) -> Tensor:
        """Linearization points: the previous prediction shifted, from x̂.

        Rows without one (first step, episode start) roll the warm plan out on the model.

        Shapes
        ------
        xhat (B, n_x), warm (B, H, n_u), previous (B, H + 1, n_x), fresh (B,) bool
        -> (B, H + 1, n_x)
        """
        problem = self.problem
        if previous is None or previous.shape[0] != xhat.shape[0]:
            return problem.rollout(xhat, warm)
        traj = torch.cat([xhat.unsqueeze(1), previous[:, 2:], previous[:, -1:]], 1)
        if fresh is not None:
            traj = traj.clone()
            traj[fresh] = problem.rollout(xhat[fresh], warm[fresh])
        return traj

    def plan(self, request: PlanRequest) -> Plan:
        """Gauss-Newton SQP iterations in multiple-shooting form.

        Linearization points X (X[:, 0] = x_0; ``request.trajectory``, or the rollout of
        ``warm`` when None) need not follow the model: the defects f(x̄_k, ū_k) − x̄_{k+1}
        enter the linearized dynamics, so one batched evaluation of f and its Jacobians at the
        H points replaces a sequential rollout. ``deterministic`` and ``generator`` are not
        used.

        Shapes
        ------
        x0 (B, n_x), warm (B, H, n_u), trajectory (B, H + 1, n_x) -> plan (B, H, n_u),
        trajectory (B, H + 1, n_x)
        """
        problem = self.problem
        x0, warm, trajectory = request.x0, request.warm, request.trajectory
        X = problem.rollout(x0, warm) if trajectory is None else trajectory
        B, Hh, m = warm.shape
        n = problem.n_x
        W, R_bar = problem.state_weights, problem.input_weight
        U = problem.clip_plan(warm)
        total = 0
        for _ in range(self.solver.iterations):
            A, Bm, F = self._linearize(X[:, :-1].reshape(B * Hh, n), U.reshape(B * Hh, m))
            defects = F.view(B, Hh, n) - X[:, 1:]
            S, free = condense(A.view(B, Hh, n, n), Bm.view(B, Hh, n, m), defects)
            # residual of the cost at the linear prediction with δU = 0 (cost_state taken as a
            # translation: its Jacobian is the identity)
            E = problem.cost_x(X[:, 1:]) + free
            WS = W @ S  # (B, H, n, N)
            hess = torch.einsum("bhin,bhim->bnm", S, WS) + R_bar
            hess = 0.5 * (hess + hess.mT)
            flat = U.reshape(B, Hh * m)
            grad = torch.einsum("bhin,bhi->bn", WS, E) + flat @ R_bar
            if problem.plan_bounds is None:
                L = torch.linalg.cholesky(hess)
                dU = -torch.cholesky_solve(grad.unsqueeze(-1), L).squeeze(-1)
            else:
                low, high = problem.plan_bounds
                res = solve_box_qp(
                    hess,
                    grad,
                    low - flat,
                    high - flat,
                    max_iterations=self.solver.max_qp_iterations,
                )
                warn_unconverged(res.converged, self.solver, "max_qp_iterations")
                dU, total = res.solution, total + res.iterations
            if self.solver.line_search:
                U, X = self._line_search(x0, U, dU.view(B, Hh, m))
            else:
                # the new linearization points: the linearized model's prediction
                dX = (S @ dU[:, None, :, None]).squeeze(-1) + free  # (B, H, n)
                X = torch.cat([X[:, :1], X[:, 1:] + dX], 1)
                U = problem.clip_plan(U + dU.view(B, Hh, m))
        return Plan(U, U[:, 0], X, total)

    def _line_search(self, x0: Tensor, U: Tensor, dU: Tensor) -> tuple[Tensor, Tensor]:
        """The best of U + α dU (α in _LINE_SEARCH_STEPS, and 0) by the rolled-out cost.

        Returns the plan (B, H, n_u) and its rollout (B, H + 1, n_x) on the model.
        """
        problem = self.problem
        B, Hh, m = U.shape
        steps = torch.tensor((*_LINE_SEARCH_STEPS, 0.0), dtype=U.dtype, device=U.device)
        C = steps.numel()
        cand = problem.clip_plan(U.unsqueeze(1) + steps.view(1, C, 1, 1) * dU.unsqueeze(1))
        Xc = problem.rollout(
            x0.unsqueeze(1).expand(B, C, -1).reshape(B * C, -1), cand.reshape(B * C, Hh, m)
        ).view(B, C, Hh + 1, -1)
        best = finite(problem.plan_cost(Xc, cand)).argmin(1)
        rows = torch.arange(B, device=U.device)
        return cand[rows, best], Xc[rows, best]

    def _linearize(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(∂f/∂x (M, n_x, n_x), ∂f/∂u (M, n_x, n_u), f (M, n_x)) at M points.

        A linear model gives A and B; a model with its own one-pass ``f_and_jacobians`` (exact
        closed forms, e.g. the library's pendulum and cart-pole, or a residual network's) gives
        that. Otherwise one forward and one backward pass of f on the points repeated n_x
        times, the i-th copy seeded with e_i (the rows of f are independent): exact, and faster
        than ``torch.func.jacrev`` or two Jacobian calls. A model whose f is not differentiable
        by torch falls back to its ``f_jacobian`` and ``input_jacobian``.
        """
        model = self.problem.model
        if isinstance(model, LinearGaussianModel):
            M = x.shape[0]
            return model.A.expand(M, -1, -1), model.B.expand(M, -1, -1), model.f(x, u)
        if self._joint_jacobians is not None:
            F, A, Bm = self._joint_jacobians(x, u)
            return A, Bm, F
        M, n = x.shape
        xr = x.repeat(n, 1).requires_grad_(True)
        ur = u.repeat(n, 1).requires_grad_(True)
        with torch.enable_grad():
            out = model.f(xr, ur)
        if not out.requires_grad:
            return model.f_jacobian(x, u), model.input_jacobian(x, u), out[:M]
        seed = torch.eye(n, dtype=x.dtype, device=x.device).repeat_interleave(M, 0)
        gx, gu = torch.autograd.grad(out, (xr, ur), seed, allow_unused=True)
        gx = torch.zeros_like(xr) if gx is None else gx
        gu = torch.zeros_like(ur) if gu is None else gu
        return (
            gx.view(n, M, n).transpose(0, 1),
            gu.view(n, M, -1).transpose(0, 1),
            out[:M].detach(),
        )


def condense(A: Tensor, Bm: Tensor, defects: Tensor) -> tuple[Tensor, Tensor]:
    """The linearized prediction δx_{k+1} = A_k δx_k + B_k δu_k + d_k, δx_0 = 0, condensed.

    Returns S and c with δx_{k+1} = Σ_{j<=k} S[k, :, j] δu_j + c_k. The recursion is one
    block-bidiagonal unit lower-triangular system (I − 𝒜) δX = ℬ δU + d, solved by one batched
    forward substitution (fewer, larger operations than a loop over k).

    Shapes
    ------
    A (b, H, n, n), Bm (b, H, n, m), defects (b, H, n) -> S (b, H, n, H·m), c (b, H, n)
    """
    b, Hh, n, m = Bm.shape
    N = Hh * m
    k = torch.arange(Hh, device=A.device)
    # (advanced indices on two separated dimensions put the indexed dimension first)
    lower = A.new_zeros(b, Hh, n, Hh, n)
    lower[:, k[1:], :, k[:-1], :] = -A[:, 1:].transpose(0, 1)  # −A_k at block (k, k − 1)
    rhs = A.new_zeros(b, Hh, n, N + 1)  # [ℬ | d]
    rhs[..., :N].view(b, Hh, n, Hh, m)[:, k, :, k, :] = Bm.transpose(0, 1)
    rhs[..., N] = defects
    out = torch.linalg.solve_triangular(
        lower.view(b, Hh * n, Hh * n), rhs.view(b, Hh * n, N + 1), upper=False, unitriangular=True
    ).view(b, Hh, n, N + 1)
    return out[..., :N], out[..., N]
