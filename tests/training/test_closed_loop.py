"""LQG with a learned estimator (KalmanNet-LQG): the control weight, the end-to-end builder."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, LQR, analytic_average_cost, design_model
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.estimators import KalmanNet, LearnedNoiseKalmanFilter, steady_state_gain
from kalmannet_ctrl.training import control_weight, learned_lqg

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
NO_MISMATCH = {"mismatch": {"rotation_A_deg": 0.0, "input_scale": 1.0}}


def test_control_weight_is_the_lqg_cost_of_the_estimation_error() -> None:
    """Average LQG cost = full-state LQR cost tr(P W_proc) + tr(W Σ_e), Σ_e = P_{t|t} of the
    stationary Kalman filter, with W = K'(R + B'PB)K: an independent closed form
    (``analytic_average_cost`` solves the closed loop's Lyapunov equation)."""
    env = gym.make(LINEAR).unwrapped
    model, cost = env.true_model, env.cost
    lqr = LQR(model, cost)
    W = control_weight(lqr, regularization=0.0)
    lqr_cost = torch.trace(lqr.value_matrix @ model.process_cov)
    excess = torch.trace(W @ steady_state_gain(model).cov)
    exact = analytic_average_cost(model, LQG(model, cost), cost)
    assert float(lqr_cost + excess) == pytest.approx(exact, rel=1e-9)
    # symmetric, positive semidefinite, rank n_u; the regularization adds a multiple of I
    assert torch.allclose(W, W.mT)
    assert torch.linalg.matrix_rank(W) == model.n_u
    W_reg = control_weight(lqr)
    eye = torch.eye(model.n_x, dtype=W.dtype)
    torch.testing.assert_close(W_reg - W, 1e-3 * torch.trace(W) / model.n_x * eye)


def test_builder_returns_lqg_with_the_trained_estimator_and_the_nominal_design() -> None:
    ctrl, info = learned_lqg(
        LINEAR, "kalmannet", episodes=6, steps=20, fit_steps=2, seed=3, progress=False
    )
    env = gym.make(LINEAR).unwrapped
    assert isinstance(ctrl, LQG) and isinstance(ctrl.estimator, KalmanNet)
    assert not ctrl.estimator.training
    # the LQR is the nominal model's (the designer's), not the true one's
    torch.testing.assert_close(ctrl.lqr.gain, LQR(env.nominal_model, env.cost).gain)
    assert info["env_steps"] == 6 * 20 and info["train_s"] > 0 and info["fit"].steps == 2
    action, state = ctrl.predict(np.zeros((3, 1), dtype=np.float32))
    assert action.shape == (3, 1) and ctrl.estimate(state).shape == (3, 2)
    # same seed, same weights; another seed, other weights
    again, _ = learned_lqg(
        LINEAR, "kalmannet", episodes=6, steps=20, fit_steps=2, seed=3, progress=False
    )
    other, _ = learned_lqg(
        LINEAR, "kalmannet", episodes=6, steps=20, fit_steps=2, seed=4, progress=False
    )
    a, b, c = (dict(x.estimator.named_parameters()) for x in (ctrl, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_builder_for_a_nonlinear_env_designs_on_the_linearization() -> None:
    ctrl, _ = learned_lqg(
        "kalmannet_ctrl/CartPole-v0",
        "learned-noise",
        episodes=4,
        steps=15,
        fit_steps=1,
        supervised=False,
        progress=False,
    )
    assert isinstance(ctrl.estimator, LearnedNoiseKalmanFilter)
    assert ctrl.estimator.model.n_x == 4
    env = gym.make("kalmannet_ctrl/CartPole-v0").unwrapped
    torch.testing.assert_close(ctrl.lqr.gain, LQR(design_model(env.nominal_model), env.cost).gain)
    assert ctrl.lqr.gain.shape == (1, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"estimator": "ppo"}, ValueError, "estimator"),
        ({"loss_weight": "max"}, ValueError, "loss_weight"),
        ({"episodes": 0}, ParameterError, "episodes"),
        ({"fit_steps": 0}, ParameterError, "fit_steps"),
        ({"exploration_std": -1.0}, ParameterError, "exploration_std"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        learned_lqg(LINEAR, **{"progress": False, **kwargs})


@pytest.mark.slow
def test_kalmannet_lqg_on_the_true_model_is_near_the_lqg_optimum() -> None:
    """With no mismatch, KalmanNet-LQG's average cost is within 5 % of the analytic optimum.

    Measured on 400 seeded episodes of 200 steps, averaged over the last 100 steps (after the
    initial transient): the per-step cost has a standard deviation of about 0.4 and the
    per-episode averages are nearly independent, so the 95 % sampling error of the mean is about
    1 % of the 0.46 optimum, well inside the 5 % margin.
    """
    ctrl, _ = learned_lqg(
        LINEAR,
        "kalmannet",
        episodes=200,
        steps=100,
        fit_steps=400,
        env_kwargs=NO_MISMATCH,
        seed=0,
        progress=False,
    )
    env = gym.make(LINEAR, **NO_MISMATCH).unwrapped
    optimum = analytic_average_cost(env.true_model, LQG(env.true_model, env.cost), env.cost)
    n = 400
    envs = gym.make_vec(LINEAR, num_envs=n, **NO_MISMATCH)
    obs, _ = envs.reset(seed=1)
    state, start, costs = None, np.ones(n, dtype=bool), []
    for _ in range(200):
        action, state = ctrl.predict(obs, state, episode_start=start)
        obs, reward, _, _, _ = envs.step(action)
        costs.append(-reward)
        start[:] = False
    per_episode = np.mean(costs[100:], axis=0)
    simulated = per_episode.mean()
    sem = per_episode.std(ddof=1) / math.sqrt(n)
    assert abs(simulated - optimum) < 0.05 * optimum, (simulated, optimum, sem)


def test_stable_baselines3_evaluate_policy_runs_kalmannet_lqg() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    ctrl, _ = learned_lqg(LINEAR, "kalmannet", episodes=4, steps=20, fit_steps=1, progress=False)
    env = Monitor(gym.make(LINEAR, max_episode_steps=30))
    env.reset(seed=0)
    returns, lengths = evaluate_policy(ctrl, env, n_eval_episodes=3, return_episode_rewards=True)
    assert lengths == [30, 30, 30] and all(np.isfinite(returns)) and max(returns) < 0
