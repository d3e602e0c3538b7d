"""Controllers on one protocol (Stable-Baselines3's ``predict``): LQR, LQG and their analysis."""

from .analysis import analytic_average_cost
from .base import Controller
from .lqg import LQG, LQGState
from .lqr import LQR

__all__ = ["LQG", "LQR", "Controller", "LQGState", "analytic_average_cost"]
