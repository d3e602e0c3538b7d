"""``kalmannet_ctrl/Pendulum-v0``: torque-limited swing-up and balance with a misstated pendulum."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from kalmannet_ctrl._validation import check_positive_float
from kalmannet_ctrl.models import QuadraticCost, pendulum, set_parameters

from ._render import PendulumRenderer
from .core import MismatchParameter, PartiallyKnownEnv, Problem, check_cost
from .vector import PartiallyKnownVectorEnv

__all__ = [
    "PENDULUM_X0_COV",
    "PENDULUM_X0_MEAN",
    "PendulumEnv",
    "PendulumVectorEnv",
    "default_pendulum_cost",
]

#: Mean of the initial state (θ [rad], θ̇ [rad/s]): hanging down (θ = π) at rest.
PENDULUM_X0_MEAN: tuple[float, float] = (math.pi, 0.0)
#: Covariance of the initial state: std 0.1 rad on θ and 0.1 rad/s on θ̇, independent.
PENDULUM_X0_COV: tuple[tuple[float, float], tuple[float, float]] = ((0.01, 0.0), (0.0, 0.01))


def default_pendulum_cost() -> QuadraticCost:
    """The default stage cost of :class:`PendulumEnv`: Q = diag(1, 0.1), R = 0.001.

    Gymnasium's Pendulum weights θ² + 0.1 θ̇² + 0.001 τ², charged on the angle θ measured from
    upright and wrapped to [−π, π): see :class:`PendulumEnv`, section Rewards.
    """
    return QuadraticCost(np.diag([1.0, 0.1]), [[0.001]])


class PendulumEnv(PartiallyKnownEnv):
    """Swing a pendulum up from hanging down and balance it, with a weak motor and angle readings.

    ## Description

    A point mass on a massless rod driven by a torque at the pivot
    (:func:`kalmannet_ctrl.models.pendulum`): m l² θ̈ = m g l sin θ − b θ̇ + τ with θ the angle
    from the **upright** position (θ = 0 up, θ = ±π down), integrated with one RK4 step of
    Δt = 0.05 s per env step with the torque held constant. Process noise is a random kick of
    std 0.01 rad/s on θ̇ per step. Only the angle is measured (unwrapped), with noise of std
    0.02 rad. Each episode starts hanging down: x_0 ~ N((π, 0), diag(0.1², 0.1²))
    (:data:`PENDULUM_X0_MEAN`, :data:`PENDULUM_X0_COV`, in both models). The motor is weak: the
    default torque limit of 2 N·m is well below the nominal gravity torque m g l = 9.81 N·m, so
    the pendulum cannot be lifted directly and must be swung up by pumping energy, then
    balanced. The designer knows a nominal model (m = 1 kg, l = 1 m, b = 0.1 N·m·s/rad); the
    simulator runs one whose mass, length and damping differ by the ``mismatch``. Strongly
    nonlinear: a linearization about upright says nothing about the swing-up.

    ## Action space

    ``Box(-action_bound, action_bound, (1,), float32)``: the torque τ (N·m), default bound 2.
    Actions outside the bounds are clipped (the clipped torque is the one applied and charged);
    NaN/inf or a wrong shape raise an error.

    ## Observation space

    ``Box(-inf, inf, (1,), float32)``: the noisy measurement of θ (rad), unwrapped (no reduction
    modulo 2π, so the reading is continuous while the pendulum turns over).

    ## Rewards

    −(s_t' Q s_t + τ_t R τ_t) with s_t = (wrap(θ_t), θ̇_t), the state the torque is applied to
    with its angle wrapped to [−π, π) (:meth:`cost_state`), and the env's ``cost`` (default
    :func:`default_pendulum_cost`: Q = diag(1, 0.1), R = 0.001, Gymnasium's Pendulum weights).
    Hanging down costs π² ≈ 9.87 per step; every upright position θ = 0, ±2π, … is the best one,
    so a swing-up may end after any number of turns. (The state, ``info["state"]`` and the
    measurement keep the unwrapped angle.)

    ## Episode end

    Never terminates (the pendulum cannot fail); truncated after 400 steps (20 s) by the
    registration's ``max_episode_steps``. Pumping at full torque takes about 6–9 s to bring the
    nominal pendulum up and 9–11 s at the default mismatch, which leaves about half of the
    episode for balancing.

    ## Arguments

    - ``mismatch``: a mapping with any of the keys below.
    - ``action_bound``: torque limit in N·m, > 0 (default 2).
    - ``cost``: a :class:`~kalmannet_ctrl.models.QuadraticCost` on 2 states and 1 input
      (default :func:`default_pendulum_cost`).

    ## Nominal model and mismatch

    ``nominal_model`` is ``pendulum(x0_mean=PENDULUM_X0_MEAN, x0_cov=PENDULUM_X0_COV)`` with its
    other defaults (m = 1 kg, l = 1 m, b = 0.1 N·m·s/rad, g = 9.81 m/s², Δt = 0.05 s).
    ``true_model`` is the same model with each parameter multiplied by a ``mismatch`` scale
    (true / nominal):

    - ``mass`` (default 1.2, range [0.25, 4]): the mass m;
    - ``length`` (default 1.1, range [0.25, 4]): the rod length l;
    - ``damping`` (default 1.5, range [0, 4]): the viscous damping b (0 removes it).

    The ranges keep the RK4 step of 0.05 s stable for every combination (``|λ| Δt ≤ 1.4`` for the
    modes linearized about upright and hanging down; RK4 is stable up to about 2.8). At the
    default mismatch the true pendulum is heavier and longer (gravity torque 12.9 N·m instead
    of 9.81) and more damped than the nominal one.

    ## Version history

    - v0: initial release.
    """

    task: ClassVar[str] = "swing-up"
    #: Frames per second of ``render_mode="human"``: one frame per step of 0.05 s (real time).
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 20}
    mismatch_spec: ClassVar[dict[str, MismatchParameter]] = {
        "mass": MismatchParameter(1.2, 0.25, 4.0, "true / nominal mass"),
        "length": MismatchParameter(1.1, 0.25, 4.0, "true / nominal rod length"),
        "damping": MismatchParameter(1.5, 0.0, 4.0, "true / nominal viscous damping"),
    }

    def __init__(
        self,
        *,
        mismatch: dict[str, Any] | None = None,
        action_bound: float = 2.0,
        cost: QuadraticCost | None = None,
        render_mode: str | None = None,
    ) -> None:
        self._bound = check_positive_float(action_bound, "action_bound")
        if cost is None:
            cost = default_pendulum_cost()
        check_cost(cost, 2, 1)
        self._cost = cost
        self._nominal = pendulum(x0_mean=PENDULUM_X0_MEAN, x0_cov=PENDULUM_X0_COV)
        super().__init__(mismatch=mismatch, render_mode=render_mode)

    #: θ is an angle, in the state (x[0]) and in the measurement (y = θ + noise).
    angle_states: ClassVar[tuple[int, ...]] = (0,)
    angle_measurements: ClassVar[tuple[int, ...]] = (0,)

    #: Success: ``|θ|`` (wrapped, from upright) below this many rad …
    success_angle: ClassVar[float] = 0.5
    #: … at each of the episode's last this many states (5 s).
    success_steps: ClassVar[int] = 100

    def succeeded(self, states: np.ndarray, lengths: np.ndarray, failed: np.ndarray) -> np.ndarray:
        """Swung up and balanced: ``|wrap(θ)|`` < :attr:`success_angle` (0.5 rad) at each of the
        last :attr:`success_steps` (100, i.e. 5 s) states of the episode."""
        states = np.asarray(states, dtype=np.float64)
        lengths = np.asarray(lengths, dtype=np.int64)
        theta = np.abs(np.mod(states[:, :, 0] + np.pi, 2 * np.pi) - np.pi)  # (B, T + 1)
        index = np.arange(states.shape[1])
        window = (index[None, :] <= lengths[:, None]) & (
            index[None, :] > lengths[:, None] - self.success_steps
        )
        up = np.where(window, theta < self.success_angle, True).all(axis=1)
        return up & ~np.asarray(failed, dtype=bool)

    def cost_state(self, x: Any) -> Any:
        """The state with θ wrapped to [−π, π): the reward charges the distance to upright.

        x (B, 2) -> (B, 2): a float64 NumPy array for an array; for a torch tensor, a tensor of
        its dtype (so that MPC's cost on sampled rollouts stays in torch).
        """
        if isinstance(x, torch.Tensor):
            theta = torch.remainder(x[..., :1] + math.pi, 2 * math.pi) - math.pi
            return torch.cat([theta, x[..., 1:]], -1)
        out = np.array(x, dtype=np.float64, copy=True)
        out[:, 0] = np.mod(out[:, 0] + np.pi, 2 * np.pi) - np.pi
        return out

    def build(self, mismatch: dict[str, float]) -> Problem:
        nominal = self._nominal
        p = nominal.params
        true = set_parameters(
            nominal,
            mass=p["mass"] * mismatch["mass"],
            length=p["length"] * mismatch["length"],
            damping=p["damping"] * mismatch["damping"],
        )
        return Problem.symmetric(nominal, true, self._cost, self._bound)

    def make_renderer(self) -> PendulumRenderer:
        """Frames of the mechanism (see :meth:`PartiallyKnownEnv.render`)."""
        return PendulumRenderer()


class PendulumVectorEnv(PartiallyKnownVectorEnv, env_class=PendulumEnv):
    """Native vector version of :class:`PendulumEnv` (``gymnasium.make_vec``'s entry point)."""
