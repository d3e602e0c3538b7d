"""``kalmannet_ctrl/CartPole-v0``: balance a pole on a cart with misstated physical parameters."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from kalmannet_ctrl._validation import check_positive_float, check_positive_int
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.models import (
    QuadraticCost,
    SystemModel,
    cartpole,
    scale_parameters,
    set_parameters,
)

from ._render import CartPoleRenderer
from .core import MismatchParameter, PartiallyKnownEnv, Problem, check_cost
from .vector import PartiallyKnownVectorEnv

__all__ = ["CARTPOLE_LARGE_MISMATCH", "CartPoleEnv", "CartPoleVectorEnv", "default_cartpole_cost"]

#: A mismatch beyond the default at which LQG on the linearized nominal model visibly fails
#: (see :class:`CartPoleEnv`, section Nominal model and mismatch). Pass it as
#: ``mismatch=CARTPOLE_LARGE_MISMATCH``; the env keeps its own copy.
CARTPOLE_LARGE_MISMATCH: dict[str, float] = {
    "pole_length": 0.45,
    "pole_mass": 2.0,
    "cart_mass": 0.6,
    "friction": 1.0,
}


def default_cartpole_cost() -> QuadraticCost:
    """The default stage cost of :class:`CartPoleEnv`: Q = diag(1, 0.1, 10, 0.1), R = 0.01.

    Weights on (x [m], ẋ [m/s], θ [rad], θ̇ [rad/s]) and on the force F [N]: the pole angle
    matters most, the cart should stay near the origin, and a 10 N push costs as much as a
    1 m offset.
    """
    return QuadraticCost(np.diag([1.0, 0.1, 10.0, 0.1]), [[0.01]])


#: The failure costs of :class:`CartPoleEnv` (its ``failure`` argument; see its Rewards).
_FAILURE_RULES = ("penalty", "rest_of_horizon")


class CartPoleEnv(PartiallyKnownEnv):
    """Keep a pole upright on a cart pushed by a bounded horizontal force, from noisy readings.

    ## Description

    The cart-pole of Barto, Sutton & Anderson (1983) with Florian's (2007) corrected equations
    (:func:`kalmannet_ctrl.models.cartpole`): state (x, ẋ, θ, θ̇) with x the cart position (m)
    and θ the pole angle from the upright position (rad, θ > 0 leaning toward +x), integrated
    with one RK4 step of Δt = 0.02 s per env step with the force held constant. A random force
    disturbance (std 0.5 N, held over the step) acts as process noise. Only the cart position
    and the pole angle are measured, with noise (std 0.01 m and 0.01 rad). The designer knows a
    nominal model with the textbook parameters (cart 1 kg, pole 0.1 kg, pole half-length 0.5 m,
    no friction); the simulator runs a true model whose parameters differ by the ``mismatch``.
    The task is to keep the pole upright with the cart near the origin. The upright
    equilibrium is the origin (x = 0, F = 0), so a linearization about it works directly in the
    env's coordinates.

    ## Action space

    ``Box(-action_bound, action_bound, (1,), float32)``: the horizontal force F on the cart (N),
    default bound 10 N. Actions outside the bounds are clipped (the clipped force is the one
    applied and charged); NaN/inf or a wrong shape raise an error.

    ## Observation space

    ``Box(-inf, inf, (2,), float32)``: the noisy measurement (x [m], θ [rad]), θ unwrapped.

    ## Rewards

    −(s_t' Q s_t + F_t R F_t) with s_t the state the force is applied to and the env's ``cost``
    (default :func:`default_cartpole_cost`: Q = diag(1, 0.1, 10, 0.1), R = 0.01), minus a
    failure cost on the step that ends an episode by failure:

    - v1 (``failure="rest_of_horizon"``): the rest of the episode is charged as if it were spent
      at the failure, (H − t) · max(s' Q s, s_lim' Q s_lim) after the t-th step of an episode
      of H steps (the registration's ``max_episode_steps``, 500, or ``horizon``), with s the
      failed state and s_lim = (``position_limit``, 0, ``angle_limit``, 0) the corner of the
      allowed region (8.26 with the defaults). Every state the episode could have stayed in
      costs at most that much in position and angle, so failing is never cheaper than staying
      up for the rest of the episode, whatever the controller and for every discount factor
      γ ≤ 1 (discounting only shrinks the later stage costs that failing saves). With u =
      −α K_LQR x on the true state the return rises monotonically from zero force to LQR.
      With ``failure_discount`` γ < 1 the remaining steps are charged as a learner that
      discounts by γ counts them, c · (1 − γ^(H − t)) / (1 − γ) for c = max(s' Q s, s_lim' Q
      s_lim): the discounted return of staying at the failure for the rest of the episode, so
      failing is still never cheaper than staying up under that discount, while the largest
      reward a learner sees drops from H · c to at most c / (1 − γ) (4,130 → 413 at γ = 0.98).
      A training setting (``train_rl``'s ``discount_failure``); comparisons keep the default 1.
    - v0 (``failure="penalty"``): a fixed penalty of 100 (``failure_penalty``). It makes falling
      fast pay: putting a failure off by one step changes the return by
      γ^k (100 (1 − γ) − c_k), negative while the stage cost c_k of a falling pole (2.7–5.8)
      exceeds 100 (1 − γ), so a policy trained with γ = 0.99 learns to drop the pole at once.
      Kept for reproducibility.

    ## Episode end

    Terminates (with the failure cost above) when the new true state has
    ``|θ| > angle_limit`` (default 0.5 rad, about 29°: the pole has fallen beyond what a
    balancing controller recovers from) or ``|x| > position_limit`` (default 2.4 m: the cart
    left the track). Truncated after 500 steps (10 s) by the registration's
    ``max_episode_steps``.

    ## Arguments

    - ``mismatch``: a mapping with any of the keys below.
    - ``action_bound``: force limit in N, > 0 (default 10).
    - ``angle_limit``: failure threshold on ``|θ|`` in rad, in (0, π] (default 0.5).
    - ``position_limit``: failure threshold on ``|x|`` in m, > 0 (default 2.4).
    - ``cost``: a :class:`~kalmannet_ctrl.models.QuadraticCost` on 4 states and 1 input
      (default :func:`default_cartpole_cost`).
    - ``failure``: ``"penalty"`` (v0's default) or ``"rest_of_horizon"`` (v1's), see Rewards.
    - ``horizon``: the episode length the v1 failure cost counts to when the env has no
      ``max_episode_steps`` of its own (made without ``gymnasium.make``); default 500.
    - ``failure_discount``: the discount γ in (0, 1] of the v1 failure cost's remaining steps,
      see Rewards (default 1: every remaining step counts in full).

    The initial state is x_0 ~ N(0, (0.05² / 3) I), the variance of Gymnasium's
    U(−0.05, 0.05) resets, in both models.

    ## Nominal model and mismatch

    ``nominal_model`` is ``cartpole()`` with its defaults. ``true_model`` is the same model with
    (``mismatch`` keys; scales are true / nominal):

    - ``pole_length`` (default 0.7, range [0.25, 4]): scale of the pole's half-length
      (nominal 0.5 m; the true pole is shorter, hence faster to fall, than believed);
    - ``pole_mass`` (default 1.5, range [0.25, 4]): scale of the pole mass (nominal 0.1 kg);
    - ``cart_mass`` (default 0.8, range [0.25, 4]): scale of the cart mass (nominal 1 kg);
    - ``friction`` (default 0.5, range [0, 10]): the true viscous cart friction in N·s/m, an
      absolute value since the nominal model has none.

    The process noise of the true model is the same force disturbance, mapped through the true
    dynamics. LQG designed on the nominal model linearized about the upright equilibrium (Kalman
    filter and LQR gain of that linear model, with the bounds of the action space) keeps the pole
    up for all 500 steps in 100 of 100 seeded episodes at the default mismatch, with a mean
    return of about −5.6 against −4.2 for the same design on the true model. At the larger
    mismatch :data:`CARTPOLE_LARGE_MISMATCH` (pole_length 0.45, pole_mass 2, cart_mass 0.6,
    friction 1 N·s/m) it degrades visibly: the pole stays up in only about 5–10 % of the
    episodes (mean return about −630), while LQG designed on the true model still keeps it up in
    all of them (about −5.1).

    ## Version history

    - v1: failing is charged for the rest of the episode (``failure="rest_of_horizon"``), so
      that it never costs less than staying up; the default of the comparisons and benchmarks.
    - v0: initial release, a fixed failure penalty of 100.
    """

    #: Frames per second of ``render_mode="human"``: one frame per step of 0.02 s (real time).
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 50}
    mismatch_spec: ClassVar[dict[str, MismatchParameter]] = {
        "pole_length": MismatchParameter(0.7, 0.25, 4.0, "true / nominal pole half-length"),
        "pole_mass": MismatchParameter(1.5, 0.25, 4.0, "true / nominal pole mass"),
        "cart_mass": MismatchParameter(0.8, 0.25, 4.0, "true / nominal cart mass"),
        "friction": MismatchParameter(0.5, 0.0, 10.0, "true viscous cart friction in N·s/m"),
    }
    failure_penalty: ClassVar[float] = 100.0

    def __init__(
        self,
        *,
        mismatch: dict[str, Any] | None = None,
        action_bound: float = 10.0,
        angle_limit: float = 0.5,
        position_limit: float = 2.4,
        cost: QuadraticCost | None = None,
        failure: str = "penalty",
        horizon: int = 500,
        failure_discount: float = 1.0,
        render_mode: str | None = None,
    ) -> None:
        if failure not in _FAILURE_RULES:
            raise ParameterError(
                f"failure: expected one of {list(_FAILURE_RULES)}, found {failure!r}"
            )
        self.failure = failure
        self.horizon = check_positive_int(horizon, "horizon")
        self.failure_discount = check_positive_float(failure_discount, "failure_discount")
        if self.failure_discount > 1.0:
            raise ParameterError(
                f"failure_discount: expected a value in (0, 1], found {failure_discount}"
            )
        self._bound = check_positive_float(action_bound, "action_bound")
        self.angle_limit = check_positive_float(angle_limit, "angle_limit")
        if self.angle_limit > math.pi:
            raise ParameterError(f"angle_limit: expected a value in (0, π], found {angle_limit}")
        self.position_limit = check_positive_float(position_limit, "position_limit")
        if cost is None:
            cost = default_cartpole_cost()
        check_cost(cost, 4, 1)
        self._cost = cost
        self._nominal = cartpole()
        super().__init__(mismatch=mismatch, render_mode=render_mode)

    def build(self, mismatch: dict[str, float]) -> Problem:
        nominal = self._nominal
        true: SystemModel = scale_parameters(
            nominal,
            pole_length=mismatch["pole_length"],
            pole_mass=mismatch["pole_mass"],
            cart_mass=mismatch["cart_mass"],
        )
        true = set_parameters(true, friction=mismatch["friction"])
        return Problem.symmetric(nominal, true, self._cost, self._bound)

    def failed(self, x: np.ndarray) -> np.ndarray:
        """The pole fell past ``angle_limit`` or the cart left the track; x (B, 4) -> (B,)."""
        return (np.abs(x[:, 2]) > self.angle_limit) | (np.abs(x[:, 0]) > self.position_limit)

    def failure_cost(self, x: np.ndarray, steps_left: np.ndarray | None) -> np.ndarray:
        """The failure cost of the Rewards section; x (B, 4), steps_left (B,) -> (B,)."""
        if self.failure == "penalty":
            return np.full(x.shape[0], self.failure_penalty)
        if steps_left is None:  # not reached: _horizon always knows the episode length
            steps_left = np.full(x.shape[0], self.horizon)
        corner = np.array([self.position_limit, 0.0, self.angle_limit, 0.0])
        limit = float(corner @ self._Q @ corner)
        xc = self.cost_state(x)
        at_failure = np.einsum("bi,ij,bj->b", xc, self._Q, xc)
        steps = np.asarray(steps_left, dtype=np.float64)
        gamma = self.failure_discount
        weight = steps if gamma == 1.0 else -np.expm1(steps * math.log(gamma)) / (1.0 - gamma)
        return weight * np.maximum(at_failure, limit)

    def _horizon(self) -> int | None:
        return super()._horizon() or self.horizon

    def make_renderer(self) -> CartPoleRenderer:
        """Frames of the mechanism (see :meth:`PartiallyKnownEnv.render`)."""
        return CartPoleRenderer()


class CartPoleVectorEnv(PartiallyKnownVectorEnv, env_class=CartPoleEnv):
    """Native vector version of :class:`CartPoleEnv` (``gymnasium.make_vec``'s entry point)."""
