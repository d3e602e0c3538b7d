"""tune_policy: it lowers the closed-loop cost (a paired comparison on fixed noise), of a
ConvexPolicy and of an unfolded MPC; it stops on non-finite values with the best parameters;
errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQG, MPC, ConvexPolicy, Unfolded
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel
from kalmannet_ctrl.training import closed_loop_cost, tune_policy

from ..controllers.systems import PLANT_A, PLANT_B, PLANT_C, PLANT_V, PLANT_W, plant_cost

# Paired evaluation: every policy runs on the same EVAL episodes of fixed noise (common random
# numbers), so the noise common to both cancels in the per-episode differences. With 2000
# episodes the standard error of their mean is small, and an improvement of more than five
# standard errors (required below) would occur by chance with probability below 1e-6.
EVAL = 2000
T_EVAL = 40


def plant_model() -> LinearGaussianModel:
    return LinearGaussianModel(PLANT_A, PLANT_B, PLANT_C, PLANT_W, PLANT_V, x0_cov=np.eye(2))


def full_state_simulator(model: LinearGaussianModel) -> NonlinearModel:
    return NonlinearModel(
        model.f,
        lambda x: x,
        n_x=2,
        n_y=2,
        n_u=1,
        process_cov=model.process_cov,
        measurement_cov=np.eye(2),
        x0_cov=model.x0_cov,
    )


def eval_noise(model: LinearGaussianModel, n_y: int, measured: bool):
    gen = torch.Generator().manual_seed(1234)
    x0 = torch.randn(EVAL, 2, generator=gen, dtype=torch.float64)
    w = (
        torch.randn(EVAL, T_EVAL, 2, generator=gen, dtype=torch.float64)
        @ torch.linalg.cholesky(model.process_cov).mT
    )
    v = torch.randn(EVAL, T_EVAL, n_y, generator=gen, dtype=torch.float64)
    v = v * math.sqrt(float(model.measurement_cov[0, 0])) if measured else 0 * v
    return x0, w, v


def episode_costs(policy, sim, noise) -> torch.Tensor:
    with torch.no_grad():
        return closed_loop_cost(policy, sim, *noise)


def assert_lower(before: torch.Tensor, after: torch.Tensor) -> None:
    diff = before - after
    se = float(diff.std()) / math.sqrt(diff.numel())
    assert float(diff.mean()) > 5 * se > 0


def test_tuning_a_convex_policy_lowers_its_closed_loop_cost() -> None:
    model = plant_model()
    policy = ConvexPolicy(model, plant_cost(), input_bounds=(-0.3, 0.3), full_state=True)
    sim = full_state_simulator(model)
    noise = eval_noise(model, 2, measured=False)
    before = episode_costs(policy, sim, noise)
    result = tune_policy(
        policy,
        model,
        steps=15,
        horizon=T_EVAL,
        episodes=256,
        batch_size=32,
        lr=0.05,
        val_episodes=64,
        val_every=5,
        seed=0,
        progress=False,
    )
    after = episode_costs(policy, sim, noise)
    assert result.nonfinite_step is None and result.best_step > 0
    assert_lower(before, after)


def test_tuning_an_unfolded_mpc_with_the_kalman_filter_lowers_its_closed_loop_cost() -> None:
    model = plant_model()
    mpc = MPC(model, plant_cost(), 6, input_bounds=(-0.5, 0.5), solver=Unfolded(K=2))
    with torch.no_grad():
        mpc.setup.log_steps.fill_(-2.0)  # steps far too short: a poor plan at K = 2
    noise = eval_noise(model, 1, measured=True)
    before = episode_costs(mpc, model, noise)
    result = tune_policy(
        mpc,
        model,
        steps=15,
        horizon=T_EVAL,
        episodes=256,
        batch_size=32,
        lr=0.1,
        val_episodes=64,
        val_every=5,
        seed=0,
        progress=False,
    )
    after = episode_costs(mpc, model, noise)
    assert result.best_step > 0
    assert bool((mpc.setup.log_steps > -2.0).all())
    assert_lower(before, after)


def test_a_non_finite_loss_stops_training_with_the_best_parameters_and_a_warning() -> None:
    model = plant_model()
    policy = ConvexPolicy(model, plant_cost(), input_bounds=(-0.3, 0.3), full_state=True)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    # Adam's first step moves every parameter by lr: S ~ 1e300 overflows the QP's data
    with pytest.warns(RuntimeWarning, match="non-finite at step 1"):
        result = tune_policy(
            policy,
            model,
            steps=5,
            horizon=10,
            episodes=8,
            batch_size=4,
            lr=1e300,
            val_episodes=4,
            val_every=1,
            progress=False,
        )
    assert result.nonfinite_step == 1 and result.best_step == 0
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(v, start[k], rtol=0, atol=0)


def test_bad_input_raises_typed_errors() -> None:
    model = plant_model()
    cost = plant_cost()
    policy = ConvexPolicy(model, cost)
    with pytest.raises(TypeError, match="ConvexPolicy or an MPC"):
        tune_policy(LQG(model, cost), model)
    with pytest.raises(TypeError, match="no trainable parameters"):
        tune_policy(ConvexPolicy(model, cost, trainable=()), model)
    with pytest.raises(TypeError, match="Unfolded"):
        tune_policy(MPC(model, cost, 3), model)
    other = LinearGaussianModel(np.eye(3), np.ones((3, 1)), np.ones((1, 3)), np.eye(3), [[1.0]])
    with pytest.raises(DimensionError, match="n_x = 3"):
        tune_policy(policy, other)
    with pytest.raises(TypeError, match="SystemModel"):
        tune_policy(policy, "model")
    with pytest.raises(ParameterError, match="lr_schedule"):
        tune_policy(policy, model, lr_schedule="step")
    with pytest.raises(ParameterError, match="steps"):
        tune_policy(policy, model, steps=0)
    with pytest.raises(ParameterError, match="lr"):
        tune_policy(policy, model, lr=-1.0)
