"""The exact solver of MPC on a linear model: the condensed box-constrained QP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from ..._validation import check_positive_int
from ...models.base import SystemModel
from ...models.linear import LinearGaussianModel
from .._inputs import check_linear_model
from ._boxqp import solve_box_qp
from .solver import Plan, PlanRequest, Setup, Solver, warn_unconverged

if TYPE_CHECKING:
    from .problem import MPC

__all__ = ["QP", "QPSetup"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class QP(Solver):
    """The condensed QP, solved exactly (the default for a :class:`LinearGaussianModel`).

    The problem is condensed to a box-constrained QP in the H·n_u inputs, min ½ U'HU + U'G x_0,
    with H, its Cholesky factor and H⁻¹G computed once when the MPC is built. Without an
    active bound the plan is −H⁻¹G x_0 (one matrix product); otherwise an exact batched
    active-set solver (primal-dual, then primal active set) takes over, warm-started from the
    shifted plan. With ``terminal_cost="lqr"`` and inactive bounds the action is exactly the
    LQR action. Needs a LinearGaussianModel and no ``cost_state`` (the QP is quadratic in x).

    Parameters
    ----------
    max_iterations : int, optional
        Cap on the face problems solved per QP (default 50 + 4 H n_u); a RuntimeWarning is
        issued and the best feasible plan used when it is reached.

    Raises
    ------
    TypeError, ParameterError
        If ``max_iterations`` is not an integer >= 1.

    Shapes
    ------
    condensed: Φ (H·n_x, n_x), Γ (H·n_x, H·n_u), H (H·n_u, H·n_u), G (H·n_u, n_x)

    Notes
    -----
    Condensing suits moderate horizons; for a strongly unstable A and a long horizon the QP
    becomes badly conditioned. The matrices are computed from the model when the MPC is built:
    rebuild the MPC after changing the model's tensors.

    Examples
    --------
    >>> QP(max_iterations=100)
    QP(max_iterations=100)
    """

    name: ClassVar[str] = "qp"
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.max_iterations is not None:
            cap = check_positive_int(self.max_iterations, "max_iterations")
            object.__setattr__(self, "max_iterations", cap)

    def check(self, model: SystemModel, *, cost_state: bool) -> None:
        """A LinearGaussianModel and no ``cost_state``.

        Raises
        ------
        TypeError
            If ``model`` is not a LinearGaussianModel.
        ValueError
            If a ``cost_state`` hook is given.

        Shapes
        ------
        model : n_x, n_u of any size
        """
        check_linear_model(
            model,
            "model",
            "use solver='ltv' or 'mppi' (LTV(), MPPI()), or linearize the model first "
            "(kalmannet_ctrl.models.linearize)",
            who="solver='qp'",
        )
        if cost_state:
            raise ValueError(
                "cost_state: not supported by solver='qp' (the condensed QP is quadratic in x); "
                "use solver='ltv' or 'mppi' (LTV(), MPPI())"
            )

    def bind(self, problem: MPC) -> QPSetup:
        """The condensed QP of ``problem``.

        Shapes
        ------
        problem : horizon H, n_x, n_u -> QPSetup (see :class:`QPSetup`)
        """
        return QPSetup(self, problem)


class QPSetup(Setup):
    """The condensed QP of one linear problem: X = Φ x_0 + Γ U stacks x_1 … x_H, and the QP
    is min ½ U'HU + U'G x_0 with H = Γ'WΓ + R̄, G = Γ'WΦ (W the stage weights).

    Attributes
    ----------
    Phi, Gamma, hessian, G : Tensor
    gain : Tensor, (H·n_u, n_x)
        H⁻¹G: the unconstrained plan is −H⁻¹G x_0.

    Shapes
    ------
    Phi (H·n_x, n_x), Gamma (H·n_x, H·n_u), hessian (H·n_u, H·n_u), G (H·n_u, n_x),
    gain (H·n_u, n_x)
    """

    solver: QP

    def __init__(self, solver: QP, problem: MPC) -> None:
        super().__init__(solver, problem)
        model = problem.model
        assert isinstance(model, LinearGaussianModel)
        A, Bm = model.A.detach(), model.B.detach()
        Hh, n, m = problem.horizon, problem.n_x, problem.n_u
        powers = [A]
        for _ in range(Hh - 1):
            powers.append(A @ powers[-1])
        Phi = torch.stack(powers, 0)  # (H, n, n): A^1 … A^H
        AkB = torch.stack([Bm] + [P @ Bm for P in powers[:-1]], 0)  # A^k B, k = 0 … H−1
        # x_{k+1} = A^{k+1} x_0 + Σ_{j<=k} A^{k−j} B u_j: block (k, j) of Γ is A^{k−j} B
        lag = torch.arange(Hh, device=A.device)[:, None] - torch.arange(Hh, device=A.device)
        Gamma = AkB[lag.clamp_min(0)] * (lag >= 0)[:, :, None, None].to(A.dtype)  # (H, H, n, m)
        Gamma = Gamma.permute(0, 2, 1, 3).reshape(Hh * n, Hh * m)
        W = torch.block_diag(*problem.state_weights.unbind(0))
        WG = W @ Gamma
        hess = Gamma.mT @ WG + problem.input_weight
        hess = 0.5 * (hess + hess.mT)
        L = torch.linalg.cholesky(hess)
        G = WG.mT @ Phi.reshape(Hh * n, n)  # Γ'WΦ
        self.Phi = Phi.reshape(Hh * n, n)
        self.Gamma = Gamma
        self.hessian = hess
        self.G = G
        self.gain = torch.cholesky_solve(G, L)  # H⁻¹G: the unconstrained plan is −H⁻¹G x_0

    def plan(self, request: PlanRequest) -> Plan:
        """The exact plan: −H⁻¹G x_0, or the box-QP's solution when a bound is active.

        Of the request, only ``x0`` and ``warm`` are used.

        Shapes
        ------
        x0 (B, n_x), warm (B, H, n_u) -> plan (B, H, n_u), u (B, n_u)
        """
        x0, warm = request.x0, request.warm
        problem = self.problem
        B = x0.shape[0]
        U = -(x0 @ self.gain.mT)
        iterations = 0
        if problem.plan_bounds is not None:
            low, high = problem.plan_bounds
            res = solve_box_qp(
                self.hessian,
                x0 @ self.G.mT,
                low,
                high,
                start=warm.reshape(B, -1),
                unconstrained=U,
                max_iterations=self.solver.max_iterations,
            )
            warn_unconverged(res.converged, self.solver, "max_iterations")
            U, iterations = res.solution, res.iterations
        plan = U.reshape(B, problem.horizon, problem.n_u)
        return Plan(plan, plan[:, 0], None, iterations)

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """x_0 … x_H = (x_0, Φ x_0 + Γ U) on the linear model.

        Shapes
        ------
        x0 (b, n_x), U (b, H, n_u) -> (b, H + 1, n_x)
        """
        X = x0 @ self.Phi.mT + U.reshape(U.shape[0], -1) @ self.Gamma.mT
        return torch.cat([x0.unsqueeze(1), X.view(x0.shape[0], self.problem.horizon, -1)], 1)
