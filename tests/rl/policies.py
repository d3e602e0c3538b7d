"""Shared helpers of the RL tests: wrapped envs, untrained (seeded) SB3 policies on them, and
the controllers that replay those policies on raw measurements."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.rl import EstimateObservation, MeasurementHistory, RLController

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
PENDULUM = "kalmannet_ctrl/Pendulum-v0"
CARTPOLE = "kalmannet_ctrl/CartPole-v0"


def wrapped(env_id: str, mode: str, **kwargs: Any) -> gym.Env:
    env = gym.make(env_id)
    if mode == "estimate":
        return EstimateObservation(
            env,
            kwargs.get("estimator"),
            **_pick(kwargs, "include_covariance"),
            **_pick(kwargs, "angles"),
        )
    return MeasurementHistory(
        env, kwargs.get("history", 1), **_pick(kwargs, "include_actions"), **_pick(kwargs, "angles")
    )


def _pick(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: kwargs[key]} if key in kwargs else {}


def untrained(env_id: str, mode: str, algo: type = SAC, **kwargs: Any) -> tuple[Any, gym.Env]:
    """An SB3 model (random weights, seeded) built on the wrapped env, and that env."""
    env = wrapped(env_id, mode, **kwargs)
    extra = {"n_steps": 64, "batch_size": 64} if algo is PPO else {"buffer_size": 1000}
    return algo("MlpPolicy", env, seed=0, device="cpu", **extra), env


def controller(env_id: str, mode: str, algo: type = SAC, **kwargs: Any) -> RLController:
    model, env = untrained(env_id, mode, algo, **kwargs)
    ctrl_kwargs = {k: v for k, v in kwargs.items() if k != "estimator"}
    ctrl_kwargs.setdefault("angles", env.policy_input.angles)  # as the wrapper saw them
    if mode == "estimate":
        if kwargs.get("estimator") is not None:
            ctrl_kwargs["estimator"] = kwargs["estimator"]
        else:
            ctrl_kwargs["nominal_model"] = env.unwrapped.nominal_model
    return RLController(model, observation=mode, **ctrl_kwargs)


def policy_actions(ctrl: RLController, y: np.ndarray) -> np.ndarray:
    """The controller's actions on measurements y (B, T, n_y), each row an episode."""
    state, out = None, []
    for t in range(y.shape[1]):
        a, state = ctrl.predict(y[:, t], state, np.full(y.shape[0], t == 0))
        out.append(a)
    return np.stack(out, 1)
