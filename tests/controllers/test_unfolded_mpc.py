"""The unfolded MPC solver: convergence to the exact QP's plan (QP solver and SciPy's bounded
least squares) as K grows, the closed loop, gradients by central differences, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import lsq_linear

from kalmannet_ctrl.controllers import MPC, QP, Unfolded
from kalmannet_ctrl.controllers.mpc import UnfoldedSetup
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.models import NonlinearModel
from kalmannet_ctrl.training import closed_loop_cost

from ..training.gradients import assert_gradient_matches_central_differences
from .systems import plant, plant_cost

H = 8
BOUNDS = (-0.4, 0.4)


def states(B: int = 16) -> torch.Tensor:
    return 3 * torch.randn(B, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_plan_converges_to_the_exact_qp_plan_as_k_grows() -> None:
    model, cost = plant(), plant_cost()
    x = states()
    exact = MPC(model, cost, H, input_bounds=BOUNDS, solver=QP()).solve(x).plan
    assert bool((exact.abs() == 0.4).any()) and bool((exact.abs() < 0.4).any())
    errors = []
    for K in (3, 10, 30, 100, 300, 1000):
        plan = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=K)).solve(x).plan
        assert bool((plan.abs() <= 0.4).all())
        errors.append(float((plan - exact).abs().max()))
    assert all(b < a for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-8


def test_a_converged_plan_is_the_bounded_least_squares_solution() -> None:
    """SciPy's lsq_linear on ‖LᵀU + L⁻¹Gx‖² (the same objective as ½U'HU + U'Gx up to a
    constant, H = LLᵀ), an independent solver of the same box-QP."""
    model, cost = plant(), plant_cost()
    mpc = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=1500))
    x = states(3)
    plan = mpc.solve(x).plan.reshape(3, -1).numpy()
    hess, G = mpc.setup.exact.hessian.numpy(), mpc.setup.exact.G.numpy()
    L = np.linalg.cholesky(hess)
    for b in range(3):
        rhs = -np.linalg.solve(L, G @ x[b].numpy())
        ref = lsq_linear(L.T, rhs, bounds=BOUNDS, tol=1e-14, method="bvls").x
        np.testing.assert_allclose(plan[b], ref, atol=1e-8)


def test_without_bounds_it_converges_to_the_unconstrained_plan() -> None:
    model, cost = plant(), plant_cost()
    x = states(4)
    exact = MPC(model, cost, H, solver=QP()).solve(x).plan
    plan = MPC(model, cost, H, solver=Unfolded(K=2000)).solve(x).plan
    torch.testing.assert_close(plan, exact, rtol=0, atol=1e-8)


def test_closed_loop_predict_and_fixed_work_per_step() -> None:
    model, cost = plant(x0_cov=np.eye(2)), plant_cost()
    mpc = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=5))
    assert isinstance(mpc.setup, UnfoldedSetup) and mpc.setup.differentiable
    assert mpc.solve(states(2)).iterations == 5
    obs = np.array([[0.3], [-2.0]], dtype=np.float32)
    action, state = mpc.predict(obs)
    assert action.shape == (2, 1) and np.all(np.abs(action) <= 0.4)
    action, state = mpc.predict(obs, state)
    assert state.plan.shape == (2, H, 1)
    assert not mpc.inference_safe  # predict's caches stay usable for training afterwards
    gen = torch.Generator().manual_seed(0)
    noise = [torch.randn(2, *s, generator=gen, dtype=torch.float64) for s in ((2,), (5, 2), (5, 1))]
    closed_loop_cost(mpc, model, *noise).mean().backward()
    assert mpc.setup.log_steps.grad is not None
    names = {n for n, p in mpc.setup.named_parameters()}
    assert names == {"log_steps"}
    learned = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=5, learn_qp=True))
    assert {n for n, _ in learned.setup.named_parameters()} == {"log_steps", "hessian_factor", "G"}
    torch.testing.assert_close(learned.setup.hessian(), learned.setup.exact.hessian)


@pytest.mark.parametrize("learn_qp", [False, True])
def test_closed_loop_cost_gradient_matches_central_differences(learn_qp: bool) -> None:
    """Through the Kalman filter, K = 4 iterations per step (bounds active at some) and 10
    closed-loop steps; every entry of the step sizes (and of the QP's data)."""
    model, cost = plant(), plant_cost()
    mpc = MPC(model, cost, 4, input_bounds=(-1.0, 1.0), solver=Unfolded(K=4, learn_qp=learn_qp))
    with torch.no_grad():
        mpc.setup.log_steps.copy_(torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    x0 = 2 * torch.randn(3, 2, generator=gen, dtype=torch.float64)
    w = 0.3 * torch.randn(3, 10, 2, generator=gen, dtype=torch.float64)
    v = 0.7 * torch.randn(3, 10, 1, generator=gen, dtype=torch.float64)
    params = list(mpc.setup.parameters())
    assert len(params) == (3 if learn_qp else 1)
    assert_gradient_matches_central_differences(
        lambda: closed_loop_cost(mpc, model, x0, w, v).mean(), params, rel=1e-5, abs=1e-8
    )


def test_bad_settings_and_problems_raise_typed_errors() -> None:
    with pytest.raises(ParameterError, match="K"):
        Unfolded(K=0)
    with pytest.raises(TypeError, match="K"):
        Unfolded(K=2.5)
    with pytest.raises(TypeError, match="learn_qp"):
        Unfolded(K=3, learn_qp=1)
    model, cost = plant(), plant_cost()
    nonlinear = NonlinearModel(
        model.f,
        model.h,
        n_x=2,
        n_y=1,
        n_u=1,
        process_cov=model.process_cov,
        measurement_cov=[[1.0]],
    )
    with pytest.raises(TypeError, match="model"):
        MPC(nonlinear, cost, H, solver=Unfolded(K=3))
    with pytest.raises(ValueError, match="cost_state"):
        MPC(model, cost, H, solver=Unfolded(K=3), cost_state=lambda x: x)


def test_the_name_unfolded_stands_for_five_iterations() -> None:
    model, cost = plant(), plant_cost()
    named = MPC(model, cost, H, input_bounds=BOUNDS, solver="unfolded")
    assert isinstance(named.solver, Unfolded) and named.solver.K == 5
    assert not named.solver.learn_qp
    x = states()
    five = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=5)).solve(x).plan
    four = MPC(model, cost, H, input_bounds=BOUNDS, solver=Unfolded(K=4)).solve(x).plan
    assert torch.equal(named.solve(x).plan, five)
    assert not torch.allclose(five, four)
