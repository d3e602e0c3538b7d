"""LQG with a learned estimator (KalmanNet-LQG): the control weight, the end-to-end builder."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, LQR, analytic_average_cost, design_model
from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.estimators import KalmanNet, LearnedNoiseKalmanFilter, steady_state_gain
from kalmannet_ctrl.models import ResidualModel, psd_sqrt
from kalmannet_ctrl.training import closed_loop_cost, control_weight, fit_closed_loop, learned_lqg

from .gradients import assert_gradient_matches_central_differences

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


# -- closed-loop fine-tuning -----------------------------------------------------------------------
def _linear_problem() -> tuple:
    env = gym.make(LINEAR).unwrapped
    return env.nominal_model, env.true_model, env.cost


def test_closed_loop_cost_matches_a_numpy_simulation_with_the_same_noise() -> None:
    """The differentiable rollout against an independent loop: NumPy dynamics and cost, the
    controller driven through its public ``predict`` with the same noise sequences."""
    nominal, true, cost = _linear_problem()
    ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal), input_bounds=(-0.5, 0.5))
    gen = torch.Generator().manual_seed(0)
    B, T = 5, 40
    x0 = true.sample_x0(B, generator=gen) + 0.5
    w = 0.3 * torch.randn(B, T, 2, dtype=torch.float64, generator=gen)
    v = 0.3 * torch.randn(B, T, 1, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        got = closed_loop_cost(ctrl, true, x0, w, v).numpy()
    A, Bu, C = (true.A.numpy(), true.B.numpy(), true.C.numpy())
    Q, R = cost.numpy()
    x, state, total = x0.numpy(), None, np.zeros(B)
    for t in range(T):
        u, state = ctrl.predict(x @ C.T + v[:, t].numpy(), state)
        total += np.einsum("bi,ij,bj->b", x, Q, x) + np.einsum("bi,ij,bj->b", u, R, u)
        x = x @ A.T + u @ Bu.T + w[:, t].numpy()
    np.testing.assert_allclose(got, total / T, rtol=1e-10)
    assert np.abs(u).max() == pytest.approx(0.5)  # the bounds were active: clipping included


def test_closed_loop_cost_gradient_matches_finite_differences() -> None:
    nominal, true, cost = _linear_problem()
    est = LearnedNoiseKalmanFilter(nominal)
    ctrl = LQG(nominal, cost, est)
    gen = torch.Generator().manual_seed(1)
    x0 = true.sample_x0(4, generator=gen)
    w = torch.randn(4, 30, 2, dtype=torch.float64, generator=gen) * 0.2
    v = torch.randn(4, 30, 1, dtype=torch.float64, generator=gen) * 0.2
    params = [p for p in est.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float64 for p in params)
    assert_gradient_matches_central_differences(
        lambda: closed_loop_cost(ctrl, true, x0, w, v).mean(), params, rel=1e-5, abs=1e-9
    )


def test_fit_closed_loop_lowers_the_cost_of_the_mismatched_lqg() -> None:
    """Nominal LQG on LinearSystem-v0 with its KF's noise covariances tuned on the closed-loop
    cost in the true model. Checked on 256 fresh noise realisations of 100 steps, the same
    before and after (a paired comparison: the per-episode costs vary by about ±40 %, their
    paired differences far less): the cost falls by more than 5 % (measured: 0.843 -> 0.745; the
    exact average costs are 0.759 for nominal LQG and 0.464 for nominal LQR on the true KF).
    The simulator's parameters are neither trained nor left frozen."""
    nominal, true, cost = _linear_problem()
    ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal))
    sim = ResidualModel(true, hidden=(4,), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(123)
    test = (
        true.sample_x0(256, generator=gen),
        torch.randn(256, 100, 2, dtype=torch.float64, generator=gen)
        @ psd_sqrt(true.process_cov).mT,
        torch.randn(256, 100, 1, dtype=torch.float64, generator=gen)
        @ psd_sqrt(true.measurement_cov).mT,
    )
    with torch.no_grad():
        before = closed_loop_cost(ctrl, true, *test).mean()
    weights = [p.detach().clone() for p in sim.parameters()]
    record = fit_closed_loop(
        ctrl, sim, steps=30, horizon=100, episodes=64, lr=5e-2, val_every=10, progress=False
    )
    with torch.no_grad():
        after = closed_loop_cost(ctrl, true, *test).mean()
    assert after < 0.95 * before, (float(before), float(after))
    assert record.best_step > 0 and not ctrl.estimator.training
    assert all(p.requires_grad for p in sim.parameters())
    assert all(torch.equal(a, b) for a, b in zip(weights, sim.parameters(), strict=True))
    # the weights kept are the best validation's: re-validating gives that cost
    again = fit_closed_loop(
        ctrl, sim, steps=1, horizon=100, episodes=64, val_every=1, lr=1e-12, progress=False
    )
    assert again.history[0]["val_loss"] == pytest.approx(record.best_val_loss, rel=1e-6)


#: fit_closed_loop on whole episodes, as before segments (its defaults then)
WHOLE = {"segment": None, "batch_size": 32, "lr": 3e-4, "lr_schedule": "constant"}


def test_fit_closed_loop_is_seeded() -> None:
    nominal, true, cost = _linear_problem()
    runs = []
    for seed in (0, 0, 1):
        ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal))
        fit_closed_loop(
            ctrl, true, steps=3, horizon=20, episodes=8, seed=seed, progress=False, **WHOLE
        )
        runs.append([p.detach().clone() for p in ctrl.estimator.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_fit_closed_loop_errors() -> None:
    nominal, true, cost = _linear_problem()
    with pytest.raises(TypeError, match="controller"):
        fit_closed_loop(LQG(nominal, cost), true, progress=False)  # a KF: nothing to train
    ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal))
    with pytest.raises(TypeError, match="model"):
        fit_closed_loop(ctrl, "true", progress=False)
    cartpole = gym.make("kalmannet_ctrl/CartPole-v0").unwrapped.true_model
    with pytest.raises(DimensionError, match="n_x"):
        fit_closed_loop(ctrl, cartpole, progress=False)
    with pytest.raises(ParameterError, match="horizon"):
        fit_closed_loop(ctrl, true, horizon=0, progress=False)
    with pytest.raises(ParameterError, match="lr"):
        fit_closed_loop(ctrl, true, lr=-1.0, progress=False)


