"""ConvexPolicy against independent references: SciPy's DARE (LQR), MPC and SciPy's L-BFGS-B
(the H-step form), central finite differences (gradients of the closed-loop cost, of the QP
layer); convexity of any parameter values; the controller protocol; errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

from kalmannet_ctrl.controllers import MPC, Controller, ConvexPolicy, ConvexPolicyState
from kalmannet_ctrl.controllers.convex_policy import condense, solve_box_qp_layer
from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import NonlinearModel, QuadraticCost
from kalmannet_ctrl.training import closed_loop_cost

from ..training.gradients import assert_gradient_matches_central_differences
from .systems import plant, plant_cost, random_system


def scipy_lqr_gain(model, cost) -> np.ndarray:
    A, B = model.A.numpy(), model.B.numpy()
    Q, R = cost.Q.numpy(), cost.R.numpy()
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


@pytest.mark.parametrize("bounds", [None, (-1e6, 1e6)])
@pytest.mark.parametrize("B", [1, 10])
def test_untrained_policy_equals_lqr_where_bounds_are_inactive(bounds, B) -> None:
    model, cost = random_system(4, 2, 2, seed=3)
    policy = ConvexPolicy(model, cost, input_bounds=bounds, full_state=True)
    x = torch.randn(B, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    K = scipy_lqr_gain(model, cost)
    u = policy.action(x).detach().numpy()
    np.testing.assert_allclose(u, -x.numpy() @ K.T, rtol=1e-9, atol=1e-11)


def test_untrained_policy_saturates_where_lqr_exceeds_the_bound() -> None:
    # one input: the QP's minimizer is the LQR input clipped (a convex 1-D problem)
    model, cost = plant(), plant_cost()
    policy = ConvexPolicy(model, cost, input_bounds=(-0.2, 0.2), full_state=True)
    x = torch.tensor([[0.05, 0.0], [3.0, -1.0], [-3.0, 2.0]], dtype=torch.float64)
    K = scipy_lqr_gain(model, cost)
    expected = np.clip(-x.numpy() @ K.T, -0.2, 0.2)
    np.testing.assert_allclose(policy.action(x).detach().numpy(), expected, rtol=1e-10)
    assert np.abs(expected).max() == 0.2 and np.abs(expected).min() < 0.2


@pytest.mark.parametrize("horizon", [1, 2, 6])
def test_h_step_form_with_the_lqr_terminal_cost_equals_mpc(horizon: int) -> None:
    model, cost = random_system(3, 2, 1, seed=5)
    bounds = (-0.3, np.array([0.3, 0.5]))
    policy = ConvexPolicy(model, cost, horizon=horizon, input_bounds=bounds, full_state=True)
    mpc = MPC(model, cost, horizon, input_bounds=bounds, terminal_cost="lqr")
    x = 3 * torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plan = policy.plan(x).detach()
    ref = mpc.solve(x).plan
    assert bool(((plan.abs() - 0.3).abs() < 1e-12).any())  # some bounds are active
    torch.testing.assert_close(plan, ref, rtol=0, atol=1e-10)


def test_h_step_plan_solves_the_rolled_out_problem() -> None:
    """Against L-BFGS-B on the objective written by rolling the model out step by step (no
    condensing), with trained-looking parameters (S, q, F, R, Â, B̂ all perturbed)."""
    model, cost = random_system(3, 2, 1, seed=7)
    H = 4
    policy = ConvexPolicy(model, cost, horizon=H, input_bounds=(-0.4, 0.4), full_state=True)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x0 = np.array([2.0, -1.0, 1.5])
    A, Bm = policy.A.detach().numpy(), policy.B.detach().numpy()
    S, q, F = (t.detach().numpy() for t in (policy.S, policy.q, policy.Q_factor))
    R = policy.input_weight.detach().numpy()

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        U = torch.tensor(flat.reshape(H, 2), requires_grad=True)
        x, J = torch.tensor(x0), torch.zeros((), dtype=torch.float64)
        for k in range(H):
            J = J + U[k] @ torch.tensor(R) @ U[k]
            x = torch.tensor(A) @ x + torch.tensor(Bm) @ U[k]
            if k < H - 1:
                J = J + (torch.tensor(F) @ x).square().sum()
        J = J + (torch.tensor(S) @ x).square().sum() + torch.tensor(q) @ x
        J.backward()
        return float(J.detach()), U.grad.numpy().ravel()

    res = scipy.optimize.minimize(
        objective,
        np.zeros(2 * H),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-0.4, 0.4)] * (2 * H),
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000},
    )
    plan = policy.plan(torch.tensor(x0)[None]).detach().numpy().ravel()
    np.testing.assert_allclose(plan, res.x, atol=1e-6)
    assert np.isclose(np.abs(plan), 0.4).any() and not np.isclose(np.abs(plan), 0.4).all()


def test_condense_matches_a_step_by_step_rollout() -> None:
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    B = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    Phi, Gamma = condense(A, B, 5)
    x0 = torch.randn(3, generator=gen, dtype=torch.float64)
    U = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    x, xs = x0, []
    for k in range(5):
        x = A @ x + B @ U[k]
        xs.append(x)
    torch.testing.assert_close(Phi @ x0 + Gamma @ U.reshape(-1), torch.cat(xs))


def test_qp_layer_gradient_matches_finite_differences_with_active_and_free_variables() -> None:
    gen = torch.Generator().manual_seed(4)
    N, B = 4, 6
    M = torch.randn(N, N, generator=gen, dtype=torch.float64)
    H0 = M @ M.mT + N * torch.eye(N, dtype=torch.float64)
    g0 = 3 * torch.randn(B, N, generator=gen, dtype=torch.float64)
    lo = torch.full((N,), -0.5, dtype=torch.float64)
    hi = torch.tensor([0.5, 0.5, 0.5, torch.inf], dtype=torch.float64)
    z = solve_box_qp_layer(H0, g0, lo, hi)
    at_bound = (z == lo) | (z == hi)
    assert bool(at_bound.any()) and bool((~at_bound).any())
    H = H0.clone().requires_grad_(True)
    g = g0.clone().requires_grad_(True)
    weights = torch.randn(B, N, generator=gen, dtype=torch.float64)

    def loss() -> torch.Tensor:
        return (solve_box_qp_layer(0.5 * (H + H.mT), g, lo, hi) * weights).sum()

    assert_gradient_matches_central_differences(loss, [H, g])


def closed_loop_setup(bounded: bool, full_state: bool):
    model, cost = plant(), plant_cost()
    bounds = (-1.0, 1.0) if bounded else None
    policy = ConvexPolicy(
        model,
        cost,
        input_bounds=bounds,
        full_state=full_state,
        trainable=("S", "q", "A", "B", "R", "Q"),
        horizon=2,
    )
    gen = torch.Generator().manual_seed(0)
    B, T = 4, 12
    x0 = 2.0 * torch.randn(B, 2, generator=gen, dtype=torch.float64)
    w = 0.3 * torch.randn(B, T, 2, generator=gen, dtype=torch.float64)
    v = (0.0 if full_state else 0.7) * torch.randn(
        B, T, 2 if full_state else 1, generator=gen, dtype=torch.float64
    )
    sim = model
    if full_state:
        sim = NonlinearModel(
            model.f,
            lambda x: x,
            n_x=2,
            n_y=2,
            n_u=1,
            process_cov=model.process_cov,
            measurement_cov=np.eye(2),
        )
    with torch.no_grad():  # away from the DARE start, so that q and the rest matter
        policy.q.add_(torch.tensor([0.5, -0.3], dtype=torch.float64))
    return policy, sim, (x0, w, v)


@pytest.mark.parametrize("full_state", [True, False])
@pytest.mark.parametrize("bounded", [True, False])
def test_closed_loop_cost_gradient_matches_central_differences(bounded, full_state) -> None:
    """d(closed-loop cost)/d(S, q, Â, B̂, R, F) of a 2-step policy over 12 steps, with the
    Kalman filter in the loop or on the full state, bounds active at some steps or absent."""
    policy, sim, noise = closed_loop_setup(bounded, full_state)

    def loss() -> torch.Tensor:
        return closed_loop_cost(policy, sim, *noise).mean()

    if bounded:  # the bounds are active at some steps, not at all
        with torch.no_grad():
            state, x, saturated = policy.init(4), noise[0], []
            for t in range(noise[1].shape[1]):
                u, state = policy.step(state, sim.h(x) + noise[2][:, t])
                saturated.append(u.abs() == 1.0)
                x = sim.f(x, u) + noise[1][:, t]
        frac = torch.cat(saturated).double().mean()
        assert 0.1 < float(frac) < 0.9
    params = [p for p in policy.parameters() if p.requires_grad]
    assert len(params) == 6
    assert_gradient_matches_central_differences(loss, params, rel=1e-5, abs=1e-8)


def test_no_parameter_values_make_the_qp_non_convex() -> None:
    model, cost = random_system(3, 2, 1, seed=2)
    policy = ConvexPolicy(model, cost, horizon=3, full_state=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.copy_(5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        policy.R_factor.diagonal().fill_(-8.0)  # a tiny but positive diagonal
        policy.S.zero_()
        policy.Q_factor.zero_()  # the state weights vanish: only R keeps H positive definite
    hess = policy.qp()[0].detach()
    assert float(torch.linalg.eigvalsh(hess).min()) > 0
    assert float(torch.linalg.eigvalsh(policy.input_weight.detach()).min()) > 0


def test_controller_protocol_with_the_kalman_filter_and_on_the_full_state() -> None:
    model, cost = plant(x0_cov=np.eye(2)), plant_cost()
    policy = ConvexPolicy(model, cost, input_bounds=(-0.5, 0.5))
    assert isinstance(policy, Controller)
    y = np.array([[0.3], [-2.0], [np.nan]], dtype=np.float32)  # NaN: a missing measurement
    action, state = policy.predict(y)
    assert action.shape == (3, 1) and action.dtype == np.float32
    assert isinstance(state, ConvexPolicyState) and policy.estimate(state).shape == (3, 2)
    assert np.all(np.abs(action) <= 0.5)
    action2, _ = policy.predict(y, state, episode_start=np.array([True, False, False]))
    assert action2.shape == (3, 1)
    full = ConvexPolicy(model, cost, input_bounds=(-0.5, 0.5), full_state=True)
    assert full.n_y == 2 and full.estimator is None
    a, s = full.predict(np.array([1.0, 0.0]))
    assert a.shape == (1,) and full.estimate(s) is None
    with pytest.raises(NonFiniteError, match="observation"):
        full.predict(np.array([np.nan, 0.0]))


def test_parameters_and_state_dict_hold_the_policy_only() -> None:
    model, cost = plant(), plant_cost()
    policy = ConvexPolicy(model, cost, trainable=("A", "R"))
    names = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert names == {"A", "R_factor"}
    assert set(policy.state_dict()) == {"S", "q", "A", "B", "R_factor", "Q_factor"}
    torch.testing.assert_close(policy.value_matrix, policy.lqr.value_matrix)
    torch.testing.assert_close(policy.input_weight, cost.R)


@pytest.mark.parametrize("bounds", [(-0.5, 0.5), None])
def test_a_checkpoint_rebuilds_the_policy_from_its_config(tmp_path, bounds) -> None:
    from kalmannet_ctrl.training import load_checkpoint, save_checkpoint

    model, cost = plant(), plant_cost()
    policy = ConvexPolicy(model, cost, horizon=2, input_bounds=bounds, trainable=("S", "B"))
    with torch.no_grad():  # parameters away from their start, as after training
        for p in policy.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    config = policy.config()
    assert config["trainable"] == ["S", "B"] and config["horizon"] == 2
    save_checkpoint(policy, tmp_path / "policy.pt")
    loaded, _ = load_checkpoint(tmp_path / "policy.pt", ConvexPolicy, model, cost)
    assert loaded.config() == config
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {"S", "B"}
    x = 3 * torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(loaded.plan(x), policy.plan(x), rtol=0, atol=0)
    fresh = ConvexPolicy(model, cost, horizon=2, input_bounds=bounds)
    assert not torch.allclose(fresh.plan(x), policy.plan(x))


def test_bad_input_raises_typed_errors() -> None:
    model, cost = plant(), plant_cost()
    policy = ConvexPolicy(model, cost, input_bounds=(-1.0, 1.0), full_state=True)
    with pytest.raises(DimensionError, match=r"x: expected shape \(B, 2\), found \(3,\)"):
        policy.action(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(NonFiniteError, match="x: expected finite"):
        policy.action([[np.inf, 0.0]])
    with pytest.raises(DimensionError, match="observation"):
        policy.predict(np.zeros(3))
    with pytest.raises(ValueError, match="low <= high"):
        ConvexPolicy(model, cost, input_bounds=(1.0, -1.0))
    with pytest.raises(DimensionError, match="input_bounds"):
        ConvexPolicy(model, cost, input_bounds=(np.zeros(2), np.ones(2)))
    with pytest.raises(ParameterError, match="trainable"):
        ConvexPolicy(model, cost, trainable=("S", "P"))
    with pytest.raises(TypeError, match="trainable"):
        ConvexPolicy(model, cost, trainable="S")
    with pytest.raises(ParameterError, match="horizon"):
        ConvexPolicy(model, cost, horizon=0)
    with pytest.raises(ParameterError, match="full_state"):
        ConvexPolicy(model, cost, KalmanFilter(model), full_state=True)
    with pytest.raises(DimensionError, match="cost"):
        ConvexPolicy(model, QuadraticCost(Q=np.eye(3), R=[[1.0]]))
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
        ConvexPolicy(nonlinear, cost)
    with torch.no_grad():
        policy.S.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="non-finite policy parameters"):
        policy.action([[1.0, 0.0]])
