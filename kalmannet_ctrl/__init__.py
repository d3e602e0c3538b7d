"""kalmannet_ctrl: neural-augmented state estimation and control.

Model-based filters and controllers (KF, EKF, UKF, LQR, LQG) and their learned counterparts on
one set of conventions; see the README for a tour.
"""

from . import errors
from .models import LinearGaussianModel, NonlinearModel, QuadraticCost, SystemModel, Trajectory

__version__ = "0.1.0"

__all__ = [
    "LinearGaussianModel",
    "NonlinearModel",
    "QuadraticCost",
    "SystemModel",
    "Trajectory",
    "__version__",
    "errors",
]
