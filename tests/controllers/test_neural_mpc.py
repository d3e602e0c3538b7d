"""Neural MPC: the untrained residual is the nominal MPC, an exact residual is the oracle MPC,
and the training rounds (collect, fit, redeploy) are wired and seeded."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LTV, MPC, MPPI, QP, NeuralMPC
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.estimators import ExtendedKalmanFilter
from kalmannet_ctrl.models import ResidualModel, pendulum
from kalmannet_ctrl.training import train_neural_mpc

LINEAR = "kalmannet_ctrl/LinearSystem-v0"


def linear_problem():
    env = gym.make(LINEAR).unwrapped
    bounds = (env.action_space.low, env.action_space.high)
    return env.nominal_model, env.true_model, env.cost, bounds


def run(controller, y: np.ndarray) -> np.ndarray:
    """Actions of ``controller`` on a batch of measurement sequences y (T, B, n_y)."""
    state, actions = None, []
    for t in range(y.shape[0]):
        action, state = controller.predict(y[t], state, episode_start=np.full(y.shape[1], t == 0))
        actions.append(action)
    return np.stack(actions)


def measurements(model, T: int, B: int, seed: int = 0) -> np.ndarray:
    traj = model.simulate(T, B, generator=torch.Generator().manual_seed(seed))
    return traj.y.transpose(0, 1).numpy().astype(np.float32)


@pytest.mark.parametrize("bound", [None, 0.3])
def test_untrained_residual_is_the_nominal_mpc(bound) -> None:
    nominal, true, cost, bounds = linear_problem()
    if bound is not None:
        bounds = (-bound, bound)  # active constraints
    neural = NeuralMPC(ResidualModel(nominal, hidden=(8,)), cost, 15, input_bounds=bounds)
    plain = MPC(nominal, cost, 15, input_bounds=bounds)
    assert isinstance(neural.solver, LTV) and isinstance(plain.solver, QP)
    y = measurements(true, 30, 5)
    np.testing.assert_allclose(run(neural, y), run(plain, y), rtol=0, atol=1e-6)


def test_an_exact_residual_gives_the_oracle_mpc() -> None:
    """A linear path set to the mismatch (A_t − A_n, B_t − B_n) makes f̂ the true model: the
    actions (and the estimates of the default EKF on f̂) are the true model's MPC's."""
    nominal, true, cost, bounds = linear_problem()
    model = ResidualModel(nominal, hidden=())
    with torch.no_grad():
        model.linear_path.weight.copy_(torch.cat([true.A - nominal.A, true.B - nominal.B], 1))
        model.linear_path.bias.zero_()
    neural = NeuralMPC(model, cost, 20, input_bounds=bounds)
    oracle = MPC(true, cost, 20, input_bounds=bounds)
    torch.testing.assert_close(neural.terminal_weight, oracle.terminal_weight)
    y = measurements(true, 40, 4, seed=1)
    np.testing.assert_allclose(run(neural, y), run(oracle, y), rtol=0, atol=1e-5)
    nominal_actions = run(MPC(nominal, cost, 20, input_bounds=bounds), y)
    assert np.abs(nominal_actions - run(oracle, y)).max() > 1e-2  # the mismatch matters


def test_terminal_weight_ignores_a_small_offset_at_the_origin() -> None:
    model = ResidualModel(pendulum(), hidden=())
    with torch.no_grad():
        model.linear_path.bias.fill_(1e-3)  # f̂(0, 0) ≠ 0: MPC's "lqr" would refuse it
    env_cost = gym.make("kalmannet_ctrl/Pendulum-v0").unwrapped.cost
    neural = NeuralMPC(model, env_cost, 10, input_bounds=(-2.0, 2.0), solver=MPPI(seed=0))
    assert torch.all(torch.linalg.eigvalsh(neural.terminal_weight) > 0)
    assert isinstance(neural.estimator, ExtendedKalmanFilter)
    assert neural.residual is model


def test_model_must_be_a_residual_model() -> None:
    nominal, _, cost, _ = linear_problem()
    with pytest.raises(TypeError, match="model: expected a ResidualModel"):
        NeuralMPC(nominal, cost, 10)


def test_training_rounds_are_wired_and_seeded() -> None:
    kwargs = dict(rounds=2, episodes=3, steps=20, fit_steps=5, hidden=(8,), progress=False)
    ctrl, info = train_neural_mpc(LINEAR, horizon=10, seed=0, **kwargs)
    assert isinstance(ctrl, NeuralMPC)
    assert info["env_steps"] == 2 * 3 * 20 and len(info["rounds"]) == 2
    assert all(r["transitions"] == 60 for r in info["rounds"])
    # round 0 runs the nominal model: its one-step error on fresh data is the nominal one
    first = info["rounds"][0]["one_step_mse"]
    assert first["learned"] == pytest.approx(first["nominal"], rel=1e-12)
    # the fit moved the residual away from zero, and the same seed gives the same weights
    weights = dict(ctrl.residual.named_parameters())
    assert any(float(w.detach().abs().max()) > 0 for w in weights.values())
    again, _ = train_neural_mpc(LINEAR, horizon=10, seed=0, **kwargs)
    other, _ = train_neural_mpc(LINEAR, horizon=10, seed=1, **kwargs)
    same = dict(again.residual.named_parameters())
    diff = dict(other.residual.named_parameters())
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert any(not torch.equal(weights[k], diff[k]) for k in weights)


def test_training_from_estimated_states_needs_no_privileged_labels() -> None:
    ctrl, info = train_neural_mpc(
        LINEAR,
        horizon=5,
        rounds=1,
        episodes=2,
        steps=15,
        fit_steps=3,
        hidden=(4,),
        states="estimated",
        progress=False,
    )
    assert info["env_steps"] == 30 and isinstance(ctrl, NeuralMPC)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"states": "oracle"}, "states"), ({"rounds": 0}, "rounds"), ({"fit_steps": 0}, "fit_steps")],
)
def test_bad_training_arguments(kwargs, match) -> None:
    with pytest.raises(ParameterError, match=match):
        train_neural_mpc(LINEAR, progress=False, **kwargs)


def test_prediction_error_cov_of_the_true_model_is_its_process_noise() -> None:
    """With an exact residual, the one-step errors are the process noise: their covariance
    estimates process_cov. 4000 transitions: the relative standard error of each variance is
    sqrt(2 / 4000) ≈ 2 %, so a 10 % tolerance leaves five standard errors."""
    from kalmannet_ctrl.training import Transitions, prediction_error_cov

    nominal, true, _, _ = linear_problem()
    model = ResidualModel(nominal, hidden=())
    with torch.no_grad():
        model.linear_path.weight.copy_(torch.cat([true.A - nominal.A, true.B - nominal.B], 1))
    g = torch.Generator().manual_seed(0)
    traj = true.simulate(
        40, 100, u=torch.randn(100, 40, 1, dtype=torch.float64, generator=g), generator=g
    )
    data = Transitions.from_trajectory(traj)
    cov = prediction_error_cov(model, data)
    torch.testing.assert_close(cov, true.process_cov, rtol=0.1, atol=0.1 * 0.01)
    # the nominal model's errors also hold the model mismatch: a larger covariance (here by
    # about 20 %, some ten standard errors of the trace)
    wrong = prediction_error_cov(
        ResidualModel(nominal, hidden=()), Transitions.from_trajectory(traj)
    )
    assert torch.trace(wrong) > 1.1 * torch.trace(true.process_cov)


@pytest.mark.parametrize("learn", [True, False])
def test_the_deployed_model_carries_the_learned_process_covariance(learn: bool) -> None:
    ctrl, _ = train_neural_mpc(
        LINEAR,
        horizon=5,
        rounds=1,
        episodes=3,
        steps=20,
        fit_steps=3,
        hidden=(4,),
        learn_process_cov=learn,
        progress=False,
    )
    cov = ctrl.residual.process_cov
    assert torch.allclose(cov, cov.mT) and torch.linalg.eigvalsh(cov).min() > -1e-12
    env_cov = gym.make(LINEAR).unwrapped.nominal_model.process_cov
    if learn:
        assert not torch.allclose(cov, env_cov)
        assert ctrl.estimator.model is ctrl.residual  # the EKF runs on the deployed model
    else:
        torch.testing.assert_close(cov, env_cov)


def test_stable_baselines3_evaluate_policy_runs_neural_mpc() -> None:
    """Through SB3's evaluate_policy, on the same seeded episodes, the untrained neural MPC
    returns what the nominal MPC returns."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.monitor import Monitor

    nominal, _, cost, bounds = linear_problem()
    returns = []
    for ctrl in (
        NeuralMPC(ResidualModel(nominal, hidden=(4,)), cost, 10, input_bounds=bounds),
        MPC(nominal, cost, 10, input_bounds=bounds),
    ):
        env = Monitor(gym.make(LINEAR, max_episode_steps=30))
        env.reset(seed=0)
        episode_returns, lengths = evaluate_policy(
            ctrl, env, n_eval_episodes=2, return_episode_rewards=True
        )
        assert lengths == [30, 30]
        returns.append(episode_returns)
    np.testing.assert_allclose(returns[0], returns[1], rtol=1e-5)


