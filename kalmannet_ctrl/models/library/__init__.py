"""A small library of dynamics: the KalmanNet benchmark models and two mechanical systems.

Every function returns a :class:`~kalmannet_ctrl.models.SystemModel` whose ``params`` hold the
named parameters it was built from (physical constants, noise levels, initial distribution) and
whose ``factory`` rebuilds it, so that ``model.with_params(pole_length=0.6)`` returns the same
system with one parameter changed. The factory is the library function with the model's ``dtype``
and ``device`` bound (a :func:`functools.partial`; ``model.factory.func`` is the function).

All dynamics are written with batched torch operations (batch first) and are differentiable, so
the autograd Jacobians of :class:`SystemModel` work through them. The pendulum and the cart-pole
also have exact closed-form Jacobians of their RK4 step (df/dx, df/du and both with f in one pass,
:meth:`NonlinearModel.f_and_jacobians`), for controllers that linearize at every step.

- :func:`linear_canonical` (n_x = n_y = n, n_u = 0): the KalmanNet paper's linear model;
- :func:`synthetic_nonlinear` (n_x = n_y = n, n_u = 0): its synthetic nonlinear model;
- :func:`lorenz` (n_x = n_u = n_y = 3): its discrete-time Lorenz attractor, plus an input;
- :func:`pendulum` (n_x = 2, n_u = 1, n_y = 1): a torque-driven pendulum, RK4;
- :func:`cartpole` (n_x = 4, n_u = 1, n_y = 2): the cart-pole of Barto et al. / Florian, RK4.

One module per system, all re-exported here: :mod:`.kalmannet_paper` (:func:`noise_from_db`,
:func:`linear_canonical`, :func:`synthetic_nonlinear`; the paper is cited there),
:mod:`.lorenz_system`, :mod:`.pendulum_system`, :mod:`.cartpole_system`; the RK4 step and its
Jacobians are in :mod:`._rk4`; the decorator that checks and records every function's named
parameters, and the noise-parameter table, in :mod:`kalmannet_ctrl.models._params`.
"""

from __future__ import annotations

# Besides the systems, the names the former single module library.py held stay importable here:
# rotation_matrix, noise_parameter_kinds and the private helpers (F401: re-exported on purpose).
from .._geometry import rotation_matrix  # noqa: F401
from .._params import (  # noqa: F401
    _NOISE_PARAMETERS,
    _RESET_VAR,
    Device,
    Dtype,
    _factory,
    _freeze,
    _int,
    _real,
    _selector,
    _tuples,
    noise_parameter_kinds,
)
from ._rk4 import (  # noqa: F401
    Partials,
    _rk4_combine,
    _rk4_input_jacobian,
    _rk4_stages,
    _rk4_state_jacobian,
    _rk4_step,
    _rk4_step_and_jacobians,
)
from .cartpole_system import cartpole
from .kalmannet_paper import linear_canonical, noise_from_db, synthetic_nonlinear
from .lorenz_system import lorenz
from .pendulum_system import pendulum

__all__ = [
    "cartpole",
    "linear_canonical",
    "lorenz",
    "noise_from_db",
    "pendulum",
    "synthetic_nonlinear",
]
