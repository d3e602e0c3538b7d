"""``kalmannet_ctrl/LinearSystem-v0``: a linear Gaussian system with a mismatched nominal model."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.linalg

from kalmannet_ctrl._validation import check_positive_float
from kalmannet_ctrl.errors import DimensionError
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    QuadraticCost,
    misstate_noise,
    rotate_dynamics,
    rotate_measurement,
)

from .core import MismatchParameter, PartiallyKnownEnv, Problem, check_cost
from .vector import PartiallyKnownVectorEnv

__all__ = ["LinearSystemEnv", "LinearSystemVectorEnv", "default_linear_system"]


def default_linear_system() -> LinearGaussianModel:
    """The default nominal system: a lightly damped oscillator sampled at 10 Hz.

    ẍ = −ω² x − 2ζω ẋ + u with ω = 1 rad/s, ζ = 0.05, discretized with a zero-order hold at
    Δt = 0.1 s (eigenvalues of modulus 0.995: stable, but slow to settle without control).
    State (position, velocity), one force input, the position measured with noise:
    process_cov = 0.01 I, measurement_cov = 0.1, x_0 ~ N(0, I).
    """
    omega, zeta, dt = 1.0, 0.05, 0.1
    a = np.array([[0.0, 1.0], [-(omega**2), -2 * zeta * omega]])
    b = np.array([[0.0], [1.0]])
    # zero-order hold: expm(dt [[a, b], [0, 0]]) = [[A, B], [0, I]] (python-control's
    # sample_system gives the same; not imported here, as it takes seconds to import)
    block = scipy.linalg.expm(dt * np.block([[a, b], [np.zeros((1, 3))]]))
    return LinearGaussianModel(
        block[:2, :2],
        block[:2, 2:],
        [[1.0, 0.0]],
        0.01 * np.eye(2),
        [[0.1]],
        x0_cov=np.eye(2),
        dt=dt,
        name="damped_oscillator",
    )


class LinearSystemEnv(PartiallyKnownEnv):
    """A linear Gaussian system whose nominal model differs from the simulated one.

    ## Description

    x_{t+1} = A x_t + B u_t + w_t, y_t = C x_t + v_t. The designer knows a nominal model
    (default: :func:`default_linear_system`, a lightly damped oscillator); the simulator runs a
    true model derived from it by the ``mismatch``. Linear and Gaussian, so LQG on the true model
    is optimal and its average cost is known exactly
    (:func:`kalmannet_ctrl.controllers.analytic_average_cost`): the oracle for this env.

    ## Action space

    ``Box(-action_bound, action_bound, (n_u,), float32)``: the input u_t. Actions outside the
    bounds are clipped (the clipped action is the one applied and charged); NaN/inf or a wrong
    shape raise an error.

    ## Observation space

    ``Box(-inf, inf, (n_y,), float32)``: the noisy measurement y_t.

    ## Rewards

    −(x_t' Q x_t + u_t' R u_t) with the env's ``cost`` (default Q = I, R = 0.1 I), x_t the state
    the action is applied to.

    ## Episode end

    Never terminates; truncated after 200 steps by the registration's ``max_episode_steps``.

    ## Arguments

    - ``model``: the nominal :class:`LinearGaussianModel` (default :func:`default_linear_system`).
    - ``cost``: a :class:`QuadraticCost` (default Q = I, R = 0.1 I).
    - ``action_bound``: actuator limit, > 0 (default 20, wide enough that LQG rarely saturates).
    - ``mismatch``: a mapping with any of the keys below.

    ## Nominal model and mismatch

    The true model is the nominal one with, in this order:

    - ``rotation_A_deg`` (default 2.0): the whole transition rotated, A' = R_θ A, B' = R_θ B
      (:func:`~kalmannet_ctrl.models.rotate_dynamics`, plane of the first two states);
    - ``rotation_C_deg`` (default 0.0): the measured direction rotated, C' = C R_θ
      (:func:`~kalmannet_ctrl.models.rotate_measurement` with ``side="right"``);
    - ``input_scale`` (default 1.3): B' = s B (the actuator is 30 % stronger than believed);
    - ``process_noise_scale``, ``measurement_noise_scale`` (default 1.0): the true noise
      covariances are these multiples of the nominal ones (misstated noise).

    At the default mismatch LQG on the nominal model costs about 0.76 per step against the
    oracle's 0.46.

    ## Version history

    - v0: initial release.
    """

    #: Frames per second of ``render_mode="human"``: one frame per step of 0.1 s (real time).
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 10}
    mismatch_spec: ClassVar[dict[str, MismatchParameter]] = {
        "rotation_A_deg": MismatchParameter(2.0, -180.0, 180.0, "rotation of A and B in degrees"),
        "rotation_C_deg": MismatchParameter(0.0, -180.0, 180.0, "rotation of C in degrees"),
        "input_scale": MismatchParameter(1.3, 1e-6, 1e6, "true B / nominal B"),
        "process_noise_scale": MismatchParameter(1.0, 0.0, 1e6, "true / nominal process_cov"),
        "measurement_noise_scale": MismatchParameter(
            1.0, 1e-6, 1e6, "true / nominal measurement_cov"
        ),
    }

    def __init__(
        self,
        *,
        model: LinearGaussianModel | None = None,
        cost: QuadraticCost | None = None,
        action_bound: float = 20.0,
        mismatch: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        model = default_linear_system() if model is None else model
        if not isinstance(model, LinearGaussianModel):
            raise TypeError(f"model: expected a LinearGaussianModel, found {type(model).__name__}")
        if model.n_u < 1:
            raise DimensionError(f"model: expected at least one input, found n_u = {model.n_u}")
        if cost is None:
            cost = QuadraticCost(np.eye(model.n_x), 0.1 * np.eye(model.n_u))
        check_cost(cost, model.n_x, model.n_u)
        bound = check_positive_float(action_bound, "action_bound")
        self._model, self._cost, self._bound = model, cost, bound
        super().__init__(mismatch=mismatch, render_mode=render_mode)

    def build(self, mismatch: dict[str, float]) -> Problem:
        nominal = self._model
        true: LinearGaussianModel = nominal
        if mismatch["rotation_A_deg"] != 0.0:
            if nominal.n_x < 2:
                raise DimensionError("mismatch['rotation_A_deg']: needs n_x >= 2, found n_x = 1")
            true = rotate_dynamics(true, mismatch["rotation_A_deg"])
        if mismatch["rotation_C_deg"] != 0.0:
            if nominal.n_x < 2:
                raise DimensionError("mismatch['rotation_C_deg']: needs n_x >= 2, found n_x = 1")
            true = rotate_measurement(true, mismatch["rotation_C_deg"], side="right")
        if mismatch["input_scale"] != 1.0:
            true = true.replace(B=true.B * mismatch["input_scale"])
        true = misstate_noise(
            true,
            process_scale=mismatch["process_noise_scale"],
            measurement_scale=mismatch["measurement_noise_scale"],
        )
        return Problem.symmetric(nominal, true, self._cost, self._bound)


class LinearSystemVectorEnv(PartiallyKnownVectorEnv, env_class=LinearSystemEnv):
    """Native vector version of :class:`LinearSystemEnv` (``gymnasium.make_vec``'s entry point)."""
