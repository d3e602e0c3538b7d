"""Actions rescaled to [-1, 1]: the training envs (Gymnasium's RescaleAction, and the native
VecEnv's own map), the controller's map back to the physical bounds, save/load, frozen
observation statistics at evaluation, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.env_util import make_vec_env

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.errors import CheckpointError, ParameterError
from kalmannet_ctrl.rl import EstimateObservation, NativeVecEnv, RLController, train_rl

from .policies import LINEAR

CARTPOLE_V1 = "kalmannet_ctrl/CartPole-v1"
TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "normalize": True}


def test_native_rescaled_actions_equal_gymnasiums_rescale_action() -> None:
    native = NativeVecEnv(CARTPOLE_V1, 1, observation="estimate", rescale_actions=True)
    assert (native.action_space.low == -1).all() and (native.action_space.high == 1).all()
    ref = make_vec_env(
        lambda: gym.wrappers.RescaleAction(EstimateObservation(gym.make(CARTPOLE_V1)), -1.0, 1.0),
        n_envs=1,
        seed=2,
    )
    native.seed(2)
    np.testing.assert_array_equal(native.reset(), ref.reset())
    rng = np.random.default_rng(3)
    for t in range(300):
        a = rng.uniform(-1, 1, (1, 1)).astype(np.float32)
        o1, r1, d1, _ = native.step(a)
        o2, r2, d2, _ = ref.step(a)
        # the same affine map, Gymnasium's evaluated in float32: equal to float32 precision
        np.testing.assert_allclose(o1, o2, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
        np.testing.assert_allclose(r1, r2, rtol=1e-5)
        np.testing.assert_array_equal(d1, d2)


def test_rescaled_policy_maps_back_saves_and_keeps_its_statistics(tmp_path: Path) -> None:
    ctrl, info = train_rl(
        LINEAR,
        "ppo",
        128,
        observation="estimate",
        hyperparams=TINY,
        n_envs=1,
        rescale_actions=True,
        progress=False,
        log_dir=tmp_path,
    )
    env = gym.make(LINEAR)
    low, high = env.action_space.low.astype(np.float64), env.action_space.high.astype(np.float64)
    assert info["hyperparams"]["rescale_actions"] is True and ctrl.rescaled
    assert (ctrl.model.action_space.low == -1).all() and (ctrl.model.action_space.high == 1).all()
    np.testing.assert_array_equal(ctrl.action_low, low)
    np.testing.assert_array_equal(ctrl.action_high, high)
    mean_before = ctrl.obs_normalization["mean"].copy()
    y = np.random.default_rng(0).normal(0, 1.0, (7, 1)).astype(np.float32)
    # the action applied is the policy's [-1, 1] action mapped to the bounds, RescaleAction's map
    obs, _ = ctrl.policy_observation(y)
    a, _ = ctrl.model.predict(obs, deterministic=True)
    expected = low + (np.clip(a.astype(np.float64), -1, 1) + 1) * (high - low) / 2
    u, _ = ctrl.predict(y, deterministic=True)
    assert u.dtype == np.float32  # predict returns the env's action dtype
    np.testing.assert_allclose(u, expected, rtol=1e-6, atol=0)
    for _ in range(20):  # evaluation never updates the normalization statistics
        ctrl.predict(y, deterministic=True)
    np.testing.assert_array_equal(ctrl.obs_normalization["mean"], mean_before)
    # saved and loaded with its bounds
    loaded = RLController.load(tmp_path / "final", env.unwrapped.nominal_model)
    assert loaded.rescaled
    np.testing.assert_allclose(loaded.predict(y, deterministic=True)[0], u, rtol=1e-12)
    # a corrupt bounds entry is a CheckpointError, not a wrong controller
    sidecar = tmp_path / "final.json"
    config = json.loads(sidecar.read_text())
    config["action_bounds"] = [["a"], [1.0]]
    sidecar.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid 'action_bounds'"):
        RLController.load(tmp_path / "final", env.unwrapped.nominal_model)


def test_rescale_bad_input() -> None:
    with pytest.raises(ParameterError, match="rescale_actions: expected a bool"):
        train_rl(LINEAR, "ppo", 64, rescale_actions="yes")
    ctrl, _ = train_rl(
        LINEAR, "ppo", 64, observation="estimate", hyperparams=TINY, n_envs=1, progress=False
    )
    nominal = gym.make(LINEAR).unwrapped.nominal_model
    with pytest.raises(ParameterError, match=r"action_bounds: a rescaled policy acts in \[-1, 1\]"):
        RLController(
            ctrl.model, observation="estimate", nominal_model=nominal, action_bounds=([-1.0], [1.0])
        )
