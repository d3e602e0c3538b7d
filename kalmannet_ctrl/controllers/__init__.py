"""Controllers on one protocol (Stable-Baselines3's ``predict``): LQR, LQG, MPC, neural MPC,
adapters of Stable-Baselines3 policies, and the analysis of linear loops."""

from .analysis import analytic_average_cost
from .base import Controller
from .lqg import LQG, LQGState
from .lqr import LQR, design_model
from .mpc import MPC, MPCSolution, MPCState
from .neural_mpc import NeuralMPC
from .rl import PolicyObservation, RLController, RLState

__all__ = [
    "LQG",
    "LQR",
    "MPC",
    "Controller",
    "LQGState",
    "MPCSolution",
    "MPCState",
    "NeuralMPC",
    "PolicyObservation",
    "RLController",
    "RLState",
    "analytic_average_cost",
    "design_model",
]
