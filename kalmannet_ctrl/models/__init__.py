"""What is known about a system: state-space models, costs, a library of dynamics, mismatch."""

from .base import NonlinearModel, SystemModel, Trajectory, psd_sqrt
from .cost import QuadraticCost
from .library import (
    cartpole,
    linear_canonical,
    lorenz,
    noise_from_db,
    pendulum,
    synthetic_nonlinear,
)
from .linear import LinearGaussianModel
from .linearize import linearize
from .mismatch import (
    misstate_noise,
    rotate_dynamics,
    rotate_measurement,
    rotation_matrix,
    scale_parameters,
    set_parameters,
)
from .residual import ResidualModel

__all__ = [
    "LinearGaussianModel",
    "NonlinearModel",
    "QuadraticCost",
    "ResidualModel",
    "SystemModel",
    "Trajectory",
    "cartpole",
    "linear_canonical",
    "linearize",
    "lorenz",
    "misstate_noise",
    "noise_from_db",
    "pendulum",
    "psd_sqrt",
    "rotate_dynamics",
    "rotate_measurement",
    "rotation_matrix",
    "scale_parameters",
    "set_parameters",
    "synthetic_nonlinear",
]
