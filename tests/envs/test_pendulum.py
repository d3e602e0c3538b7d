"""Pendulum-v0: the true and nominal models, bad input, start, measurement, clipping, energy."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQR
from kalmannet_ctrl.envs.pendulum import (
    PENDULUM_X0_COV,
    PENDULUM_X0_MEAN,
    PendulumEnv,
    PendulumVectorEnv,
)
from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.models import QuadraticCost, linearize, pendulum, psd_sqrt

KEYS = ("mass", "length", "damping")
DEFAULT = {"mass": 1.2, "length": 1.1, "damping": 1.5}


def f_np(env: PendulumEnv, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The true model's noise-free step on NumPy arrays, x (B, 2), u (B, 1) -> (B, 2)."""
    with torch.no_grad():
        return env.true_model.f(torch.as_tensor(x), torch.as_tensor(u, dtype=torch.float64)).numpy()


def energy(env: PendulumEnv, x: np.ndarray) -> np.ndarray:
    """Mechanical energy ½ m l² θ̇² + m g l cos θ of the true pendulum (θ from upright)."""
    p = env.true_model.params
    m, l, g = p["mass"], p["length"], p["gravity"]
    return 0.5 * m * l * l * x[..., 1] ** 2 + m * g * l * np.cos(x[..., 0])


def wrap(theta: np.ndarray) -> np.ndarray:
    return (theta + math.pi) % (2 * math.pi) - math.pi


# -- models and mismatch ---------------------------------------------------------------------------
def test_default_mismatch_and_nominal_model() -> None:
    env = PendulumEnv()
    assert env.mismatch == DEFAULT
    reference = pendulum(x0_mean=PENDULUM_X0_MEAN, x0_cov=PENDULUM_X0_COV)
    nominal, true = env.nominal_model.params, env.true_model.params
    assert nominal == reference.params
    assert (nominal["mass"], nominal["length"], nominal["damping"]) == (1.0, 1.0, 0.1)
    for key in KEYS:
        assert true[key] == pytest.approx(nominal[key] * DEFAULT[key], rel=1e-15)
        assert true[key] != nominal[key]
    for key in ("gravity", "dt", "process_std", "measurement_std", "x0_mean", "x0_cov"):
        assert true[key] == nominal[key]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("factor", [0.25, 0.8, 1.0, 3.0, 4.0])
def test_each_key_multiplies_the_true_parameter(key: str, factor: float) -> None:
    env = PendulumEnv(mismatch={key: factor})
    nominal, true = env.nominal_model.params, env.true_model.params
    assert nominal == pendulum(x0_mean=PENDULUM_X0_MEAN, x0_cov=PENDULUM_X0_COV).params
    assert true[key] == pytest.approx(nominal[key] * factor, rel=1e-15)
    for other in KEYS:
        if other != key:
            assert true[other] == pytest.approx(nominal[other] * DEFAULT[other], rel=1e-15)


def test_zero_damping_is_allowed() -> None:
    env = PendulumEnv(mismatch={"damping": 0.0})
    assert env.true_model.params["damping"] == 0.0
    assert env.nominal_model.params["damping"] == 0.1


