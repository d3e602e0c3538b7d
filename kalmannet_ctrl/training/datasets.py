"""Training data: trajectories simulated from a model or rolled out in an environment."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from .._validation import check_positive_int
from ..models.base import SystemModel, Trajectory

__all__ = ["env_rollouts", "split", "trajectories"]


def trajectories(
    model: SystemModel,
    n: int,
    T: int,
    *,
    input_std: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Trajectory:
    """``n`` trajectories of length ``T`` simulated from ``model`` (labels included).

    With ``input_std > 0`` the inputs are i.i.d. N(0, input_std²) (excitation), else zero.
    ``dtype`` converts the result (e.g. float32 for networks).

    Shapes
    ------
    -> Trajectory x (n, T, n_x), y (n, T, n_y), u (n, T, n_u)
    """
    n, T = check_positive_int(n, "n"), check_positive_int(T, "T")
    u = None
    if input_std > 0 and model.n_u > 0:
        u = input_std * torch.randn(n, T, model.n_u, dtype=model.dtype, generator=generator)
    traj = model.simulate(T, n, u=u, generator=generator)
    if dtype is not None:
        traj = Trajectory(*(t.to(dtype) for t in traj))
    return traj


def env_rollouts(
    env_id: str,
    episodes: int,
    *,
    policy: Any = None,
    steps: int | None = None,
    seed: int = 0,
    action_noise: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
) -> Trajectory:
    """Episodes of a registered environment, labelled with ``info["state"]``.

    Runs ``episodes`` copies of the native vector env for ``steps`` steps (default the
    registration's limit; episodes that end early are padded with NaN measurements and their
    last state, so a padded row is predict-only for every estimator).

    Parameters
    ----------
    policy : optional
        A Controller (``predict``) fed the measurements; ``"zero"`` for zero input (clipped into
        the bounds: the estimation-only use); None for uniformly random actions.
    action_noise : float
        Std of Gaussian excitation added to the policy's actions (clipped to the bounds).
        ``u`` records the actions the env applied: clipped and rounded to its float32.

    Shapes
    ------
    -> Trajectory x (episodes, steps, n_x), y (episodes, steps, n_y), u (episodes, steps, n_u),
    float64
    """
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    episodes = check_positive_int(episodes, "episodes")
    T = steps if steps is not None else gym.spec(env_id).max_episode_steps
    T = check_positive_int(T, "steps")
    envs = gym.make_vec(env_id, num_envs=episodes, max_episode_steps=T, **(env_kwargs or {}))
    rng = np.random.default_rng(seed)
    space = envs.single_action_space
    state = None

    def act(obs: np.ndarray, start: np.ndarray) -> np.ndarray:
        nonlocal state
        if policy is None:
            action = rng.uniform(space.low, space.high, size=(episodes, *space.shape))
        elif isinstance(policy, str):
            if policy != "zero":
                raise ValueError(f"policy: expected a controller, 'zero' or None, found {policy!r}")
            action = np.zeros((episodes, *space.shape))
        else:
            action, state = policy.predict(obs, state, start)
        action = np.asarray(action, dtype=np.float64).reshape(episodes, -1)
        if action_noise > 0:
            action = action + action_noise * rng.standard_normal(action.shape)
        return action

    try:
        roll = _rollout(envs, T, act, seed=seed)
    finally:
        envs.close()
    run = roll.running
    # pad the rows after an episode's end with its last state, NaN measurements and zero input
    last = np.maximum.accumulate(np.where(run, np.arange(T), 0), axis=1)
    x = roll.x[np.arange(episodes)[:, None], last]
    y = np.where(run[..., None], roll.y[:, :T], np.nan)
    u = np.where(run[..., None], roll.u, 0.0)
    return Trajectory(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(u))


class _Rollout(NamedTuple):
    """Raw record of :func:`_rollout` (NumPy, float64).

    x : (E, T+1, n_x) or None  ``info["state"]``: x[:, t] at step t, x[:, t+1] after u[:, t]
    y : (E, T+1, n_y)  observations, y[:, t] of x[:, t]
    u : (E, T, n_u)  the actions applied (clipped to the action space, float32-rounded)
    running : (E, T) bool  u[:, t] was applied inside the episode begun at the reset, so
        (x_t, u_t, x_{t+1}) is one of its transitions; False after it ended (rows of a copy
        that has ended hold the env's autoreset data and are not to be used)
    """

    x: np.ndarray | None
    y: np.ndarray
    u: np.ndarray
    running: np.ndarray


def _rollout(
    envs: gym.vector.VectorEnv,
    T: int,
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    seed: int | None,
    bar: Any = None,
) -> _Rollout:
    """One episode in each copy of a vector env, reset with ``seed``, for at most ``T`` steps.

    ``act(observation (E, n_y), episode_start (E,) bool) -> action (E, n_u)`` chooses the
    actions, which are clipped to the action space; stepping stops early once every episode has
    ended. ``bar`` (a tqdm bar) is advanced once per step.
    """
    E = envs.num_envs
    space = envs.single_action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    obs, info = envs.reset(seed=seed)
    state = info.get("state")
    n_y, n_u = obs.reshape(E, -1).shape[1], int(np.prod(space.shape))
    xs = None if state is None else np.full((E, T + 1, np.shape(state)[-1]), np.nan)
    ys = np.full((E, T + 1, n_y), np.nan)
    us = np.zeros((E, T, n_u))
    running = np.zeros((E, T), dtype=bool)
    alive = np.ones(E, dtype=bool)
    start = np.ones(E, dtype=bool)
    ys[:, 0] = obs.reshape(E, n_y)
    if xs is not None:
        xs[:, 0] = state
    for t in range(T):
        action = np.asarray(act(obs, start), dtype=np.float64).reshape(E, n_u)
        applied = np.clip(action, low, high).astype(np.float32)
        us[:, t] = applied
        running[:, t] = alive
        obs, _, terminated, truncated, info = envs.step(applied.reshape(E, *space.shape))
        ys[:, t + 1] = obs.reshape(E, n_y)
        if xs is not None:
            xs[:, t + 1] = info["state"]
        alive = alive & ~(np.asarray(terminated) | np.asarray(truncated))
        start = np.zeros(E, dtype=bool)
        if bar is not None:
            bar.update()
        if not alive.any():
            break
    return _Rollout(xs, ys, us, running)


def split(data: Trajectory, fractions: tuple[float, ...], *, seed: int = 0) -> list[Trajectory]:
    """Split trajectories (along B) into parts of the given fractions, shuffled with ``seed``."""
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f <= 0 for f in fractions):
        raise ValueError(f"fractions: expected positive fractions summing to 1, found {fractions}")
    B = data.y.shape[0]
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(seed))
    bounds = np.cumsum([0, *[round(f * B) for f in fractions[:-1]], 0])
    bounds[-1] = B
    parts = []
    for a, b in itertools.pairwise(bounds):
        idx = perm[a:b]
        parts.append(Trajectory(*(None if t is None else t[idx] for t in data)))
    return parts
