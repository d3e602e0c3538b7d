"""Training data: trajectories simulated from a model or rolled out in an environment."""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .._validation import check_positive_int
from ..models.base import SystemModel, Trajectory
from .rollout import check_controller, check_exploration_std, run_episodes

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
    controller: Any = None,
    steps: int | None = None,
    seed: int = 0,
    exploration_std: float = 0.0,
    env_kwargs: dict[str, Any] | None = None,
) -> Trajectory:
    """Episodes of a registered environment, labelled with ``info["state"]``.

    Runs ``episodes`` copies of the native vector env for ``steps`` steps (default the
    registration's limit; episodes that end early are padded with NaN measurements and their
    last state, so a padded row is predict-only for every estimator).

    Parameters
    ----------
    controller : None, "random" or Controller
        A Controller (``predict``) fed the measurements; None for zero input (clipped into the
        bounds: the estimation-only use); ``"random"`` for actions uniform in the action space.
    exploration_std : float
        Gaussian excitation added to the actions, relative to the bounds: standard deviation
        ``exploration_std · (high − low) / 2`` per input, then clipped to the bounds (the
        convention of :mod:`kalmannet_ctrl.training.rollout`). ``u`` records the actions the
        env applied: clipped and rounded to its float32.

    Shapes
    ------
    -> Trajectory x (episodes, steps, n_x), y (episodes, steps, n_y), u (episodes, steps, n_u),
    float64
    """
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    episodes = check_positive_int(episodes, "episodes")
    controller = check_controller(controller)
    exploration_std = check_exploration_std(exploration_std)
    T = steps if steps is not None else gym.spec(env_id).max_episode_steps
    T = check_positive_int(T, "steps")
    envs = gym.make_vec(env_id, num_envs=episodes, max_episode_steps=T, **(env_kwargs or {}))
    try:
        roll = run_episodes(envs, controller, T, seed=seed, exploration_std=exploration_std)
    finally:
        envs.close()
    assert roll.x is not None
    run = roll.running
    # pad the rows after an episode's end with its last state, NaN measurements and zero input
    last = np.maximum.accumulate(np.where(run, np.arange(T), 0), axis=1)
    x = roll.x[np.arange(episodes)[:, None], last]
    y = np.where(run[..., None], roll.y[:, :T], np.nan)
    u = np.where(run[..., None], roll.u, 0.0)
    return Trajectory(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(u))


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
