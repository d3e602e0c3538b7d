"""Observation wrappers that give a policy what output feedback needs: an estimate or a history.

The environments observe noisy measurements y_t only; a memoryless policy on y_t cannot control
a partially observed system well. These wrappers turn the measurements (and the actions applied)
into the observation a model-free RL policy is trained on:

- :class:`EstimateObservation`: the estimate x̂_{t|t} of an estimator (Kalman filter, EKF,
  KalmanNet, ...) run on the measurements and the applied actions;
- :class:`MeasurementHistory`: the last k measurements (and optionally actions), stacked;
- :class:`TrueStateObservation`: the true state itself, a privileged observation for the first
  rung of a sanity check (can the algorithm learn the task at all?), not a deployable policy
  input.

Angle components (those a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv` declares in
``angle_states`` / ``angle_measurements``, e.g. the pendulum's θ; none for other envs) are shown
to the policy as (cos, sin), as Gymnasium's Pendulum does, so that the upright θ = 0, ±2π, … is
one point of its input.

Both compute their observation with :class:`~kalmannet_ctrl.rl.PolicyObservation`, the object
:class:`~kalmannet_ctrl.rl.RLController` uses at evaluation, so that a policy trained on a
wrapped env runs unchanged on the raw measurements of the unwrapped one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from kalmannet_ctrl.envs import PartiallyKnownEnv

from .._validation import check_positive_int
from ..estimators.base import Estimator
from .observations import PolicyObservation, RLState, angle_features, default_estimator

__all__ = ["EstimateObservation", "MeasurementHistory", "TrueStateObservation", "declared_angles"]


def declared_angles(env: Any, observation: str) -> tuple[int, ...]:
    """The angle components an env declares for a policy input of mode ``observation``.

    ``env.unwrapped.angle_states`` (``"estimate"``) or ``env.unwrapped.angle_measurements``
    (``"measurement"``) of a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`; ``()`` (no
    angles) for any other env.
    """
    unwrapped = env.unwrapped
    if not isinstance(unwrapped, PartiallyKnownEnv):
        return ()
    if observation == "estimate":
        return tuple(unwrapped.angle_states)
    return tuple(unwrapped.angle_measurements)


def _box_size(space: Any, name: str) -> int:
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise TypeError(f"env: expected a flat Box {name} space, found {space!r}")
    return int(space.shape[0])


def _env_estimator(env: Any) -> Estimator:
    """:func:`default_estimator` of the env's nominal model (TypeError naming ``estimator``
    for an env that is not a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`)."""
    if not isinstance(env.unwrapped, PartiallyKnownEnv):
        raise TypeError(
            "estimator: the env has no unwrapped.nominal_model to build the default "
            f"estimator on ({type(env.unwrapped).__name__}); pass an estimator"
        )
    return default_estimator(env.unwrapped.nominal_model)


class _PolicyInputWrapper(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Runs a :class:`PolicyObservation` on the measurements and the applied (clipped) actions.

    The policy input of mode ``observation`` is built for ``env``: its sizes from the env's flat
    Box spaces, its ``angles`` the env's declaration when None, and in ``"estimate"`` mode
    without an ``estimator`` the default one of the env's nominal model; ``settings`` are the
    mode's other keywords. The state restarts at every ``reset``; ``info["measurement"]`` holds
    the raw y_t and ``info["state"]`` (the true state) passes through.
    """

    def __init__(
        self, env: gym.Env, observation: str, angles: Iterable[int] | None, **settings: Any
    ) -> None:
        n_y = _box_size(env.observation_space, "observation")
        n_u = _box_size(env.action_space, "action")
        if observation == "estimate" and settings.get("estimator") is None:
            settings["estimator"] = _env_estimator(env)
        if angles is None:
            angles = declared_angles(env, observation)
        policy_input = PolicyObservation(observation, n_y=n_y, n_u=n_u, angles=angles, **settings)
        super().__init__(env)
        self.policy_input = policy_input
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(policy_input.size,), dtype=np.float32
        )
        action_space = env.action_space
        assert isinstance(action_space, spaces.Box)
        self._low = np.asarray(action_space.low, dtype=np.float64)
        self._high = np.asarray(action_space.high, dtype=np.float64)
        self._state: RLState | None = None

    def _measurement(self, y: Any) -> torch.Tensor:
        n_y = self.policy_input.n_y
        return torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(1, n_y))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        y, info = self.env.reset(seed=seed, options=options)
        state = self.policy_input.init(1)
        obs, self._state = self.policy_input.step(state, self._measurement(y))
        info = dict(info)
        info["measurement"] = np.asarray(y).copy()
        return obs[0], info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("step: call reset() before step()")
        y, reward, terminated, truncated, info = self.env.step(action)
        # the env clips the action to its bounds: the clipped one is what the plant received
        u = np.clip(
            np.asarray(action, dtype=np.float64).reshape(1, self.policy_input.n_u),
            self._low,
            self._high,
        )
        state = self._state._replace(u_prev=torch.as_tensor(u))
        obs, self._state = self.policy_input.step(state, self._measurement(y))
        info = dict(info)
        info["measurement"] = np.asarray(y).copy()
        return obs[0], reward, terminated, truncated, info


