"""The one loop that drives an environment with a controller.

:func:`run_episodes` serves every place that rolls a controller out in an environment: the
training data of :func:`~kalmannet_ctrl.training.env_rollouts` and
:func:`~kalmannet_ctrl.training.collect_transitions`, and the seeded evaluation episodes of the
comparison (``kalmannet_ctrl.bench``).

Conventions (the same everywhere in the library):

- ``controller=None`` applies zero input (clipped into the action bounds); ``"random"`` draws
  actions uniformly from the (bounded) action space; anything else must have the Controller
  protocol (Stable-Baselines3's ``predict(observation, state, episode_start, deterministic)``).
- ``exploration_std`` is **relative to the action bounds**: Gaussian noise of standard deviation
  ``exploration_std · (high − low) / 2`` per input (a fraction of the half-range) is added to
  every action before it is clipped into the bounds; it needs a bounded action space.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from .._validation import check_nonnegative_float
from ..controllers.base import Controller, OutputFeedback
from ..errors import DimensionError, NonFiniteError, ParameterError

__all__ = ["Rollout", "check_controller", "check_exploration_std", "run_episodes"]


class Rollout(NamedTuple):
    """What :func:`run_episodes` records (NumPy, float64 unless said otherwise).

    Attributes
    ----------
    x : ndarray, (E, T + 1, n_x), or None
        ``info["state"]``: x[:, t] at step t, x[:, t + 1] after u[:, t] (None if the env reports
        no state).
    y : ndarray, (E, T + 1, n_y)
        The observations, y[:, t] of x[:, t].
    u : ndarray, (E, T, n_u)
        The actions applied: noise added, clipped to the action space, rounded to float32.
    reward : ndarray, (E, T)
    terminated : ndarray of bool, (E, T)
    running : ndarray of bool, (E, T)
        u[:, t] was applied inside the episode begun at the reset, so (x_t, u_t, x_{t+1}) is one
        of its transitions; False after it ended (rows of a copy that has ended hold the env's
        autoreset data and are not to be used).
    alive : ndarray of bool, (E,)
        Episodes still running when stepping stopped (after ``steps`` steps).
    estimate : ndarray, (E, T, n_x), or None
        The controller's x̂_{t|t} behind u[:, t] (with ``estimates=True`` and an
        :class:`~kalmannet_ctrl.controllers.OutputFeedback` controller that has one), else None.
    predict_s : float
        Seconds spent in the controller's ``predict``, summed over the steps.

    Shapes
    ------
    x (E, T + 1, n_x), y (E, T + 1, n_y), u (E, T, n_u), reward/terminated/running (E, T),
    estimate (E, T, n_x)
    """

    x: np.ndarray | None
    y: np.ndarray
    u: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    running: np.ndarray
    alive: np.ndarray
    estimate: np.ndarray | None
    predict_s: float

    @property
    def lengths(self) -> np.ndarray:
        """Steps each episode ran, (E,) int."""
        return self.running.sum(1)

    @property
    def failed(self) -> np.ndarray:
        """Episodes that ended by termination (failure), (E,) bool."""
        return (self.terminated & self.running).any(1)

    @property
    def steps(self) -> int:
        """Steps taken (the longest episode's length)."""
        return int(self.running.any(0).sum())

    def cost_per_step(self, horizon: int | None = None) -> np.ndarray:
        """Each episode's cost (the negated reward summed over its running steps, failure
        costs included) divided by ``horizon`` (default T, the steps asked for), (E,).

        Dividing by the episode length asked for, not the length run, keeps an episode that
        ends early from looking cheaper per step than one that runs to the end.
        """
        T = self.running.shape[1] if horizon is None else horizon
        return -np.where(self.running, self.reward, 0.0).cumsum(axis=1)[:, -1] / T

    def succeeded(self, env: gym.Env) -> np.ndarray:
        """Which episodes count as a success by ``env.unwrapped.succeeded`` (a
        :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv` of the same id), (E,) bool."""
        if self.x is None:
            raise TypeError("env: the rollout has no true states (info['state']) to judge by")
        return env.unwrapped.succeeded(self.x[:, : self.steps + 1], self.lengths, self.failed)


def check_controller(controller: Any) -> Any:
    """``controller`` checked against the convention above: None, "random" or a Controller.

    Raises
    ------
    ParameterError
        For a string other than "random".
    TypeError
        For an object without the Controller protocol.
    """
    if controller is None or controller == "random":
        return controller
    if isinstance(controller, str):
        raise ParameterError(
            f"controller: expected a controller with predict(), 'random' or None, "
            f"found {controller!r}"
        )
    if not isinstance(controller, Controller):
        raise TypeError(
            "controller: expected an object with predict(observation, state, episode_start, "
            f"deterministic), 'random' or None, found {type(controller).__name__}"
        )
    return controller


def check_exploration_std(value: Any) -> float:
    """A finite ``exploration_std`` >= 0 (relative to the action bounds).

    Raises
    ------
    TypeError, ParameterError
    """
    return check_nonnegative_float(value, "exploration_std")


class _Actor:
    """Chooses the (E, n_u) actions of one batch of episodes from the observations."""

    def __init__(
        self,
        controller: Any,
        space: gym.spaces.Box,
        E: int,
        exploration_std: float,
        rng: np.random.Generator,
    ) -> None:
        self.controller, self.E, self.rng = controller, E, rng
        self.low = space.low.astype(np.float64).ravel()
        self.high = space.high.astype(np.float64).ravel()
        self.n_u = self.low.shape[0]
        bounded = bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))
        if not bounded and (exploration_std > 0 or controller == "random"):
            raise ParameterError(
                "env: exploration noise and random actions need a bounded action space, "
                f"found low={self.low.tolist()}, high={self.high.tolist()}"
            )
        self.noise_std = (
            exploration_std * (self.high - self.low) / 2.0 if exploration_std > 0 else None
        )
        self.state: Any = None
        self.predict_s = 0.0

    def __call__(self, obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        E, n_u = self.E, self.n_u
        if self.controller is None:
            a = np.zeros((E, n_u))
        elif isinstance(self.controller, str):
            a = self.rng.uniform(self.low, self.high, size=(E, n_u))
        else:
            t0 = time.perf_counter()
            a, self.state = self.controller.predict(
                obs, state=self.state, episode_start=start, deterministic=True
            )
            self.predict_s += time.perf_counter() - t0
            a = np.asarray(a, dtype=np.float64)
            if a.size != E * n_u:
                raise DimensionError(
                    f"controller: expected actions of shape ({E}, {n_u}), found {a.shape}"
                )
            if not np.all(np.isfinite(a)):
                raise NonFiniteError("controller: returned non-finite actions")
        a = a.reshape(E, n_u)
        if self.noise_std is not None:
            a = a + self.noise_std * self.rng.standard_normal((E, n_u))
        return a

    def estimate(self) -> np.ndarray | None:
        if not isinstance(self.controller, OutputFeedback) or self.state is None:
            return None
        est = self.controller.estimate(self.state)
        if est is None:
            return None
        if isinstance(est, torch.Tensor):
            est = est.detach().cpu().numpy()
        return np.asarray(est, dtype=np.float64)


def run_episodes(
    envs: gym.vector.VectorEnv,
    controller: Any,
    steps: int,
    *,
    seed: int | None,
    exploration_std: float = 0.0,
    rng: np.random.Generator | None = None,
    estimates: bool = False,
    bar: Any = None,
) -> Rollout:
    """One episode in each copy of a vector env, reset with ``seed``, for at most ``steps`` steps.

    Parameters
    ----------
    envs : gymnasium.vector.VectorEnv
        E copies with a Box action space (``NEXT_STEP`` or ``DISABLED`` autoreset); reset here,
        not closed.
    controller : None, "random" or Controller
        See the module's conventions; a controller is called with ``deterministic=True`` on
        the observations, with ``episode_start`` True at the first step.
    steps : int
        T, the maximum number of steps; stepping stops early once every episode has ended.
    seed : int or None
        Seed of the reset (None continues the envs' random streams).
    exploration_std : float
        Relative to the bounds (see the module's conventions).
    rng : numpy.random.Generator, optional
        Source of the exploration noise and random actions (default ``default_rng(seed)``).
    estimates : bool
        Record the controller's estimate after every call (``Rollout.estimate``).
    bar : tqdm bar, optional
        Advanced once per step.

    Returns
    -------
    Rollout

    Shapes
    ------
    -> x (E, T + 1, n_x), y (E, T + 1, n_y), u (E, T, n_u), reward (E, T)

    Raises
    ------
    TypeError
        If the action space is not a Box, or ``controller`` lacks the Controller protocol.
    ParameterError
        For exploration or random actions in an unbounded action space.
    DimensionError, NonFiniteError
        If the controller returns actions of the wrong size or non-finite ones.
    """
    controller = check_controller(controller)
    space = envs.single_action_space
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"env: expected a Box action space, found {type(space).__name__}")
    E, T = envs.num_envs, steps
    actor = _Actor(
        controller,
        space,
        E,
        check_exploration_std(exploration_std),
        np.random.default_rng(seed) if rng is None else rng,
    )
    obs, info = envs.reset(seed=seed)
    state = info.get("state")
    n_y, n_u = obs.reshape(E, -1).shape[1], actor.n_u
    rec = _Record(E, T, n_y, n_u, None if state is None else np.shape(state)[-1], estimates)
    rec.observe(0, obs, state)
    alive, start = np.ones(E, dtype=bool), np.ones(E, dtype=bool)
    for t in range(T):
        action = np.asarray(actor(obs, start), dtype=np.float64).reshape(E, n_u)
        if estimates:
            rec.estimate(t, actor.estimate())
        applied = np.clip(action, actor.low, actor.high).astype(np.float32)
        rec.u[:, t], rec.running[:, t] = applied, alive
        obs, reward, terminated, truncated, info = envs.step(applied.reshape(E, *space.shape))
        rec.reward[:, t], rec.terminated[:, t] = reward, terminated
        rec.observe(t + 1, obs, info.get("state"))
        alive = alive & ~(np.asarray(terminated) | np.asarray(truncated))
        start = np.zeros(E, dtype=bool)
        if bar is not None:
            bar.update()
        if not alive.any():
            break
    return rec.result(alive, actor.predict_s)


