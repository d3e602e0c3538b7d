"""Deep unfolding of MPC's condensed box-QP: a fixed number of accelerated projected-gradient
iterations with learned step sizes (and, optionally, learned QP data)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from ..._validation import check_positive_int
from ...models.base import SystemModel
from .qp import QP, QPSetup
from .solver import Plan, PlanRequest, Setup, Solver

if TYPE_CHECKING:
    from .problem import MPC

__all__ = ["Unfolded", "UnfoldedSetup"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Unfolded(Solver):
    """K iterations of accelerated projected gradient on the condensed QP, unrolled.

    The QP of :class:`~.qp.QP`, min ½ U'HU + U'G x_0 over the input box, is not solved exactly
    but by K fixed iterations from the shifted previous plan z_0, Nesterov's accelerated
    projected gradient for strongly convex problems (FISTA with the constant momentum of a
    known condition number):

        z_{k+1} = Π(y_k − α_k (H y_k + G x_0)),   y_{k+1} = z_{k+1} + β (z_{k+1} − z_k),

    with y_0 = z_0, Π the projection onto the box and β = (√κ − 1)/(√κ + 1), κ = λ_max/λ_min
    of the problem's QP Hessian. The step sizes α_k = e^{θ_k}/λ_max are positive by
    parametrisation and start at 1/λ_max (θ = 0), the step of the convergence theory: the plan
    then converges to the exact QP's as K grows, the error shrinking by about 1 − 1/√κ per
    iteration. The
    latency is that of K matrix-vector products, whatever the bounds do. Every operation is
    differentiable, so the step sizes (the :class:`UnfoldedSetup`'s parameters ``log_steps``)
    and, with ``learn_qp``, the QP's data (H by a Cholesky factor, so that it stays positive
    definite, and G) can be trained end to end on the closed-loop cost
    (:func:`~kalmannet_ctrl.training.tune_policy`): deep unfolding. Needs a
    LinearGaussianModel and no ``cost_state``, as QP.

    Parameters
    ----------
    K : int
        Iterations per planning call, >= 1 (the solver named ``"unfolded"`` has the default, 5).
    learn_qp : bool
        Also make H (by its Cholesky factor) and G parameters (default: the step sizes only).

    Raises
    ------
    TypeError, ParameterError
        If ``K`` is not an integer >= 1.

    Shapes
    ------
    iterates (B, H·n_u); parameters log_steps (K,), hessian_factor (H·n_u, H·n_u),
    G (H·n_u, n_x)

    Examples
    --------
    >>> Unfolded(K=5)
    Unfolded(K=5, learn_qp=False)
    """

    name: ClassVar[str] = "unfolded"
    K: int = 5
    learn_qp: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", check_positive_int(self.K, "K"))
        if not isinstance(self.learn_qp, bool):
            raise TypeError(f"learn_qp: expected a bool, found {type(self.learn_qp).__name__}")

    def check(self, model: SystemModel, *, cost_state: bool) -> None:
        """A LinearGaussianModel and no ``cost_state`` (the condensed QP's, as :class:`~.qp.QP`).

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
        QP().check(model, cost_state=cost_state)

    def bind(self, problem: MPC) -> UnfoldedSetup:
        """The condensed QP of ``problem`` and the unrolled iterations' parameters.

        Shapes
        ------
        problem : horizon H, n_x, n_u -> UnfoldedSetup
        """
        return UnfoldedSetup(self, problem)


class UnfoldedSetup(Setup, nn.Module):
    """The unrolled solver of one problem: an ``nn.Module`` whose parameters are the iterations'.

    Attributes
    ----------
    log_steps : Parameter, (K,)
        θ_k: the step sizes are α_k = e^{θ_k} / ``lipschitz``.
    hessian_factor : Parameter or buffer, (H·n_u, H·n_u)
        Below the diagonal: the Cholesky factor L of H = LL'; on it: log of L's diagonal.
    G : Parameter or buffer, (H·n_u, n_x)
    lipschitz : float
        λ_max of the problem's QP Hessian.
    momentum : float
        β = (√κ − 1)/(√κ + 1), κ the Hessian's condition number.
    exact : QPSetup
        The exact condensed QP (Φ, Γ, H, G) the data start from.

    Shapes
    ------
    plan: x0 (B, n_x), warm (B, H, n_u) -> plan (B, H, n_u), u (B, n_u)
    """

    solver: Unfolded
    differentiable = True

    def __init__(self, solver: Unfolded, problem: MPC) -> None:
        nn.Module.__init__(self)
        Setup.__init__(self, solver, problem)
        exact = QPSetup(QP(), problem)
        self.exact = exact
        hess = exact.hessian.detach()
        eig = torch.linalg.eigvalsh(hess)
        self.lipschitz = float(eig[-1])
        root = math.sqrt(float(eig[-1] / eig[0]))
        self.momentum = (root - 1.0) / (root + 1.0)
        L = torch.linalg.cholesky(hess)
        raw = torch.tril(L, -1) + torch.diag(torch.log(torch.diagonal(L)))
        self.log_steps = nn.Parameter(torch.zeros(solver.K, dtype=hess.dtype, device=hess.device))
        if solver.learn_qp:
            self.hessian_factor = nn.Parameter(raw)
            self.G = nn.Parameter(exact.G.detach().clone())
        else:
            self.register_buffer("hessian_factor", raw)
            self.register_buffer("G", exact.G.detach().clone())

    def hessian(self) -> Tensor:
        """H = LL' from ``hessian_factor``.

        Shapes
        ------
        -> (H·n_u, H·n_u)
        """
        raw = self.hessian_factor
        L = torch.tril(raw, -1) + torch.diag_embed(torch.exp(torch.diagonal(raw)))
        return L @ L.mT

    def plan(self, request: PlanRequest) -> Plan:
        """K accelerated projected-gradient iterations from the (projected) warm start.

        Of the request, only ``x0`` and ``warm`` are used. Differentiable with respect to
        both and to the parameters.

        Shapes
        ------
        x0 (B, n_x), warm (B, H, n_u) -> plan (B, H, n_u), u (B, n_u)
        """
        x0, warm = request.x0, request.warm
        problem = self.problem
        B = x0.shape[0]
        bounds = problem.plan_bounds
        hess = self.hessian().to(x0.dtype)
        g = x0 @ self.G.to(x0.dtype).mT
        steps = torch.exp(self.log_steps.to(x0.dtype)) / self.lipschitz
        z = warm.reshape(B, -1)
        if bounds is not None:
            z = torch.clamp(z, bounds[0].to(x0.dtype), bounds[1].to(x0.dtype))
        y = z
        for k in range(self.solver.K):
            z_next = y - steps[k] * (y @ hess + g)
            if bounds is not None:
                z_next = torch.clamp(z_next, bounds[0].to(x0.dtype), bounds[1].to(x0.dtype))
            y = z_next + self.momentum * (z_next - z)
            z = z_next
        plan = z.reshape(B, problem.horizon, problem.n_u)
        return Plan(plan, plan[:, 0], None, self.solver.K)

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """x_0 … x_H on the linear model (the exact QP's condensed form).

        Shapes
        ------
        x0 (b, n_x), U (b, H, n_u) -> (b, H + 1, n_x)
        """
        return self.exact.rollout(x0, U)
