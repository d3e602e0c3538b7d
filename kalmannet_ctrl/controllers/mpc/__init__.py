"""Model predictive control as a problem plus a solver object.

:class:`MPC` is the problem (model, cost, horizon, input bounds, estimator, terminal cost,
``cost_state``) and the controller; the method is a solver object holding only its own
settings: :class:`QP` (the exact condensed box-QP of a linear model), :class:`LTV`
(sequential linearization, real-time iteration), :class:`MPPI` (sampling) and :class:`Unfolded`
(K accelerated projected-gradient iterations of the QP with learned step sizes)::

    MPC(model, cost, horizon, input_bounds=..., solver=MPPI(samples=256, seed=0))
"""

from .ltv import LTV
from .mppi import MPPI
from .problem import MPC, MPCSolution, MPCState, PlanWeights
from .qp import QP
from .solver import Plan, PlanRequest, Setup, Solver
from .unfolded import Unfolded, UnfoldedSetup

__all__ = [
    "LTV",
    "MPC",
    "MPPI",
    "QP",
    "MPCSolution",
    "MPCState",
    "Plan",
    "PlanRequest",
    "PlanWeights",
    "Setup",
    "Solver",
    "Unfolded",
    "UnfoldedSetup",
]
