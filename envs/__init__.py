"""Gymnasium environments with partially known dynamics (``kalmannet_ctrl.envs``).

Importing this package registers the ids ``kalmannet_ctrl/<Name>-v0`` (and
``kalmannet_ctrl/CartPole-v1``, whose failure cost is charged for the rest of the episode) with
Gymnasium::

    import gymnasium as gym
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    env = gym.make("kalmannet_ctrl/LinearSystem-v0")
    envs = gym.make_vec("kalmannet_ctrl/LinearSystem-v0", num_envs=64)  # native batched copies

Each env exposes ``env.unwrapped.nominal_model`` (what a designer knows),
``env.unwrapped.true_model`` (what the simulator runs) and ``env.unwrapped.cost``; observations
are noisy measurements, ``info["state"]`` is the true state.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from .cartpole import CartPoleEnv, CartPoleVectorEnv
from .core import MismatchParameter, PartiallyKnownEnv, Problem
from .linear_system import LinearSystemEnv, LinearSystemVectorEnv
from .lorenz import LorenzEnv, LorenzVectorEnv
from .pendulum import PendulumEnv, PendulumVectorEnv
from .vector import PartiallyKnownVectorEnv

__all__ = [
    "ENV_IDS",
    "CartPoleEnv",
    "CartPoleVectorEnv",
    "LinearSystemEnv",
    "LinearSystemVectorEnv",
    "LorenzEnv",
    "LorenzVectorEnv",
    "MismatchParameter",
    "PartiallyKnownEnv",
    "PartiallyKnownVectorEnv",
    "PendulumEnv",
    "PendulumVectorEnv",
    "Problem",
]

# id -> (module:class of the env, module:class of the native vector env, max_episode_steps)
_ENVS = {
    "kalmannet_ctrl/LinearSystem-v0": (
        "linear_system:LinearSystemEnv",
        "linear_system:LinearSystemVectorEnv",
        200,
    ),
    "kalmannet_ctrl/CartPole-v0": ("cartpole:CartPoleEnv", "cartpole:CartPoleVectorEnv", 500),
    # v1: failing is charged for the rest of the episode (CartPoleEnv's Rewards section)
    "kalmannet_ctrl/CartPole-v1": ("cartpole:CartPoleEnv", "cartpole:CartPoleVectorEnv", 500),
    "kalmannet_ctrl/Pendulum-v0": ("pendulum:PendulumEnv", "pendulum:PendulumVectorEnv", 400),
    "kalmannet_ctrl/Lorenz-v0": ("lorenz:LorenzEnv", "lorenz:LorenzVectorEnv", 1000),
}

#: Constructor arguments of the versions that differ from v0.
_KWARGS = {"kalmannet_ctrl/CartPole-v1": {"failure": "rest_of_horizon"}}

ENV_IDS: tuple[str, ...] = tuple(_ENVS)

for _id, (_entry, _vector_entry, _steps) in _ENVS.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point=f"{__name__}.{_entry}",
            vector_entry_point=f"{__name__}.{_vector_entry}",
            max_episode_steps=_steps,
            kwargs=_KWARGS.get(_id, {}),
        )
