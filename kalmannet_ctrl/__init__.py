"""kalmannet_ctrl: neural-augmented state estimation and control.

Model-based filters and controllers (KF, EKF, UKF, LQR, LQG) and their learned counterparts on
one set of conventions; see the README for a tour.
"""

from . import errors
from .controllers import LQG, LQR, Controller, analytic_average_cost
from .estimators import (
    Estimator,
    ExtendedKalmanFilter,
    FilterResult,
    KalmanFilter,
    UnscentedKalmanFilter,
)
from .metrics import mse, mse_db
from .models import LinearGaussianModel, NonlinearModel, QuadraticCost, SystemModel, Trajectory

__version__ = "0.1.0"

__all__ = [
    "LQG",
    "LQR",
    "Controller",
    "Estimator",
    "ExtendedKalmanFilter",
    "FilterResult",
    "KalmanFilter",
    "LinearGaussianModel",
    "NonlinearModel",
    "QuadraticCost",
    "SystemModel",
    "Trajectory",
    "UnscentedKalmanFilter",
    "__version__",
    "analytic_average_cost",
    "errors",
    "mse",
    "mse_db",
]
