"""``kalmannet_ctrl/Lorenz-v0``: the KalmanNet paper's Lorenz attractor with an additive input."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from kalmannet_ctrl._validation import check_positive_float
from kalmannet_ctrl.models import QuadraticCost, lorenz, noise_from_db

from .core import MismatchParameter, PartiallyKnownEnv, Problem, check_cost
from .vector import PartiallyKnownVectorEnv

__all__ = ["LorenzEnv", "LorenzVectorEnv"]

#: Taylor order J and sampling period Δt of the true model (the paper's data-generating model).
TRUE_ORDER = 5
DT = 0.02


class LorenzEnv(PartiallyKnownEnv):
    """The chaotic Lorenz attractor of the KalmanNet paper, observed through a rotated identity.

    ## Description

    The discrete-time Lorenz system of Revach et al. (KalmanNet, IEEE TSP 2022), Δt = 0.02,
    with an additive input (:func:`kalmannet_ctrl.models.lorenz`)::

        x_{t+1} = Σ_{j=0}^{J} (A(x_t) Δt)^j / j! · x_t + Δt · u_t + w_t,   w_t ~ N(0, q² I)
        y_t     = R_h x_t + v_t,                                          v_t ~ N(0, r² I)

    with σ = 10, ρ = 28, β = 8/3, A(x) the factorization of the authors' released code, J = 5 in
    the simulator and x_0 = (1, 1, 1) (deterministic, as in the paper). The designer's nominal
    model expands the same vector field to a lower Taylor order and believes h = I (see below).

    With zero action this is the paper's state-estimation benchmark: roll out with
    ``np.zeros(3)``, filter the observations with an estimator built on ``nominal_model`` and
    score it against ``info["state"]`` (e.g. :func:`kalmannet_ctrl.metrics.mse_db`). With a
    nonzero action a controller can try to damp the chaotic motion.

    ## Action space

    ``Box(-action_bound, action_bound, (3,), float32)``: u_t, a forcing added to the state
    derivative (state units per second; it moves the state by Δt · u_t in one step). Default
    bound 50 per component, i.e. at most 1 state unit per step. Actions outside the bounds are
    clipped (the clipped action is the one applied and charged); NaN/inf or a wrong shape raise
    an error.

    ## Observation space

    ``Box(-inf, inf, (3,), float32)``: the noisy measurement y_t = R_h x_t + v_t.

    ## Rewards

    −(x_t' Q x_t + u_t' R u_t) with the env's ``cost`` (default Q = 0.01 I, R = 0.01 I), x_t the
    state the action is applied to. With zero action the reward is about −9 per step on the
    attractor (mean ``|x|²`` ≈ 900); it only matters to a controller that regulates the state toward
    the origin (an unstable equilibrium of the uncontrolled system).

    ## Episode end

    Never terminates (no failure states); truncated after 1000 steps (20 s) by the
    registration's ``max_episode_steps``.

    ## Arguments

    - ``inv_r2_db``: measurement noise 1/r² in dB (default 20 dB, r² = 0.01);
    - ``nu_db``: ν = q²/r² in dB (default −20 dB, q² = 1e-4), converted with
      :func:`kalmannet_ctrl.models.noise_from_db`; the same noise in the nominal and true models;
    - ``cost``: a :class:`QuadraticCost` with Q (3, 3) and R (3, 3) (default 0.01 I, 0.01 I);
    - ``action_bound``: actuator limit per component, > 0 (default 50);
    - ``mismatch``: a mapping with any of the keys below.

    ## Nominal model and mismatch

    The true model is ``lorenz(order=5, measurement_rotation_deg=θ)``, the nominal one
    ``lorenz(order=J, measurement_rotation_deg=0)`` (h = I), with:

    - ``nominal_order`` (integer in [1, 10], default 2): the nominal Taylor order J, the paper's
      evolution mismatch J = 2 (J = 5 removes it);
    - ``measurement_rotation_deg`` (in [−180, 180], default 1.0): the angle θ of the true
      R_h = R_z(θ) R_y(θ) R_x(θ), the paper's observation mismatch of its Table VIII (0 removes
      it).

    At the defaults, over zero-action episodes of 200 steps, an extended Kalman filter on the
    nominal model reaches an MSE of about −17 dB against −30 dB for one on the true model (each
    mismatch alone costs 9 to 12 dB).

    ## Version history

    - v0: initial release.
    """

    task: ClassVar[str] = "estimation"
    #: Frames per second of ``render_mode="human"``: one frame per step of 0.02 s (real time).
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 50}
    mismatch_spec: ClassVar[dict[str, MismatchParameter]] = {
        "nominal_order": MismatchParameter(
            2.0, 1.0, 10.0, "Taylor order J of the nominal model", integer=True
        ),
        "measurement_rotation_deg": MismatchParameter(
            1.0, -180.0, 180.0, "rotation of the true h in degrees about each axis"
        ),
    }

    def __init__(
        self,
        *,
        inv_r2_db: float = 20.0,
        nu_db: float = -20.0,
        cost: QuadraticCost | None = None,
        action_bound: float = 50.0,
        mismatch: dict[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        q2, r2 = noise_from_db(inv_r2_db, nu_db)
        if cost is None:
            cost = QuadraticCost(0.01 * np.eye(3), 0.01 * np.eye(3))
        check_cost(cost, 3, 3)
        bound = check_positive_float(action_bound, "action_bound")
        self._q2, self._r2, self._cost, self._bound = q2, r2, cost, bound
        super().__init__(mismatch=mismatch, render_mode=render_mode)

    def build(self, mismatch: dict[str, float]) -> Problem:
        nominal = lorenz(order=int(mismatch["nominal_order"]), dt=DT, q2=self._q2, r2=self._r2)
        true = lorenz(
            order=TRUE_ORDER,
            dt=DT,
            q2=self._q2,
            r2=self._r2,
            measurement_rotation_deg=mismatch["measurement_rotation_deg"],
        )
        return Problem.symmetric(nominal, true, self._cost, self._bound)


class LorenzVectorEnv(PartiallyKnownVectorEnv, env_class=LorenzEnv):
    """Native vector version of :class:`LorenzEnv` (``gymnasium.make_vec``'s entry point)."""