class EstimateObservation(_PolicyInputWrapper, gym.utils.RecordConstructorArgs):
    """Observe the estimate x̂_{t|t} of an estimator run on the measurements and actions.

    At ``reset`` the estimator restarts from its prior and takes in y_0; at each ``step`` it
    predicts with the action just applied (clipped to the action space, as the env applies it)
    and updates with the new measurement: the time convention of
    :class:`~kalmannet_ctrl.controllers.LQG`. The observation is x̂_{t|t} (float32), followed by
    the diagonal of the estimator's covariance P_{t|t} when ``include_covariance``.

    Parameters
    ----------
    env : gymnasium.Env
        An environment with measurement observations and a Box action space, e.g.
        ``gym.make("kalmannet_ctrl/Pendulum-v0")``.
    estimator : Estimator, optional
        Default: :func:`~kalmannet_ctrl.rl.default_estimator` of
        ``env.unwrapped.nominal_model`` (a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`'s;
        Kalman filter if linear, EKF otherwise). Learned estimators (KalmanNet, float32) work
        too.
    include_covariance : bool, default False
        Append diag(P_{t|t}) (estimators whose state has a ``cov``).
    angles : sequence of int, optional
        Components of x̂ shown as (cos, sin). Default: the env's declaration,
        ``env.unwrapped.angle_states`` (``(0,)`` for the pendulum's θ; ``()`` if none or for an
        env that is not a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`); pass ``()`` for the
        raw estimate.

    Attributes
    ----------
    estimator : Estimator
    policy_input : PolicyObservation

    Shapes
    ------
    observation : (n_x + a,), or (2 n_x + a,) with the covariance, a = len(angles); float32

    Raises
    ------
    TypeError
        If the spaces are not flat Boxes, or no estimator is given and the env is not a
        :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv` (no ``unwrapped.nominal_model``).
    DimensionError
        If the estimator does not fit the env's measurement or action size.
    ParameterError
        If an angle index is outside [0, n_x) or repeats.

    Examples
    --------
    >>> import gymnasium as gym
    >>> import kalmannet_ctrl.envs  # registers the environments
    >>> env = EstimateObservation(gym.make("kalmannet_ctrl/LinearSystem-v0"))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, info["measurement"].shape
    ((2,), dtype('float32'), (1,))
    >>> EstimateObservation(gym.make("kalmannet_ctrl/Pendulum-v0")).observation_space.shape
    (3,)
    """

    def __init__(
        self,
        env: gym.Env,
        estimator: Estimator | None = None,
        *,
        include_covariance: bool = False,
        angles: Iterable[int] | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, estimator=estimator, include_covariance=include_covariance, angles=angles
        )
        super().__init__(
            env, "estimate", angles, estimator=estimator, include_covariance=include_covariance
        )
        self.estimator = self.policy_input.estimator


