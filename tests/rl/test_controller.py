"""RLController on the controller base: protocol, parity with the training wrappers, batching,
resets, estimates, normalization, Stable-Baselines3's evaluation and errors."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

from kalmannet_ctrl.controllers import Controller  # noqa: E402
from kalmannet_ctrl.controllers.base import BaseController, OutputFeedback  # noqa: E402
from kalmannet_ctrl.errors import (  # noqa: E402
    BatchSizeError,
    DimensionError,
    NonFiniteError,
    ParameterError,
)
from kalmannet_ctrl.rl import PolicyObservation, RLController, RLState  # noqa: E402

from .policies import CARTPOLE, LINEAR, PENDULUM, controller, untrained  # noqa: E402

CASES = [
    pytest.param(LINEAR, "estimate", {}, id="linear-estimate"),
    pytest.param(PENDULUM, "estimate", {"include_covariance": True}, id="pendulum-estimate+cov"),
    pytest.param(CARTPOLE, "measurement", {"history": 3, "include_actions": True}, id="cart-hist"),
    pytest.param(LINEAR, "measurement", {}, id="linear-raw"),
    pytest.param(PENDULUM, "measurement", {"history": 3, "include_actions": True}, id="pend-hist"),
]


# -- protocol and parity with the wrappers ---------------------------------------------------------
@pytest.mark.parametrize(("env_id", "mode", "kwargs"), CASES)
def test_controller_on_raw_measurements_replays_the_wrapped_policy(
    env_id: str, mode: str, kwargs: dict[str, Any]
) -> None:
    """What the policy did on the wrapped env (training's view), the controller does on the raw
    measurements (evaluation's view): same observations, same actions."""
    model, env = untrained(env_id, mode, **kwargs)
    ctrl = controller(env_id, mode, **kwargs)
    assert isinstance(ctrl, Controller)
    obs, info = env.reset(seed=4)
    state, start = None, True
    for _ in range(40):
        expected, _ = model.predict(obs, deterministic=True)
        features, _ = ctrl.policy_observation(info["measurement"], state, start)
        np.testing.assert_array_equal(features[0], obs)
        action, state = ctrl.predict(info["measurement"], state, start)
        assert action.shape == env.action_space.shape and action.dtype == np.float32
        np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-6)
        obs, _, terminated, truncated, info = env.step(action)
        start = False
        if terminated or truncated:
            break


def test_actions_stay_in_bounds_and_feed_back_clipped() -> None:
    ctrl = controller(PENDULUM, "estimate")
    y = np.full((5, 1), np.pi, dtype=np.float32)
    action, state = ctrl.predict(y, None, np.ones(5, dtype=bool), deterministic=False)
    assert np.all(np.abs(action) <= 2.0)
    np.testing.assert_array_equal(state.u_prev.numpy(), action.astype(np.float64))


def test_batched_predict_equals_per_row_predict() -> None:
    ctrl = controller(PENDULUM, "estimate", include_covariance=True)
    rng = np.random.default_rng(0)
    B, T = 3, 12
    y = (np.pi + 0.1 * rng.standard_normal((B, T, 1))).astype(np.float32)
    starts = np.zeros((B, T), dtype=bool)
    starts[:, 0] = True
    starts[1, 5] = starts[2, 8] = True  # rows restart at different times
    batch_actions, state = [], None
    for t in range(T):
        a, state = ctrl.predict(y[:, t], state, starts[:, t])
        batch_actions.append(a)
    for b in range(B):
        row_state = None
        for t in range(T):
            a, row_state = ctrl.predict(y[b, t], row_state, starts[b, t])
            np.testing.assert_allclose(a, batch_actions[t][b], rtol=1e-5, atol=1e-6)


def test_episode_start_resets_only_the_flagged_rows() -> None:
    ctrl = controller(CARTPOLE, "measurement", history=4, include_actions=True)
    rng = np.random.default_rng(1)
    y = rng.standard_normal((6, 2, 2)).astype(np.float32) * 0.05
    state = None
    for t in range(6):
        _, state = ctrl.predict(y[t], state, np.full(2, t == 0))
    fresh, _ = ctrl.predict(y[0, :1], None)
    a, state = ctrl.predict(y[0], state, np.array([True, False]))
    np.testing.assert_allclose(a[0], fresh[0], rtol=1e-6, atol=1e-6)
    assert state.history is not None and torch.all(state.history[0, :3] == 0)
    assert torch.any(state.history[1, :3] != 0)


def test_batch_size_change_needs_a_full_reset() -> None:
    ctrl = controller(LINEAR, "estimate")
    y = np.zeros((4, 1), dtype=np.float32)
    _, state = ctrl.predict(y, None)
    with pytest.raises(BatchSizeError, match="expected batch size 4 \\(from state\\), found 2"):
        ctrl.predict(y[:2], state)
    _, state = ctrl.predict(y[:2], state, np.ones(2, dtype=bool))
    assert state.u_prev.shape == (2, 1)


def test_deterministic_flag() -> None:
    ctrl = controller(LINEAR, "measurement", history=2)
    y = np.full((8, 1), 0.3, dtype=np.float32)
    a1, _ = ctrl.predict(y, None, deterministic=True)
    a2, _ = ctrl.predict(y, None, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    torch.manual_seed(0)
    s1, _ = ctrl.predict(y, None, deterministic=False)
    assert not np.allclose(s1, a1)  # a stochastic policy samples around the mean


def test_estimate_only_in_estimate_mode() -> None:
    """The base's output-feedback contract: estimate(state) is x̂_{t|t} with an estimator, None
    without (the bench runner then skips the MSE)."""
    est_ctrl = controller(PENDULUM, "estimate")
    assert isinstance(est_ctrl, BaseController) and isinstance(est_ctrl, OutputFeedback)
    _, state = est_ctrl.predict(np.array([[3.1], [3.2]], dtype=np.float32), None)
    assert isinstance(state, RLState)
    xhat = est_ctrl.estimate(state)
    assert xhat.shape == (2, 2)
    np.testing.assert_allclose(xhat[:, 0].numpy(), [3.1, 3.2], atol=0.05)
    meas_ctrl = controller(PENDULUM, "measurement", history=2)
    assert meas_ctrl.estimator is None
    _, state = meas_ctrl.predict(np.array([[3.1], [3.2]], dtype=np.float32), None)
    assert meas_ctrl.estimate(state) is None
    with pytest.raises(TypeError, match="state: expected an RLState, found tuple"):
        meas_ctrl.estimate((1, 2))


def test_capabilities_follow_the_observation_mode() -> None:
    """accepts_missing and estimator are per instance: an estimate policy takes NaN rows (the
    estimator predicts only), a measurement-history policy needs every measurement."""
    est_ctrl = controller(LINEAR, "estimate")
    meas_ctrl = controller(LINEAR, "measurement", history=2)
    assert est_ctrl.accepts_missing is True and meas_ctrl.accepts_missing is False
    assert est_ctrl.estimator is est_ctrl.policy_input.estimator is not None
    assert est_ctrl.dtype == torch.float64 == meas_ctrl.dtype
    assert (est_ctrl.n_y, est_ctrl.n_u) == (1, 1)
    low, high = est_ctrl.input_bounds
    np.testing.assert_array_equal(low.numpy(), est_ctrl.model.action_space.low)
    np.testing.assert_array_equal(high.numpy(), est_ctrl.model.action_space.high)


def test_step_on_tensors_equals_predict() -> None:
    """The base's tensor twin of predict runs the same act: same actions, same state."""
    ctrl = controller(PENDULUM, "estimate", include_covariance=True)
    y = torch.tensor([[3.0], [-0.2]], dtype=torch.float64)
    u, state = ctrl.step(None, y)
    action, pstate = ctrl.predict(y.numpy(), None)
    assert u.dtype == torch.float64 and u.shape == (2, 1)
    np.testing.assert_array_equal(u.numpy(), action)
    torch.testing.assert_close(state.u_prev, pstate.u_prev)
    torch.testing.assert_close(ctrl.estimate(state), ctrl.estimate(pstate))


def test_missing_measurements_estimate_mode_only() -> None:
    est_ctrl = controller(LINEAR, "estimate")
    y = np.array([[0.1], [np.nan]], dtype=np.float32)
    a, state = est_ctrl.predict(y, None)
    assert np.all(np.isfinite(a)) and torch.isfinite(est_ctrl.estimate(state)).all()
    with pytest.raises(NonFiniteError, match="observation: expected finite values"):
        controller(LINEAR, "measurement").predict(y, None)


def test_observation_normalization_is_applied() -> None:
    model, _ = untrained(LINEAR, "estimate")
    nominal = gym.make(LINEAR).unwrapped.nominal_model
    norm = {"mean": [1.0, -1.0], "var": [4.0, 0.25], "epsilon": 1e-8, "clip_obs": 10.0}
    plain = RLController(model, observation="estimate", nominal_model=nominal)
    normed = RLController(
        model, observation="estimate", nominal_model=nominal, obs_normalization=norm
    )
    y = np.array([[0.5]], dtype=np.float32)
    raw, _ = plain.policy_observation(y)
    feats, _ = normed.policy_observation(y)
    expected = (raw - np.array([1.0, -1.0])) / np.sqrt(np.array([4.0, 0.25]) + 1e-8)
    np.testing.assert_allclose(feats, expected, rtol=1e-6)
    action, _ = normed.predict(y)
    np.testing.assert_allclose(action, model.predict(feats, deterministic=True)[0], atol=1e-6)


# -- Stable-Baselines3's evaluation on the unwrapped envs ------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "mode", "kwargs"),
    [
        (LINEAR, "measurement", {"history": 4}),
        (LINEAR, "estimate", {}),
        (PENDULUM, "estimate", {}),
        (PENDULUM, "measurement", {"history": 2, "include_actions": True}),
    ],
)
def test_evaluate_policy_on_the_unwrapped_env(env_id: str, mode: str, kwargs: Any) -> None:
    ctrl = controller(env_id, mode, PPO, **kwargs)
    env = Monitor(gym.make(env_id))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no "not wrapped with a Monitor" warning
        mean, std = evaluate_policy(ctrl, env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std) and mean < 0


# -- errors ----------------------------------------------------------------------------------------
def test_controller_bad_inputs() -> None:
    model, env = untrained(LINEAR, "estimate")
    nominal = env.unwrapped.nominal_model
    with pytest.raises(TypeError, match="model: expected a trained Stable-Baselines3 algorithm"):
        RLController(object(), observation="estimate", nominal_model=nominal)
    with pytest.raises(ParameterError, match="observation: expected one of"):
        RLController(model, observation="state")
    with pytest.raises(TypeError, match="needs an estimator or the nominal_model"):
        RLController(model, observation="estimate")
    with pytest.raises(ParameterError, match="history: expected an integer >= 1, found 0"):
        RLController(model, observation="measurement", history=0)
    with pytest.raises(ParameterError, match="history: a measurement history"):
        RLController(model, observation="estimate", nominal_model=nominal, history=3)
    with pytest.raises(DimensionError, match=r"observation space of shape \(4,\)"):
        RLController(model, observation="estimate", nominal_model=nominal, include_covariance=True)
    with pytest.raises(DimensionError, match="expected an observation of history = 3 rows"):
        RLController(model, observation="measurement", history=3)
    with pytest.raises(DimensionError, match=r"obs_normalization\['mean'\]: expected shape"):
        RLController(
            model,
            observation="estimate",
            nominal_model=nominal,
            obs_normalization={"mean": [0.0], "var": [1.0], "epsilon": 1e-8, "clip_obs": 10.0},
        )
    ctrl = RLController(model, observation="estimate", nominal_model=nominal)
    with pytest.raises(DimensionError, match=r"observation: expected shape \(1,\) or \(B, 1\)"):
        ctrl.predict(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="state: expected the RLState"):
        ctrl.predict(np.zeros(1, dtype=np.float32), state=(1, 2))
    with pytest.raises(ParameterError, match="estimator: only used with observation='estimate'"):
        PolicyObservation("measurement", n_y=1, n_u=1, estimator=ctrl.estimator)
