"""The solver interface of :class:`~kalmannet_ctrl.controllers.mpc.MPC`: a method apart from the
problem it solves (as python-control keeps ``OptimalControlProblem`` apart from its method).

A :class:`Solver` holds only its own settings, checked when it is built. :meth:`Solver.bind`
does the per-problem work (condensing, weight casts, a seeded generator) once, when an MPC is
built, and returns a :class:`Setup`: the solver's state for that problem, which plans for it.
One solver object may therefore serve any number of MPCs.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from ...models.base import SystemModel

if TYPE_CHECKING:
    from .problem import MPC

__all__ = ["Plan", "PlanRequest", "Setup", "Solver"]


class PlanRequest(NamedTuple):
    """What an MPC hands its solver for one planning call (:meth:`Setup.plan`).

    Attributes
    ----------
    x0 : Tensor, (B, n_x)
        The states planned from: x̂_{t|t} in the loop, ``x`` in :meth:`MPC.solve`.
    warm : Tensor, (B, H, n_u)
        The initial plan, already shifted (projected onto the bounds by the solver where it
        needs it).
    trajectory : Tensor, (B, H + 1, n_x), or None
        From :meth:`Setup.warm_trajectory` (None: a solver that keeps a trajectory, LTV,
        starts from a rollout of ``warm``; the others do not use it).
    deterministic : bool
        For sampling solvers (MPPI): the mean plan's first input (True) or a sampled one.
    generator : torch.Generator or None
        For sampling solvers: the noise source of this call (None: the setup's
        :attr:`Setup.generator`).

    Shapes
    ------
    x0 (B, n_x), warm (B, H, n_u), trajectory (B, H + 1, n_x) or None
    """

    x0: Tensor
    warm: Tensor
    trajectory: Tensor | None = None
    deterministic: bool = True
    generator: torch.Generator | None = None


class Plan(NamedTuple):
    """What a :class:`Setup` returns for one planning call.

    Attributes
    ----------
    plan : Tensor, (B, H, n_u)
        u_0 … u_{H−1}, in the model's dtype.
    u : Tensor, (B, n_u)
        The action (the plan's first input, or MPPI's sampled one).
    trajectory : Tensor, (B, H + 1, n_x), or None
        LTV's linearization points for the next step; None for the other solvers.
    iterations : int
        The solver's work count (see :class:`~kalmannet_ctrl.controllers.mpc.MPCSolution`).

    Shapes
    ------
    plan (B, H, n_u), u (B, n_u), trajectory (B, H + 1, n_x) or None
    """

    plan: Tensor
    u: Tensor
    trajectory: Tensor | None
    iterations: int


class Solver(abc.ABC):
    """A method for MPC's planning problem, holding only its own settings.

    Subclasses are frozen, keyword-only dataclasses whose constructor checks the settings
    (typed errors naming the setting); they implement :meth:`bind` and may refine
    :meth:`check`.

    Attributes
    ----------
    name : str
        The short name (``"qp"``, ``"ltv"``, ``"mppi"``) that stands for the default-configured
        solver in ``MPC(..., solver=name)``.

    Shapes
    ------
    no tensors: the settings are numbers, flags and dtypes
    """

    name: ClassVar[str]

    def check(self, model: SystemModel, *, cost_state: bool) -> None:
        """Raise the typed error if this solver cannot serve ``model`` (with a ``cost_state``
        hook when ``cost_state``); called by MPC before :meth:`bind`. Nothing by default.

        Shapes
        ------
        model : n_x, n_u of any size
        """
        return None

    @abc.abstractmethod
    def bind(self, problem: MPC) -> Setup:
        """The per-problem state: everything computed once for ``problem`` (an MPC whose
        weights, bounds and initial plan are set).

        Shapes
        ------
        problem : horizon H, n_x, n_u -> a Setup planning (B, H, n_u)
        """

    def settings(self) -> dict[str, Any]:
        """The constructor's keywords and their values: ``type(solver)(**solver.settings())``
        builds an equal solver.

        Shapes
        ------
        no tensors
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_show(v)}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class Setup(abc.ABC):
    """A solver bound to one problem: what :meth:`Solver.bind` returns, and what plans.

    Parameters
    ----------
    solver : Solver
    problem : MPC

    Attributes
    ----------
    solver, problem
    generator : torch.Generator or None
        The noise source of a sampling solver (MPPI); None otherwise.
    differentiable : bool
        Whether :meth:`plan` is differentiable with respect to the request's ``x0`` and the
        setup's parameters (the unfolded solver); MPC then plans in its control loop with
        gradients enabled (False: under ``torch.no_grad()``, from a detached estimate).

    Shapes
    ------
    plan: PlanRequest (x0 (B, n_x), warm (B, H, n_u)) -> Plan (plan (B, H, n_u), u (B, n_u))
    """

    generator: torch.Generator | None = None
    differentiable: ClassVar[bool] = False

    def __init__(self, solver: Solver, problem: MPC) -> None:
        self.solver = solver
        self.problem = problem

    @abc.abstractmethod
    def plan(self, request: PlanRequest) -> Plan:
        """The plan for one call: from ``request.x0``, warm-started from ``request.warm`` (see
        :class:`PlanRequest` for what each field holds and which solvers use it).

        Shapes
        ------
        request: x0 (B, n_x), warm (B, H, n_u), trajectory (B, H + 1, n_x) -> plan (B, H, n_u),
        u (B, n_u)
        """

    def warm_trajectory(
        self, xhat: Tensor, warm: Tensor, previous: Tensor | None, fresh: Tensor | None
    ) -> Tensor | None:
        """The trajectory :meth:`plan` starts from at a control step: None unless the solver
        keeps one (LTV).

        Parameters
        ----------
        xhat : Tensor, (B, n_x)
            The estimate x̂_{t|t}.
        warm : Tensor, (B, H, n_u)
            The shifted plan.
        previous : Tensor, (B, H + 1, n_x), or None
            The trajectory of the previous step (``MPCState.trajectory``).
        fresh : Tensor of bool, (B,), or None
            Rows that start an episode at this step (``episode_start``).

        Shapes
        ------
        xhat (B, n_x), warm (B, H, n_u), previous (B, H + 1, n_x) -> (B, H + 1, n_x) or None
        """
        return None

    def rollout(self, x0: Tensor, U: Tensor) -> Tensor:
        """x_0 … x_H under the plan on the noise-free model (the problem's :meth:`MPC.rollout`
        unless the solver has a faster exact form).

        Shapes
        ------
        x0 (b, n_x), U (b, H, n_u) -> (b, H + 1, n_x)
        """
        return self.problem.rollout(x0, U)


def finite(costs: Tensor) -> Tensor:
    """Costs with NaN/inf (diverged rollouts) replaced by the largest float.

    Shapes
    ------
    costs (...) -> (...)
    """
    return torch.where(torch.isfinite(costs), costs, torch.finfo(costs.dtype).max)


def warn_unconverged(converged: Tensor, solver: Solver, setting: str) -> None:
    """A RuntimeWarning when some rows of a box-QP solve stopped at the iteration cap.

    Shapes
    ------
    converged (B,) bool
    """
    if not bool(converged.all()):
        warnings.warn(
            f"MPC: the box-QP solver reached {type(solver).__name__}'s {setting} in "
            f"{int((~converged).sum())} of {converged.numel()} rows; their plans are the best "
            f"feasible ones found, not the optimum. Raise {setting}.",
            RuntimeWarning,
            stacklevel=4,
        )


def _show(value: Any) -> str:
    if isinstance(value, torch.Generator):
        return "<torch.Generator>"
    return repr(value)