class MeasurementHistory(_PolicyInputWrapper, gym.utils.RecordConstructorArgs):
    """Observe the last ``length`` measurements (optionally with the actions before them).

    The observation is the rows (y_τ, u_{τ−1}) for τ = t−k+1, …, t (or y_τ alone), oldest
    first, flattened, with the angle components of each y_τ as (cos, sin); rows before the
    episode's start are zero (u_{−1} = 0), and ``reset`` clears the history. Without actions
    and angles it equals Gymnasium's
    ``FrameStackObservation(env, k, padding_type="zero")`` flattened; this wrapper exists so
    that the actions can be stacked too and so that
    :class:`~kalmannet_ctrl.rl.RLController` reproduces it at evaluation with the
    same code. Actions are stacked as applied (clipped to the action space).

    Parameters
    ----------
    env : gymnasium.Env
        An environment with flat Box observation and action spaces.
    length : int, default 4
        k >= 1.
    include_actions : bool, default False
    angles : sequence of int, optional
        Components of the measurement shown as (cos, sin). Default: the env's declaration,
        ``env.unwrapped.angle_measurements`` (``(0,)`` for the pendulum's θ; ``()`` if none or
        for an env that is not a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`); pass ``()``
        for the raw measurements.

    Shapes
    ------
    observation : (k (n_y + a),), or (k (n_y + a + n_u),) with actions, a = len(angles);
    float32

    Raises
    ------
    TypeError
        If the spaces are not flat Boxes or ``length`` is not an integer.
    ParameterError
        If ``length < 1``, or an angle index is outside [0, n_y) or repeats.

    Examples
    --------
    >>> import gymnasium as gym
    >>> import kalmannet_ctrl.envs  # registers the environments
    >>> env = MeasurementHistory(gym.make("kalmannet_ctrl/CartPole-v1"), length=3)
    >>> obs, _ = env.reset(seed=0)
    >>> obs.shape, bool((obs[:4] == 0).all())
    ((6,), True)
    """

    def __init__(
        self,
        env: gym.Env,
        length: int = 4,
        *,
        include_actions: bool = False,
        angles: Iterable[int] | None = None,
    ) -> None:
        length = check_positive_int(length, "length")
        gym.utils.RecordConstructorArgs.__init__(
            self, length=length, include_actions=include_actions, angles=angles
        )
        super().__init__(
            env, "measurement", angles, history=length, include_actions=include_actions
        )

    @property
    def length(self) -> int:
        """k, the number of measurements stacked."""
        return self.policy_input.history


class TrueStateObservation(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Observe the true state x_t (``info["state"]``), angle components as (cos, sin).

    The first rung of an RL sanity check: with the state in full (and the mismatch set to none)
    the task is a fully observed MDP, so an algorithm that fails here fails for reasons of its
    own (hyperparameters, rewards, scaling), not of the partial observation. A policy trained on
    it needs the true state, which a deployed controller does not have: evaluate it on the
    wrapped env (it is not an :class:`~kalmannet_ctrl.rl.RLController`).

    Parameters
    ----------
    env : gymnasium.Env
        An environment whose ``info`` holds the true state (every
        :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`).
    angles : sequence of int, optional
        Components of x shown as (cos, sin). Default: ``env.unwrapped.angle_states``.

    Shapes
    ------
    observation : (n_x + len(angles),), float32

    Raises
    ------
    TypeError
        If the env's reset gives no ``info["state"]``.
    """

    def __init__(self, env: gym.Env, angles: Iterable[int] | None = None) -> None:
        super().__init__(env)
        self.angles = tuple(sorted(declared_angles(env, "estimate") if angles is None else angles))
        _, info = env.reset()
        if "state" not in info:
            raise TypeError("env: its info holds no 'state' (the true state) to observe")
        size = int(np.size(info["state"])) + len(self.angles)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        x = torch.as_tensor(np.asarray(info["state"], dtype=np.float64).reshape(1, -1))
        return angle_features(x, self.angles)[0].numpy().astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        y, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["measurement"] = np.asarray(y).copy()
        return self._observe(info), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        y, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["measurement"] = np.asarray(y).copy()
        return self._observe(info), reward, terminated, truncated, info
