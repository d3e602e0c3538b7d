"""kalmannet_ctrl: neural-augmented state estimation and control.

Model-based filters and controllers (KF, EKF, UKF, LQR, LQG) and their learned counterparts on
one set of conventions; see the README for a tour.

The names below are loaded on first use (PEP 562), so that importing one layer, e.g. the
environments (``import kalmannet_ctrl.envs``, which every ``gym.make`` of our ids does), loads
that layer and the ones below it only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors

__version__ = "0.2.0"

#: public name -> the module it is defined in
_LAZY = {
    "LQG": "controllers",
    "LQR": "controllers",
    "Controller": "controllers",
    "analytic_average_cost": "controllers",
    "Estimator": "estimators",
    "ExtendedKalmanFilter": "estimators",
    "FilterResult": "estimators",
    "KalmanFilter": "estimators",
    "UnscentedKalmanFilter": "estimators",
    "mse": "metrics",
    "mse_db": "metrics",
    "LinearGaussianModel": "models",
    "NonlinearModel": "models",
    "QuadraticCost": "models",
    "SystemModel": "models",
    "Trajectory": "models",
}

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kalmannet_ctrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


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
