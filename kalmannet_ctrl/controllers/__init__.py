"""Controllers on one base (Stable-Baselines3's ``predict`` template, :class:`BaseController`):
LQR, LQG, MPC (problem + solver objects), convex-optimization policies, neural MPC, the
estimation-only controller, and the analysis of linear loops. Stable-Baselines3 policies are
adapted in :mod:`kalmannet_ctrl.rl`."""

from .analysis import analytic_average_cost
from .base import BaseController, Controller, OutputFeedback
from .convex_policy import ConvexPolicy, ConvexPolicyState
from .estimation import EstimationOnly, EstimationState
from .lqg import LQG, LQGState
from .lqr import LQR, design_model
from .mpc import LTV, MPC, MPPI, QP, MPCSolution, MPCState, Unfolded
from .neural_mpc import NeuralMPC

__all__ = [
    "LQG",
    "LQR",
    "LTV",
    "MPC",
    "MPPI",
    "QP",
    "BaseController",
    "Controller",
    "ConvexPolicy",
    "ConvexPolicyState",
    "EstimationOnly",
    "EstimationState",
    "LQGState",
    "MPCSolution",
    "MPCState",
    "NeuralMPC",
    "OutputFeedback",
    "Unfolded",
    "analytic_average_cost",
    "design_model",
]