def test_builder_with_closed_loop_fine_tuning() -> None:
    kwargs = dict(episodes=6, steps=20, fit_steps=2, simulator_fit_steps=5, progress=False)
    options = {"horizon": 15, "episodes": 8, "val_episodes": 4, "val_every": 1}
    ctrl, info = learned_lqg(
        LINEAR, "kalmannet", closed_loop_steps=2, closed_loop_options=options, **kwargs
    )
    assert isinstance(info["simulator"], ResidualModel)
    assert info["closed_loop"].steps == 2 and len(info["closed_loop"].history) == 2
    assert info["env_steps"] == 6 * 20  # the fine-tuning needs no env steps
    # the simulator's process noise is its prediction-error covariance on the rollouts
    nominal_cov = gym.make(LINEAR).unwrapped.nominal_model.process_cov
    assert not torch.allclose(info["simulator"].process_cov, nominal_cov)
    again, _ = learned_lqg(
        LINEAR, "kalmannet", closed_loop_steps=2, closed_loop_options=options, **kwargs
    )
    a, b = (dict(x.estimator.named_parameters()) for x in (ctrl, again))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ParameterError, match="supervised"):
        learned_lqg(LINEAR, closed_loop_steps=2, supervised=False, progress=False)
    with pytest.raises(ParameterError, match="closed_loop_steps"):
        learned_lqg(LINEAR, closed_loop_steps=-1, progress=False)


