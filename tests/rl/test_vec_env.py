"""NativeVecEnv against make_vec_env step by step, the batched policy input against one copy at
a time, the native env's same-step autoreset, and train_rl on it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_util import make_vec_env

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.estimators import KalmanNet
from kalmannet_ctrl.rl import (
    EstimateObservation,
    MeasurementHistory,
    NativeVecEnv,
    PolicyObservation,
    train_rl,
)

from .policies import LINEAR, PENDULUM

CARTPOLE_V1 = "kalmannet_ctrl/CartPole-v1"
STEPS = 1200  # random actions: CartPole fails every 20-60 steps, LinearSystem truncates at 200


def _actions(space, rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.uniform(-0.6, 0.6, (n, *space.shape)) * space.high).astype(np.float32)


@pytest.mark.parametrize(
    ("env_id", "mode"),
    [
        (CARTPOLE_V1, "estimate"),
        (CARTPOLE_V1, "measurement"),
        (LINEAR, "estimate"),
        (PENDULUM, "measurement"),
    ],
)
def test_one_copy_equals_make_vec_env_step_by_step(env_id: str, mode: str) -> None:
    """With one copy the native VecEnv gives exactly what make_vec_env of the wrapped env gives:
    observations, rewards, dones, terminal observations and truncation flags, across many
    episode ends (failures and time limits)."""
    native = NativeVecEnv(env_id, 1, observation=mode)

    def wrapped() -> gym.Env:
        env = gym.make(env_id)
        return EstimateObservation(env) if mode == "estimate" else MeasurementHistory(env, 4)

    ref = make_vec_env(wrapped, n_envs=1, seed=5)
    native.seed(5)
    np.testing.assert_array_equal(native.reset(), ref.reset())
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(STEPS):
        a = _actions(native.action_space, rng, 1)
        o1, r1, d1, i1 = native.step(a)
        o2, r2, d2, i2 = ref.step(a)
        np.testing.assert_array_equal(o1, o2, err_msg=f"step {t}")
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        if d1[0]:
            ends += 1
            np.testing.assert_array_equal(
                i1[0]["terminal_observation"], i2[0]["terminal_observation"]
            )
            assert i1[0]["TimeLimit.truncated"] == i2[0].get("TimeLimit.truncated", False)
    assert ends >= 3
    native.close()
    ref.close()


@pytest.mark.parametrize("mode", ["estimate", "measurement"])
def test_batched_policy_input_equals_one_copy_at_a_time(mode: str) -> None:
    """Every row of a 5-copy NativeVecEnv is what a policy input of its own (batch 1, restarted
    at its own episode ends) computes from that copy's measurements, which a second native env
    with the same seed replays."""
    B = 5
    native = NativeVecEnv(CARTPOLE_V1, B, observation=mode)
    replay = gym.make_vec(CARTPOLE_V1, num_envs=B, autoreset_mode=AutoresetMode.SAME_STEP)
    single = replay.env
    settings = (
        {"estimator": native.policy_input.estimator} if mode == "estimate" else {"history": 4}
    )
    inputs = [PolicyObservation(mode, n_y=2, n_u=1, **settings) for _ in range(B)]
    native.seed(11)
    obs = native.reset()
    y, _ = replay.reset(seed=11)
    states = []
    for b, p in enumerate(inputs):
        o, st = p.step(p.init(1), torch.as_tensor(y[b : b + 1], dtype=torch.float64))
        np.testing.assert_allclose(obs[b], o[0], rtol=1e-6, atol=1e-7)
        states.append(st)
    rng = np.random.default_rng(1)
    ends = 0
    for _ in range(400):
        a = _actions(native.action_space, rng, B)
        obs, _, dones, infos = native.step(a)
        y, _, term, trunc, info = replay.step(a)
        np.testing.assert_array_equal(dones, term | trunc)
        for b, p in enumerate(inputs):
            bound = single.action_space.high
            u = torch.as_tensor(np.clip(a[b : b + 1], -bound, bound), dtype=torch.float64)
            last = info["final_obs"][b] if dones[b] else y[b]
            o, states[b] = p.step(
                states[b]._replace(u_prev=u), torch.as_tensor(last[None], dtype=torch.float64)
            )
            if dones[b]:
                ends += 1
                np.testing.assert_allclose(
                    infos[b]["terminal_observation"], o[0], rtol=1e-6, atol=1e-7
                )
                o, states[b] = p.step(p.init(1), torch.as_tensor(y[b : b + 1], dtype=torch.float64))
            np.testing.assert_allclose(obs[b], o[0], rtol=1e-6, atol=1e-7)
    assert ends >= 10  # rows restart at different steps
    native.close()
    replay.close()


def test_native_same_step_autoreset_matches_the_single_env() -> None:
    """SAME_STEP with one copy: the single env reset after each episode, step for step, with
    the last observation and state of each episode in final_obs / final_info."""
    venv = gym.make_vec(CARTPOLE_V1, num_envs=1, autoreset_mode="SameStep")
    assert venv.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    env = gym.make(CARTPOLE_V1)
    y, info = venv.reset(seed=3)
    y1, info1 = env.reset(seed=3)
    np.testing.assert_array_equal(y[0], y1)
    ends = 0
    for t in range(1000):
        a = np.array([[5.0 * np.sin(t / 7)]], dtype=np.float32)
        y, r, te, tr, info = venv.step(a)
        y1, r1, te1, tr1, info1 = env.step(a[0])
        assert (te[0], tr[0]) == (te1, tr1) and r[0] == pytest.approx(r1, rel=1e-12)
        if te1 or tr1:
            ends += 1
            assert info["_final_obs"][0] and info["_final_info"][0]
            np.testing.assert_array_equal(info["final_obs"][0], y1)
            np.testing.assert_array_equal(info["final_info"]["state"][0], info1["state"])
            y1, info1 = env.reset()
        else:
            assert "final_obs" not in info
        np.testing.assert_array_equal(y[0], y1)
        np.testing.assert_array_equal(info["state"][0], info1["state"])
    assert ends >= 10
    with pytest.raises(ParameterError, match="autoreset_mode: expected one of"):
        gym.make_vec(CARTPOLE_V1, num_envs=1, autoreset_mode="Disabled")


def test_train_rl_on_the_native_vec_env() -> None:
    ctrl, info = train_rl(
        CARTPOLE_V1,
        "ppo",
        256,
        observation="estimate",
        n_envs=4,
        hyperparams={"n_steps": 32, "batch_size": 64, "n_epochs": 1, "normalize": True},
        vec_env="native",
        progress=False,
    )
    assert info["env_steps"] == 256 and info["vec_env"] == "native"
    assert info["episode_returns"]  # VecMonitor's episode statistics reach SB3
    assert ctrl.obs_normalization is not None
    with pytest.raises(ParameterError, match="vec_env: expected one of"):
        train_rl(CARTPOLE_V1, "ppo", 64, vec_env="subproc")


def test_native_vec_env_bad_input() -> None:
    with pytest.raises(TypeError, match="has no native vector env"):
        NativeVecEnv("CartPole-v1", 2)  # Gymnasium's own cart-pole
    net = KalmanNet(gym.make(LINEAR).unwrapped.nominal_model)
    with pytest.raises(TypeError, match="estimator: restarting some rows"):
        NativeVecEnv(LINEAR, 2, observation="estimate", estimator=net)
    with pytest.raises(ParameterError, match="n_envs"):
        NativeVecEnv(LINEAR, 0)
