"""The one rollout loop: the controller conventions (None = zero input, "random"), exploration
noise relative to the bounds, estimates, and the agreement of its users."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, design_model
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.training import collect_transitions, env_rollouts
from kalmannet_ctrl.training.rollout import run_episodes

PENDULUM = "kalmannet_ctrl/Pendulum-v0"  # torque bound 2
LINEAR = "kalmannet_ctrl/LinearSystem-v0"


def test_none_is_zero_input_everywhere() -> None:
    data = env_rollouts(PENDULUM, 3, steps=10, seed=0)
    assert float(data.u.abs().max()) == 0.0
    trans = collect_transitions(PENDULUM, None, episodes=3, steps=10, seed=0)
    assert float(trans.u.abs().max()) == 0.0


def test_random_actions_cover_the_bounds() -> None:
    data = env_rollouts(PENDULUM, 20, controller="random", steps=50, seed=0)
    u = data.u.numpy().ravel()
    assert u.min() >= -2.0 and u.max() <= 2.0
    # uniform on [-2, 2]: mean 0 and std 2/sqrt(3) = 1.155; 1,000 draws give a std error of 0.04
    assert abs(u.mean()) < 0.15 and abs(u.std() - 2 / np.sqrt(3)) < 0.08


def test_exploration_is_relative_to_the_bounds() -> None:
    """s = 0.1 on the pendulum's bound 2 is N(0, 0.2²) before clipping (4,000 draws: the
    sample std's standard error is 0.2/sqrt(8000) = 0.002; the check allows 0.01)."""
    data = env_rollouts(PENDULUM, 20, steps=200, seed=0, exploration_std=0.1)
    u = data.u.numpy().ravel()
    assert abs(u.std() - 0.2) < 0.01 and abs(u.mean()) < 0.02


def test_env_rollouts_and_collect_transitions_apply_the_same_actions() -> None:
    """One loop, one convention: the same controller, noise and seed give the same inputs."""
    env = gym.make(LINEAR).unwrapped
    ctrl = LQG(design_model(env.nominal_model), env.cost, input_bounds=(-20.0, 20.0))
    traj = env_rollouts(LINEAR, 4, controller=ctrl, steps=30, seed=5, exploration_std=0.02)
    trans = collect_transitions(LINEAR, ctrl, episodes=4, steps=30, seed=5, exploration_std=0.02)
    torch.testing.assert_close(trans.u, traj.u.reshape(-1, traj.u.shape[-1]), rtol=0, atol=0)
    torch.testing.assert_close(trans.x, traj.x.reshape(-1, traj.x.shape[-1]), rtol=0, atol=0)


def test_estimates_are_the_controllers_and_costs_the_rewards() -> None:
    env = gym.make(LINEAR).unwrapped
    ctrl = LQG(design_model(env.nominal_model), env.cost, input_bounds=(-20.0, 20.0))
    envs = gym.make_vec(LINEAR, num_envs=3, max_episode_steps=15)
    try:
        roll = run_episodes(envs, ctrl, 15, seed=1, estimates=True)
    finally:
        envs.close()
    assert roll.estimate is not None and roll.estimate.shape == (3, 15, env.nominal_model.n_x)
    assert roll.running.all() and not roll.alive.any() and not roll.failed.any()
    # the estimate behind u_t is the nominal Kalman filter's x̂_{t|t} on the recorded y, u (the
    # controller predicts with its float64 action, the record holds the env's float32 rounding
    # of it: relative differences of ~1e-8; a misaligned step would differ by O(0.1))
    y = torch.as_tensor(roll.y[:, :15])
    ref = ctrl.estimator.filter(y, torch.as_tensor(roll.u)).mean.numpy()
    np.testing.assert_allclose(roll.estimate, ref, rtol=1e-6, atol=1e-9)
    # the reward is minus the stage cost on the true state and the applied input
    Q, R = env.cost.Q.numpy(), env.cost.R.numpy()
    x, u = roll.x[:, :15], roll.u
    stage = np.einsum("bti,ij,btj->bt", x, Q, x) + np.einsum("bti,ij,btj->bt", u, R, u)
    np.testing.assert_allclose(-roll.reward, stage, rtol=1e-6)


def test_controllers_without_estimates_and_errors() -> None:
    class Constant:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.full((obs.shape[0], 1), 0.5, dtype=np.float32), None

    class Wrong:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((obs.shape[0], 3)), None

    envs = gym.make_vec(PENDULUM, num_envs=2, max_episode_steps=5)
    try:
        roll = run_episodes(envs, Constant(), 5, seed=0, estimates=True)
        assert roll.estimate is None and np.all(roll.u == 0.5)
        with pytest.raises(DimensionError, match=r"controller: expected actions of shape \(2, 1\)"):
            run_episodes(envs, Wrong(), 5, seed=0)
        with pytest.raises(ParameterError, match="controller: expected a controller"):
            run_episodes(envs, "zero", 5, seed=0)
        with pytest.raises(TypeError, match="controller: expected an object with predict"):
            run_episodes(envs, lambda y: 0.0, 5, seed=0)
        with pytest.raises(ParameterError, match="exploration_std: expected a finite number"):
            run_episodes(envs, None, 5, seed=0, exploration_std=-1.0)
    finally:
        envs.close()