def _cost_per_step(ctrl, env_id: str, episodes: int, seed: int) -> np.ndarray:
    """Each seeded episode's cost per step (failure penalties included) under ``ctrl``."""
    envs = gym.make_vec(env_id, num_envs=episodes)
    obs, _ = envs.reset(seed=seed)
    state, start = None, np.ones(episodes, dtype=bool)
    active, total, steps = np.ones(episodes, dtype=bool), np.zeros(episodes), 0
    while active.any():
        action, state = ctrl.predict(obs, state, episode_start=start)
        obs, reward, terminated, truncated, _ = envs.step(action)
        total[active] -= reward[active]
        active &= ~(terminated | truncated)
        start[:] = False
        steps += 1
    envs.close()
    return total / steps


@pytest.mark.slow
def test_kalmannet_lqg_tuned_in_closed_loop_closes_most_of_the_cartpole_gap() -> None:
    """CartPole-v0 at its default mismatch: KalmanNet-LQG fine-tuned on the closed-loop cost in
    the learned simulator closes at least 70 % of the gap between nominal and oracle LQG, beyond
    the 54 % that any estimator trained on the state error can reach under the nominal LQR.

    The quick preset's budget of the bench's ``kalmannet-lqg`` (segment training, about a
    minute). The three controllers run the same 100 seeded episodes (a paired comparison), and
    training is seeded, so the check does not depend on chance draws; what varies is the trained
    network itself. Measured with these settings in the bench's evaluation
    (``benchmarks/closed_loop_training.py --only quick``): 84 % for seed 0 (81 % and 51 % for
    seeds 1 and 2), so the threshold leaves room for another machine's rounding to change the
    training run."""
    env_id = "kalmannet_ctrl/CartPole-v0"
    ctrl, info = learned_lqg(
        env_id,
        "kalmannet",
        episodes=100,
        steps=100,
        fit_steps=100,
        closed_loop_steps=50,
        simulator_fit_steps=5000,
        seed=0,
        progress=False,
    )
    env = gym.make(env_id).unwrapped
    bounds = (env.action_space.low, env.action_space.high)
    nominal = LQG(design_model(env.nominal_model), env.cost, input_bounds=bounds)
    oracle = LQG(design_model(env.true_model), env.cost, input_bounds=bounds)
    costs = {
        name: _cost_per_step(c, env_id, 100, seed=0)
        for name, c in [("learned", ctrl), ("nominal", nominal), ("oracle", oracle)]
    }
    mean = {k: float(v.mean()) for k, v in costs.items()}
    closed = (mean["nominal"] - mean["learned"]) / (mean["nominal"] - mean["oracle"])
    assert closed >= 0.7, (mean, closed, info["closed_loop"].best_val_loss)


@pytest.mark.parametrize("options", [{}, WHOLE], ids=["segments", "whole episodes"])
def test_a_diverging_closed_loop_stops_training_with_the_best_weights(options) -> None:
    """A simulated state that blows up makes the estimator refuse its inputs (NonFiniteError):
    training stops there, reports the step and keeps the best weights, instead of raising."""
    nominal, true, cost = _linear_problem()
    est = LearnedNoiseKalmanFilter(nominal)
    ctrl = LQG(nominal, cost, est)
    start = [p.detach().clone() for p in est.parameters()]
    real_step, calls = est.step, [0]

    def step(state, y, u_prev=None):
        if est.training:
            calls[0] += 1
            if calls[0] > 30:  # during the second optimisation step
                raise NonFiniteError("u_prev: expected finite values, found 2 NaN/inf entries")
        return real_step(state, y, u_prev)

    est.step = step
    with pytest.warns(RuntimeWarning):
        record = fit_closed_loop(
            ctrl, true, steps=5, horizon=20, episodes=8, val_every=5, progress=False, **options
        )
    assert record.nonfinite_step == 2 and record.best_step == 0
    assert all(torch.equal(a, b) for a, b in zip(start, est.parameters(), strict=True))