def test_reset_options_reconfigure_the_true_model_and_keep_it() -> None:
    env = PendulumEnv()
    env.reset(seed=0, options={"mismatch": {"mass": 2.0}})
    assert env.mismatch == {**DEFAULT, "mass": 2.0}
    assert env.true_model.params["mass"] == 2.0
    assert env.nominal_model.params["mass"] == 1.0
    env.reset(seed=1)
    assert env.true_model.params["mass"] == 2.0
    envs = PendulumVectorEnv(num_envs=2, mismatch={"length": 0.5})
    assert envs.true_model.params["length"] == 0.5
    envs.reset(seed=0, options={"mismatch": {"length": 3.0}})
    assert envs.true_model.params["length"] == pytest.approx(3.0)
    assert envs.nominal_model.params["length"] == 1.0


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mismatch", "error", "match"),
    [
        ({"gravity": 1.0}, ParameterError, r"mismatch: unknown key\(s\) \['gravity'\]"),
        ({"mass": 0.0}, ParameterError, r"mismatch\['mass'\].*\[0.25, 4.0\].*found 0.0"),
        ({"mass": -1.0}, ParameterError, r"mismatch\['mass'\].*found -1.0"),
        ({"length": 0.0}, ParameterError, r"mismatch\['length'\].*found 0.0"),
        ({"length": -2.0}, ParameterError, r"mismatch\['length'\].*found -2.0"),
        ({"length": 10.0}, ParameterError, r"mismatch\['length'\].*found 10.0"),
        ({"damping": -0.1}, ParameterError, r"mismatch\['damping'\].*found -0.1"),
        ({"mass": math.nan}, ParameterError, r"mismatch\['mass'\].*finite.*nan"),
        ({"damping": -math.inf}, ParameterError, r"mismatch\['damping'\].*finite"),
        ({"length": None}, TypeError, r"mismatch\['length'\]: expected a number.*NoneType"),
        (1.5, TypeError, r"mismatch: expected a mapping.*float"),
    ],
)
def test_bad_mismatch_raises_a_typed_error(mismatch, error, match) -> None:
    with pytest.raises(error, match=match):
        PendulumEnv(mismatch=mismatch)
    env = PendulumEnv()
    with pytest.raises(error, match=match.replace("mismatch", r"options\['mismatch'\]", 1)):
        env.reset(options={"mismatch": mismatch})
    assert env.mismatch == DEFAULT


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"action_bound": -2.0}, ParameterError, r"action_bound: .*found -2.0"),
        ({"action_bound": math.inf}, ParameterError, r"action_bound: .*found inf"),
        ({"action_bound": None}, TypeError, r"action_bound: expected a number"),
        ({"cost": "quadratic"}, TypeError, r"cost: expected a QuadraticCost, found str"),
        (
            {"cost": QuadraticCost(np.eye(4), [[1.0]])},
            DimensionError,
            r"cost: expected Q \(2, 2\) and R \(1, 1\), found Q \(4, 4\)",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        PendulumEnv(**kwargs)


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.zeros(2, dtype=np.float32), DimensionError, r"action: expected shape \(1,\), found"),
        (np.zeros((2, 1)), DimensionError, r"action: expected shape \(1,\), found \(2, 1\)"),
        (np.array([np.nan], dtype=np.float32), NonFiniteError, r"action: expected finite"),
        (np.array([-np.inf]), NonFiniteError, r"action: expected finite"),
        (object(), TypeError, r"action: expected an array of numbers"),
    ],
)
def test_bad_actions_raise_a_typed_error(action, error, match) -> None:
    env = PendulumEnv()
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


# -- start, measurement, dynamics ------------------------------------------------------------------
def test_spaces() -> None:
    env = PendulumEnv()
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    assert env.action_space.low[0] == -2.0 and env.action_space.high[0] == 2.0
    assert env.observation_space.shape == (1,) and env.observation_space.dtype == np.float32


def test_start_hanging_down_and_angle_only_measurement() -> None:
    n = 4000
    envs = PendulumVectorEnv(num_envs=n)
    obs, info = envs.reset(seed=7)
    x = info["state"]
    assert obs.shape == (n, 1)
    tol = 4 * 0.1 / math.sqrt(n)
    np.testing.assert_allclose(x.mean(0), [math.pi, 0.0], atol=tol)
    np.testing.assert_allclose(x.std(0), [0.1, 0.1], rtol=0.05)
    err = obs[:, 0].astype(np.float64) - x[:, 0]  # y = θ + noise of std 0.02
    assert abs(err.mean()) < 4 * 0.02 / math.sqrt(n)
    assert err.std() == pytest.approx(0.02, rel=0.05)
    assert abs(np.corrcoef(err, x[:, 1])[0, 1]) < 0.1  # the velocity is not measured


