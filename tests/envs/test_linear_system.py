"""LinearSystem-v0: the mismatch it documents, and LQG against the analytic average cost."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, analytic_average_cost
from kalmannet_ctrl.envs import LinearSystemEnv, LinearSystemVectorEnv, PartiallyKnownVectorEnv
from kalmannet_ctrl.envs.linear_system import default_linear_system
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost, rotation_matrix


def test_default_mismatch_builds_the_documented_true_model() -> None:
    env = LinearSystemEnv()
    nominal, true = env.nominal_model, env.true_model
    R = rotation_matrix(2, 2.0, dtype=torch.float64)
    torch.testing.assert_close(true.A, R @ nominal.A)
    torch.testing.assert_close(true.B, 1.3 * (R @ nominal.B))
    torch.testing.assert_close(true.C, nominal.C)
    torch.testing.assert_close(true.process_cov, nominal.process_cov)
    assert env.mismatch == {
        "rotation_A_deg": 2.0,
        "rotation_C_deg": 0.0,
        "input_scale": 1.3,
        "process_noise_scale": 1.0,
        "measurement_noise_scale": 1.0,
    }
    # the nominal model is the documented damped oscillator
    torch.testing.assert_close(nominal.A, default_linear_system().A)


def test_every_mismatch_key_and_reset_options() -> None:
    env = LinearSystemEnv(
        mismatch={
            "rotation_A_deg": 0.0,
            "input_scale": 1.0,
            "rotation_C_deg": 30.0,
            "process_noise_scale": 2.0,
            "measurement_noise_scale": 0.5,
        }
    )
    nom, true = env.nominal_model, env.true_model
    torch.testing.assert_close(true.A, nom.A)
    torch.testing.assert_close(true.C, nom.C @ rotation_matrix(2, 30.0, dtype=torch.float64))
    torch.testing.assert_close(true.process_cov, 2.0 * nom.process_cov)
    torch.testing.assert_close(true.measurement_cov, 0.5 * nom.measurement_cov)
    env.reset(seed=0, options={"mismatch": {"rotation_A_deg": 0.0, "input_scale": 1.0}})
    for name in ("A", "B", "C", "process_cov", "measurement_cov"):
        torch.testing.assert_close(getattr(env.true_model, name), getattr(nom, name))


def test_custom_model_and_cost() -> None:
    model = LinearGaussianModel(
        [[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 0.9]],
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        0.01 * np.eye(3),
        0.1 * np.eye(2),
    )
    env = LinearSystemEnv(model=model, action_bound=3.0)
    obs, info = env.reset(seed=1)
    assert obs.shape == (2,) and info["state"].shape == (3,)
    assert env.action_space.shape == (2,) and float(env.action_space.high[0]) == 3.0
    _, reward, *_ = env.step(np.array([10.0, -10.0], dtype=np.float32))
    x0 = info["state"]
    u = np.array([3.0, -3.0])  # clipped
    assert reward == pytest.approx(-(x0 @ x0 + 0.1 * u @ u), rel=1e-12)


def test_constructor_errors() -> None:
    with pytest.raises(TypeError, match="model: expected a LinearGaussianModel"):
        LinearSystemEnv(model="oscillator")  # type: ignore[arg-type]
    with pytest.raises(DimensionError, match="cost: expected Q"):
        LinearSystemEnv(cost=QuadraticCost(np.eye(3), np.eye(1)))
    with pytest.raises(ValueError, match="action_bound"):
        LinearSystemEnv(action_bound=0.0)
    with pytest.raises(ParameterError, match=r"mismatch\['input_scale'\]"):
        LinearSystemEnv(mismatch={"input_scale": -1.0})
    with pytest.raises(ParameterError, match="mismatch: unknown key"):
        LinearSystemEnv(mismatch={"rotation": 3.0})
    autonomous = LinearGaussianModel([[0.5]], None, [[1.0]], [[1.0]], [[1.0]])
    with pytest.raises(DimensionError, match="model: expected at least one input"):
        LinearSystemEnv(model=autonomous)


def run_lqg(
    controller: LQG, venv: LinearSystemVectorEnv, steps: int, seed: int
) -> tuple[np.ndarray, float]:
    """Stage costs (episodes, steps) of one episode per copy and the fraction of clipped actions."""
    obs, _ = venv.reset(seed=seed)
    state, start = None, np.ones(venv.num_envs, dtype=bool)
    costs = np.empty((venv.num_envs, steps))
    clipped = 0
    bound = float(venv.single_action_space.high[0])
    for t in range(steps):
        action, state = controller.predict(obs, state, start)
        clipped += int((np.abs(action) >= bound).sum())
        obs, reward, terminated, truncated, _ = venv.step(action)
        assert not terminated.any()
        assert truncated.all() == (t == steps - 1)
        costs[:, t] = -reward
        start = np.zeros(venv.num_envs, dtype=bool)
    return costs, clipped / (venv.num_envs * steps)


def test_lqg_reaches_the_analytic_average_cost() -> None:
    """Over 400 seeded 200-step episodes, LQG's cost matches analytic_average_cost.

    The analytic cost is the stationary one, so each episode's cost is averaged over steps
    100..199, after the transient from x_0 ~ N(0, I) and the filter's start has died out (the
    closed loops' spectral radii are below 0.96, so 0.96^100 < 2e-2 of a transient that is
    itself a fraction of the cost). Episodes are independent, so the standard error is the
    standard deviation of the per-episode averages over sqrt(400); the bound is 4 standard
    errors. The nominal controller costs more than the oracle by well over 5 standard errors.
    """
    venv = gym.make_vec("kalmannet_ctrl/LinearSystem-v0", num_envs=400)
    env = venv.unwrapped
    true, nominal, cost = env.true_model, env.nominal_model, env.cost
    results = {}
    for name, design in (("oracle", true), ("nominal", nominal)):
        controller = LQG(
            design, cost, input_bounds=(env.single_action_space.low, env.single_action_space.high)
        )
        costs, clipped = run_lqg(controller, env, 200, seed=7)
        per_episode = costs[:, 100:].mean(1)
        mean, se = per_episode.mean(), per_episode.std(ddof=1) / np.sqrt(len(per_episode))
        analytic = analytic_average_cost(true, controller, cost)
        results[name] = (mean, se, analytic)
        assert clipped < 1e-3  # the analytic cost assumes an unsaturated loop
        assert abs(mean - analytic) <= 4 * se, (name, mean, se, analytic)
    (oracle_mean, oracle_se, oracle_cost), (nominal_mean, nominal_se, nominal_cost) = (
        results["oracle"],
        results["nominal"],
    )
    assert nominal_cost > 1.3 * oracle_cost
    assert nominal_mean - oracle_mean > 5 * np.hypot(oracle_se, nominal_se)


def test_a_vector_env_without_its_env_class_says_how_to_declare_it():
    class Undeclared(PartiallyKnownVectorEnv):
        pass

    with pytest.raises(TypeError, match="env_class=MyEnv"):
        Undeclared(2)