def test_training_translates_flat_solver_settings_into_solver_objects() -> None:
    """``mpc_kwargs`` may give the former flat MPC keywords: they configure the named solver
    (LTV without a name), and an MPPI solver without its own noise source gets the seed."""
    kwargs = dict(horizon=3, rounds=1, episodes=1, steps=4, fit_steps=1, hidden=(2,))

    def train(mpc_kwargs, seed=0):
        return train_neural_mpc(LINEAR, seed=seed, mpc_kwargs=mpc_kwargs, progress=False, **kwargs)

    flat, _ = train({"solver": "mppi", "samples": 8, "temperature": 0.5})
    assert isinstance(flat.solver, MPPI)
    assert flat.solver.settings() == MPPI(samples=8, temperature=0.5, seed=0).settings()
    unseeded, _ = train({"solver": MPPI(samples=8)}, seed=3)
    assert unseeded.solver.seed == 3
    seeded, _ = train({"solver": MPPI(samples=8, seed=5)}, seed=3)
    assert seeded.solver.seed == 5
    ltv, _ = train({"line_search": True, "iterations": 2})
    assert isinstance(ltv.solver, LTV) and ltv.solver.line_search and ltv.solver.iterations == 2
    default, _ = train(None)
    assert isinstance(default.solver, LTV) and default.solver.settings() == LTV().settings()
    # the same MPPI settings, flat or as an object, give the same controller
    obj, _ = train({"solver": MPPI(samples=8, temperature=0.5)})
    y = measurements(gym.make(LINEAR).unwrapped.true_model, 5, 2)
    np.testing.assert_array_equal(run(flat, y), run(obj, y))


@pytest.mark.parametrize(
    ("mpc_kwargs", "error", "match"),
    [
        ({"solver": MPPI(), "samples": 8}, TypeError, r"mpc_kwargs: give the solver's settings"),
        ({"samples": 8}, ParameterError, r"\['samples'\] are not settings of LTV"),
        ({"solver": "ltv", "temperature": 1.0}, ParameterError, "not settings of LTV"),
        ({"solver": "ipopt", "samples": 8}, ParameterError, "mpc_kwargs: expected solver"),
    ],
)
def test_bad_solver_settings_in_mpc_kwargs(mpc_kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        train_neural_mpc(LINEAR, mpc_kwargs=mpc_kwargs, progress=False)