class _Record:
    def __init__(
        self, E: int, T: int, n_y: int, n_u: int, n_x: int | None, estimates: bool
    ) -> None:
        self.x = None if n_x is None else np.full((E, T + 1, n_x), np.nan)
        self.y = np.full((E, T + 1, n_y), np.nan)
        self.u = np.zeros((E, T, n_u))
        self.reward = np.zeros((E, T))
        self.terminated = np.zeros((E, T), dtype=bool)
        self.running = np.zeros((E, T), dtype=bool)
        self.est: np.ndarray | None = None
        self.want_estimates = estimates
        self.E, self.T = E, T

    def observe(self, t: int, obs: np.ndarray, state: Any) -> None:
        self.y[:, t] = obs.reshape(self.E, -1)
        if self.x is not None:
            self.x[:, t] = state

    def estimate(self, t: int, est: np.ndarray | None) -> None:
        if est is None:
            self.want_estimates = False
            self.est = None
            return
        if not self.want_estimates:
            return
        if self.est is None:
            self.est = np.full((self.E, self.T, est.shape[-1]), np.nan)
        self.est[:, t] = est

    def result(self, alive: np.ndarray, predict_s: float) -> Rollout:
        est = self.est if self.want_estimates else None
        return Rollout(
            self.x,
            self.y,
            self.u,
            self.reward,
            self.terminated,
            self.running,
            alive,
            est,
            predict_s,
        )
