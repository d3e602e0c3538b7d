"""Training data: trajectories simulated from a model or rolled out in an environment."""

from __future__ import annotations

import itertools
from typing import Any

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
    obs, info = envs.reset(seed=seed)
    xs, ys, us = [], [], []
    alive = np.ones(episodes, dtype=bool)
    state, start = None, np.ones(episodes, dtype=bool)
    x, y = info["state"], obs.astype(np.float64)
    for _ in range(T):
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
        action = np.clip(action, space.low, space.high)
        xs.append(np.where(alive[:, None], x, xs[-1] if xs else x))
        ys.append(np.where(alive[:, None], y, np.nan))
        us.append(np.where(alive[:, None], action, 0.0))
        obs, _, terminated, truncated, info = envs.step(action.astype(np.float32))
        alive &= ~(terminated | truncated)
        x, y = info["state"], obs.astype(np.float64)
        start = np.zeros(episodes, dtype=bool)
    envs.close()
    stack = lambda a: torch.as_tensor(np.stack(a, 1))  # noqa: E731
    return Trajectory(stack(xs), stack(ys), stack(us))


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
