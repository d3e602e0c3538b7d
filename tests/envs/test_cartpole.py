"""CartPole-v0: the true and nominal models, bad input, clipping, failure, and LQG acceptance."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQG
from kalmannet_ctrl.envs.cartpole import (
    CARTPOLE_LARGE_MISMATCH,
    CartPoleEnv,
    CartPoleVectorEnv,
)
from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.models import QuadraticCost, cartpole, linearize, psd_sqrt

SCALED = ("pole_length", "pole_mass", "cart_mass")
DEFAULT = {"pole_length": 0.7, "pole_mass": 1.5, "cart_mass": 0.8, "friction": 0.5}


def true_step(env: CartPoleEnv, x: np.ndarray, u: float) -> np.ndarray:
    """f(x, u) + L_w z with z the next standard normals of a copy of the env's generator.

    The env draws the process noise first in ``step``, so this is the state it reaches.
    """
    rng = copy.deepcopy(env.np_random)
    z = rng.standard_normal((1, 4))
    L = psd_sqrt(env.true_model.process_cov).numpy()
    with torch.no_grad():
        fx = env.true_model.f(torch.as_tensor(x[None]), torch.tensor([[u]], dtype=torch.float64))
    return fx.numpy()[0] + (z @ L.T)[0]


# -- models and mismatch ---------------------------------------------------------------------------
def test_default_mismatch_is_the_documented_one_and_changes_every_parameter() -> None:
    env = CartPoleEnv()
    assert env.mismatch == DEFAULT
    nominal, true = env.nominal_model.params, env.true_model.params
    assert nominal == cartpole().params
    for key in SCALED:
        assert true[key] == pytest.approx(nominal[key] * DEFAULT[key], rel=1e-15)
        assert true[key] != nominal[key]
    assert nominal["friction"] == 0.0 and true["friction"] == 0.5
    for key in ("gravity", "dt", "force_std", "position_std", "angle_std"):
        assert true[key] == nominal[key]


@pytest.mark.parametrize("key", SCALED)
@pytest.mark.parametrize("factor", [0.25, 0.6, 1.0, 2.5, 4.0])
def test_each_scale_key_multiplies_the_true_parameter(key: str, factor: float) -> None:
    env = CartPoleEnv(mismatch={key: factor})
    nominal, true = env.nominal_model.params, env.true_model.params
    assert nominal == cartpole().params  # the nominal model is never touched
    assert true[key] == pytest.approx(nominal[key] * factor, rel=1e-15)
    for other in SCALED:
        if other != key:
            assert true[other] == pytest.approx(nominal[other] * DEFAULT[other], rel=1e-15)


@pytest.mark.parametrize("value", [0.0, 0.3, 10.0])
def test_friction_is_the_absolute_true_value(value: float) -> None:
    env = CartPoleEnv(mismatch={"friction": value})
    assert env.true_model.params["friction"] == value
    assert env.nominal_model.params["friction"] == 0.0


def test_true_dynamics_are_the_library_cartpole_with_the_true_parameters() -> None:
    env = CartPoleEnv(mismatch={"pole_length": 2.0, "friction": 1.0})
    reference = cartpole(
        pole_length=1.0, pole_mass=0.15, cart_mass=0.8, friction=1.0
    )  # 0.5 m · 2, 0.1 kg · 1.5, 1 kg · 0.8
    g = torch.Generator().manual_seed(0)
    x = 0.2 * torch.randn(8, 4, generator=g, dtype=torch.float64)
    u = 5.0 * torch.randn(8, 1, generator=g, dtype=torch.float64)
    torch.testing.assert_close(env.true_model.f(x, u), reference.f(x, u), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(env.true_model.process_cov, reference.process_cov)
    assert env.true_model.dt == 0.02


def test_reset_options_reconfigure_the_true_model_and_keep_it() -> None:
    env = CartPoleEnv()
    nominal = env.nominal_model
    env.reset(seed=0, options={"mismatch": {"pole_mass": 3.0, "friction": 2.0}})
    assert env.mismatch == {**DEFAULT, "pole_mass": 3.0, "friction": 2.0}
    assert env.true_model.params["pole_mass"] == pytest.approx(0.3)
    assert env.true_model.params["friction"] == 2.0
    assert env.nominal_model.params == nominal.params
    env.reset(seed=1)  # no options: the mismatch stays
    assert env.true_model.params["pole_mass"] == pytest.approx(0.3)
    env.reset(options={"mismatch": {}})  # an empty mapping restores the defaults
    assert env.mismatch == DEFAULT


def test_vector_env_takes_the_mismatch_and_reset_options() -> None:
    envs = CartPoleVectorEnv(num_envs=3, mismatch={"cart_mass": 2.0})
    assert envs.true_model.params["cart_mass"] == pytest.approx(2.0)
    envs.reset(seed=0, options={"mismatch": {"cart_mass": 0.5}})
    assert envs.true_model.params["cart_mass"] == pytest.approx(0.5)
    assert envs.nominal_model.params == cartpole().params


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mismatch", "error", "match"),
    [
        ({"pole_lenght": 1.0}, ParameterError, r"mismatch: unknown key\(s\) \['pole_lenght'\]"),
        ({"pole_length": 0.0}, ParameterError, r"mismatch\['pole_length'\].*found 0.0"),
        ({"pole_length": -1.0}, ParameterError, r"mismatch\['pole_length'\].*found -1.0"),
        ({"pole_mass": 0.0}, ParameterError, r"mismatch\['pole_mass'\].*\[0.25, 4.0\]"),
        ({"cart_mass": -0.5}, ParameterError, r"mismatch\['cart_mass'\].*found -0.5"),
        ({"cart_mass": 5.0}, ParameterError, r"mismatch\['cart_mass'\].*found 5.0"),
        ({"friction": -0.1}, ParameterError, r"mismatch\['friction'\].*found -0.1"),
        ({"pole_length": math.nan}, ParameterError, r"mismatch\['pole_length'\].*finite"),
        ({"friction": math.inf}, ParameterError, r"mismatch\['friction'\].*finite"),
        ({"pole_mass": "1.5"}, TypeError, r"mismatch\['pole_mass'\]: expected a number"),
        ({"pole_mass": True}, TypeError, r"mismatch\['pole_mass'\]: expected a number"),
        ([("pole_mass", 1.0)], TypeError, r"mismatch: expected a mapping"),
    ],
)
def test_bad_mismatch_raises_a_typed_error(mismatch, error, match) -> None:
    with pytest.raises(error, match=match):
        CartPoleEnv(mismatch=mismatch)
    env = CartPoleEnv()
    with pytest.raises(error, match=match.replace("mismatch", r"options\['mismatch'\]", 1)):
        env.reset(options={"mismatch": mismatch})
    assert env.mismatch == DEFAULT  # a rejected reset leaves the env as it was


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"action_bound": 0.0}, ParameterError, r"action_bound: expected a finite number > 0"),
        ({"action_bound": math.nan}, ParameterError, r"action_bound: .*found nan"),
        ({"action_bound": "10"}, TypeError, r"action_bound: expected a number"),
        ({"angle_limit": -0.5}, ParameterError, r"angle_limit: .*found -0.5"),
        ({"angle_limit": 4.0}, ParameterError, r"angle_limit: expected a value in \(0, π\]"),
        ({"position_limit": math.inf}, ParameterError, r"position_limit: .*found inf"),
        ({"cost": np.eye(4)}, TypeError, r"cost: expected a QuadraticCost, found ndarray"),
        (
            {"cost": QuadraticCost(np.eye(2), [[1.0]])},
            DimensionError,
            r"cost: expected Q \(4, 4\) and R \(1, 1\), found Q \(2, 2\)",
        ),
        ({"render_mode": "ansi"}, ParameterError, r"render_mode: expected None or one of"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        CartPoleEnv(**kwargs)


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (np.zeros(2, dtype=np.float32), DimensionError, r"action: expected shape \(1,\)"),
        (np.zeros((1, 1, 1)), DimensionError, r"action: expected shape \(1,\), found \(1, 1, 1\)"),
        (np.array([np.nan], dtype=np.float32), NonFiniteError, r"action: expected finite"),
        (np.array([np.inf]), NonFiniteError, r"action: expected finite"),
        ("push", TypeError, r"action: expected an array of numbers"),
    ],
)
def test_bad_actions_raise_a_typed_error(action, error, match) -> None:
    env = CartPoleEnv()
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_bad_vector_actions_raise_a_typed_error() -> None:
    envs = CartPoleVectorEnv(num_envs=2)
    envs.reset(seed=0)
    with pytest.raises(DimensionError, match=r"actions: expected shape \(2, 1\), found \(3, 1\)"):
        envs.step(np.zeros((3, 1), dtype=np.float32))
    with pytest.raises(NonFiniteError, match=r"actions: expected finite values"):
        envs.step(np.array([[0.0], [np.nan]], dtype=np.float32))


# -- spaces, clipping, rewards ---------------------------------------------------------------------
def test_spaces_and_measurement() -> None:
    env = CartPoleEnv(action_bound=7.0)
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float32
    assert env.action_space.low[0] == -7.0 and env.action_space.high[0] == 7.0
    assert env.observation_space.shape == (2,) and env.observation_space.dtype == np.float32
    # y = (x, θ) + noise of std (0.01, 0.01): checked on many copies at once
    envs = CartPoleVectorEnv(num_envs=4000)
    obs, info = envs.reset(seed=3)
    err = obs.astype(np.float64) - info["state"][:, [0, 2]]
    assert np.all(np.abs(err.mean(0)) < 4 * 0.01 / math.sqrt(4000))
    np.testing.assert_allclose(err.std(0), [0.01, 0.01], rtol=0.05)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_actions_outside_the_bounds_are_clipped_to_the_bound(sign: float) -> None:
    env, over = CartPoleEnv(), CartPoleEnv()
    _, info = env.reset(seed=5)
    over.reset(seed=5)
    x = info["state"]
    expected = true_step(env, x, sign * 10.0)
    _, r_bound, *_, info_bound = env.step(np.array([sign * 10.0], dtype=np.float32))
    _, r_over, *_, info_over = over.step(np.array([sign * 100.0], dtype=np.float32))
    np.testing.assert_allclose(info_bound["state"], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(info_over["state"], info_bound["state"])
    assert r_over == r_bound  # charged for the clipped force
    assert r_bound == pytest.approx(-(x @ np.diag([1.0, 0.1, 10.0, 0.1]) @ x + 0.01 * 100.0))
    # and the unclipped force would have gone elsewhere
    assert np.abs(true_step(over, x, sign * 100.0) - info_over["state"]).max() > 1e-3


def test_one_step_is_the_true_model_plus_noise() -> None:
    env = CartPoleEnv()
    _, info = env.reset(seed=11)
    for u in (0.0, 3.0, -7.5):
        x = info["state"]
        expected = true_step(env, x, u)
        _, _, _, _, info = env.step(np.array([u], dtype=np.float32))
        np.testing.assert_allclose(info["state"], expected, rtol=0, atol=1e-12)


def test_reward_is_minus_the_stage_cost_by_hand() -> None:
    env = CartPoleEnv()
    _, info = env.reset(seed=2)
    x = info["state"]
    u = 3.0
    _, reward, terminated, truncated, step_info = env.step(np.array([u], dtype=np.float32))
    by_hand = x[0] ** 2 + 0.1 * x[1] ** 2 + 10.0 * x[2] ** 2 + 0.1 * x[3] ** 2 + 0.01 * u**2
    assert not terminated and not truncated
    assert reward == pytest.approx(-by_hand, rel=1e-12)
    assert step_info["cost"] == pytest.approx(by_hand, rel=1e-12)


# -- failure ---------------------------------------------------------------------------------------
def test_failed_thresholds() -> None:
    env = CartPoleEnv()
    x = np.zeros((7, 4))
    x[1, 2], x[2, 2], x[3, 2] = 0.5, 0.5 + 1e-9, -0.6
    x[4, 0], x[5, 0], x[6, 0] = 2.4, -2.4 - 1e-9, 3.0
    np.testing.assert_array_equal(env.failed(x), [False, False, True, True, False, True, True])
    narrow = CartPoleEnv(angle_limit=0.2, position_limit=1.0)
    np.testing.assert_array_equal(
        narrow.failed(np.array([[0.0, 0, 0.25, 0], [1.1, 0, 0, 0], [0.9, 0, 0.19, 0]])),
        [True, True, False],
    )


def test_pushing_it_over_terminates_with_the_failure_penalty() -> None:
    env = CartPoleEnv()
    _, info = env.reset(seed=0)
    Q, R = np.diag([1.0, 0.1, 10.0, 0.1]), 0.01
    steps, terminated = 0, False
    while not terminated:
        assert steps < 200, "a constant full push did not make the pole fall"
        x = info["state"]
        _, reward, terminated, truncated, info = env.step(np.array([10.0], dtype=np.float32))
        steps += 1
        assert not truncated
        stage = x @ Q @ x + R * 100.0
        if not terminated:
            assert abs(info["state"][2]) <= 0.5 and abs(info["state"][0]) <= 2.4
            assert reward == pytest.approx(-stage, rel=1e-12)
    assert steps > 5  # it takes a while: the start is near upright
    assert info["state"][2] < -0.5  # pushing the cart toward +x tips the pole back
    assert reward == pytest.approx(-stage - 100.0, rel=1e-12)
    assert CartPoleEnv.failure_penalty == 100.0


def test_vector_env_charges_the_penalty_and_restarts_the_failed_copy() -> None:
    envs = CartPoleVectorEnv(num_envs=2, max_episode_steps=500)
    envs.reset(seed=0)
    push = np.array([[10.0], [0.0]], dtype=np.float32)
    for _ in range(200):
        _, reward, terminated, _, info = envs.step(push)
        if terminated[0]:
            break
    assert terminated[0] and not terminated[1]
    assert reward[0] == pytest.approx(-info["cost"][0] - 100.0)
    assert reward[1] == pytest.approx(-info["cost"][1])
    _, reward, terminated, _, info = envs.step(push)  # next-step autoreset of copy 0
    assert reward[0] == 0.0 and not terminated[0]
    assert np.abs(info["state"][0]).max() < 0.2


# -- acceptance: LQG on the linearized nominal model -----------------------------------------------
def run_lqg(mismatch, *, design: str = "nominal", n: int = 100, seed: int = 0, steps: int = 500):
    """Success rate (no termination in the first episode of each copy) and mean return."""
    envs = CartPoleVectorEnv(num_envs=n, max_episode_steps=steps, mismatch=mismatch)
    model = envs.nominal_model if design == "nominal" else envs.true_model
    lin = linearize(model, np.zeros(4), np.zeros(1))
    space = envs.single_action_space
    ctrl = LQG(lin, envs.cost, input_bounds=(space.low, space.high))
    obs, _ = envs.reset(seed=seed)
    state, start = None, np.ones(n, dtype=bool)
    running, failed, ret = np.ones(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n)
    for _ in range(steps):
        action, state = ctrl.predict(obs, state, episode_start=start)
        obs, reward, terminated, truncated, _ = envs.step(action)
        ret[running] += reward[running]
        failed |= running & terminated
        running &= ~(terminated | truncated)
        start = terminated | truncated
    assert not running.any()  # every copy finished its first episode
    return 1.0 - failed.mean(), ret.mean()


def test_upright_equilibrium_is_the_origin() -> None:
    env = CartPoleEnv()
    for model in (env.nominal_model, env.true_model):
        zero_x, zero_u = torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, 1)
        assert torch.equal(model.f(zero_x, zero_u.double()), zero_x)
        assert torch.equal(model.h(zero_x), torch.zeros(1, 2, dtype=torch.float64))
    lin = linearize(env.nominal_model, np.zeros(4), np.zeros(1))
    assert torch.equal(lin.x0_mean, torch.zeros(4, dtype=torch.float64))
    # deviation coordinates are the env's coordinates: C picks (x, θ)
    torch.testing.assert_close(lin.C, torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]).double())


def test_lqg_on_the_linearized_nominal_model_keeps_the_pole_up() -> None:
    success, mean_return = run_lqg(None)
    assert success >= 0.95
    assert -10.0 < mean_return < 0.0
    oracle_success, oracle_return = run_lqg(None, design="true")
    assert oracle_success == 1.0
    assert oracle_return > mean_return  # the mismatch costs something


def test_lqg_on_the_nominal_model_degrades_at_the_larger_mismatch() -> None:
    default_success, default_return = run_lqg(None)
    success, mean_return = run_lqg(CARTPOLE_LARGE_MISMATCH)
    assert success <= 0.5 and default_success - success >= 0.45
    assert mean_return < 10 * default_return
    # not an impossible task: LQG designed on the true model still balances
    oracle_success, oracle_return = run_lqg(CARTPOLE_LARGE_MISMATCH, design="true")
    assert oracle_success == 1.0
    assert oracle_return > -10.0