def test_one_step_is_the_library_model_plus_noise() -> None:
    env = PendulumEnv()
    _, info = env.reset(seed=4)
    L = psd_sqrt(env.true_model.process_cov).numpy()
    for u in (0.0, 1.5, -2.0):
        x = info["state"]
        z = copy.deepcopy(env.np_random).standard_normal((1, 2))  # the step's process noise
        expected = f_np(env, x[None], np.array([[u]]))[0]
        _, _, terminated, truncated, info = env.step(np.array([u], dtype=np.float32))
        assert not terminated and not truncated
        assert info["state"][0] == pytest.approx(expected[0], abs=1e-12)  # no noise on θ
        np.testing.assert_allclose(info["state"], expected + (z @ L.T)[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_torque_is_clipped_at_the_limit(sign: float) -> None:
    env, over = PendulumEnv(), PendulumEnv()
    _, info = env.reset(seed=9)
    over.reset(seed=9)
    x = info["state"]
    _, r_bound, *_, info_bound = env.step(np.array([sign * 2.0], dtype=np.float32))
    _, r_over, *_, info_over = over.step(np.array([sign * 20.0], dtype=np.float32))
    np.testing.assert_array_equal(info_over["state"], info_bound["state"])
    assert r_over == r_bound == pytest.approx(-(x[0] ** 2 + 0.1 * x[1] ** 2 + 0.001 * 4.0))
    # θ carries no process noise, so it shows the torque applied: the bound, not 10 times it
    assert info_over["state"][0] == pytest.approx(f_np(env, x[None], [[sign * 2.0]])[0, 0])
    assert abs(info_over["state"][0] - f_np(env, x[None], [[sign * 20.0]])[0, 0]) > 1e-3


def test_reward_is_minus_the_wrapped_angle_stage_cost() -> None:
    env = PendulumEnv()
    _, info = env.reset(seed=1)
    x = info["state"]
    _, reward, *_ = env.step(np.array([0.5], dtype=np.float32))
    theta = math.remainder(x[0], 2 * math.pi)  # the angle to upright, in [-π, π]
    assert reward == pytest.approx(-(theta**2 + 0.1 * x[1] ** 2 + 0.001 * 0.25), rel=1e-12)
    assert reward < -0.9 * math.pi**2  # hanging down is charged about π²
    # upright after a full turn is charged like upright
    wrapped = env.cost_state(np.array([[2 * math.pi + 0.1, 0.0], [-math.pi - 0.1, 0.0]]))
    np.testing.assert_allclose(wrapped[:, 0], [0.1, math.pi - 0.1], atol=1e-12)


def test_cost_state_on_tensors_matches_arrays() -> None:
    """MPC's sampled rollouts call cost_state on tensors: same wrap, the tensor's dtype kept."""
    env = PendulumEnv()
    x = np.random.default_rng(0).uniform(-20.0, 20.0, size=(50, 2))
    ref = env.cost_state(x)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        out = env.cost_state(torch.as_tensor(x, dtype=dtype))
        assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == (50, 2)
        np.testing.assert_allclose(out.double().numpy(), ref, atol=tol)
        assert bool(((out[:, 0] >= -math.pi) & (out[:, 0] <= math.pi)).all())


# -- physics: the motor is too weak to lift the pendulum, damping dissipates -------------------
def test_the_torque_limit_is_below_the_gravity_torque() -> None:
    env = PendulumEnv()
    for model in (env.nominal_model, env.true_model):
        p = model.params
        assert env.action_space.high[0] < 0.25 * p["mass"] * p["gravity"] * p["length"]


def test_constant_full_torque_cannot_lift_it_above_horizontal() -> None:
    envs = PendulumVectorEnv(num_envs=50, max_episode_steps=400)
    envs.reset(seed=0)
    for _ in range(399):
        _, _, terminated, truncated, info = envs.step(np.full((50, 1), 2.0, dtype=np.float32))
        assert not terminated.any() and not truncated.any()
        assert np.all(np.abs(wrap(info["state"][:, 0])) > math.pi / 2)


def test_zero_torque_damped_pendulum_started_down_stays_down() -> None:
    n = 100
    envs = PendulumVectorEnv(num_envs=n, max_episode_steps=400)
    _, info = envs.reset(seed=2)
    env = envs.env
    x = info["state"]
    e_top = energy(env, np.zeros(2))  # m g l upright, −m g l hanging down at rest
    zero = np.zeros((n, 1), dtype=np.float32)
    for _ in range(399):
        x_prev = x
        _, reward, terminated, truncated, info = envs.step(zero)
        x = info["state"]
        assert not terminated.any() and not truncated.any()
        assert np.all(np.abs(wrap(x[:, 0] - math.pi)) < 0.5)
        # only the small noise kicks add energy: far less than the 2 m g l needed to go over
        assert np.all(energy(env, x) < -e_top + 0.05 * (2 * e_top))
        # the noise-free step dissipates energy: damping (and RK4) never add any
        assert np.all(energy(env, f_np(env, x_prev, zero)) <= energy(env, x_prev) + 1e-12)
    assert np.all(reward < -0.8 * math.pi**2)


def test_swing_up_by_pumping_then_balancing_fits_in_an_episode() -> None:
    """Full-torque energy pumping, then LQR near upright, on the true state: feasible in 400."""
    n, steps = 20, 400
    envs = PendulumVectorEnv(num_envs=n, max_episode_steps=steps)
    env = envs.env
    p = env.true_model.params
    mgl = p["mass"] * p["gravity"] * p["length"]
    K = LQR(linearize(env.true_model, [0.0, 0.0], [0.0]), env.cost).gain.numpy()
    _, info = envs.reset(seed=0)
    x, upright = info["state"], np.zeros(n, dtype=int)
    for _ in range(steps - 1):
        th = wrap(x[:, 0])
        pump = np.where(energy(env, x) < mgl, 2.0 * np.where(x[:, 1] >= 0, 1.0, -1.0), 0.0)
        balance = -(np.stack([th, x[:, 1]], axis=1) @ K.T)[:, 0]
        u = np.where(np.abs(th) < 0.4, balance, pump)
        _, _, _, truncated, info = envs.step(u[:, None].astype(np.float32))
        assert not truncated.any()
        x = info["state"]
        upright = np.where(np.abs(wrap(x[:, 0])) < 0.1, upright + 1, 0)
    assert np.all(upright >= 100)  # every copy is balanced for (at least) the last 5 s


def test_succeeded_asks_for_the_last_five_seconds_upright_at_any_turn() -> None:
    env = PendulumEnv()
    T = 400
    states = np.zeros((4, T + 1, 2))
    states[0, :, 0] = math.pi  # hanging down throughout
    states[1, T - 99 :, 0] = 2 * math.pi + 0.3  # up after a full turn for the last 100 states
    states[2, T - 98 :, 0] = -0.2  # up for only the last 99 states
    states[2, : T - 98, 0] = math.pi
    states[3, :, 0] = 0.0  # up throughout, but its run ended by a failure
    lengths = np.full(4, T)
    failed = np.array([False, False, False, True])
    assert env.succeeded(states, lengths, failed).tolist() == [False, True, False, False]
    # the window follows each episode's own length; states after its end are ignored
    short = states[1:2].copy()
    short[0, 150:, 0] = math.pi
    short[0, 50:150, 0] = 0.1
    assert env.succeeded(short, np.array([149]), np.array([False])).tolist() == [True]
    assert env.succeeded(short, np.array([150]), np.array([False])).tolist() == [False]


def test_the_swing_up_controller_succeeds_and_zero_torque_does_not() -> None:
    """The pumping + LQR controller of the test above counts as a success, zero torque not."""
    n, steps = 8, 400
    envs = PendulumVectorEnv(num_envs=n, max_episode_steps=steps)
    env = envs.env
    p = env.true_model.params
    mgl = p["mass"] * p["gravity"] * p["length"]
    K = LQR(linearize(env.true_model, [0.0, 0.0], [0.0]), env.cost).gain.numpy()
    for policy in ("pump", "zero"):
        _, info = envs.reset(seed=1)
        states = [info["state"]]
        for _ in range(steps):
            x = states[-1]
            th = wrap(x[:, 0])
            pump = np.where(energy(env, x) < mgl, 2.0 * np.where(x[:, 1] >= 0, 1.0, -1.0), 0.0)
            balance = -(np.stack([th, x[:, 1]], axis=1) @ K.T)[:, 0]
            u = np.where(np.abs(th) < 0.4, balance, pump) if policy == "pump" else 0.0 * th
            _, _, _, _, info = envs.step(u[:, None].astype(np.float32))
            states.append(info["state"])
        ok = env.succeeded(np.stack(states, 1), np.full(n, steps), np.zeros(n, dtype=bool))
        assert ok.all() if policy == "pump" else not ok.any()
