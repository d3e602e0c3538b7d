"""Property tests over random dimensions and batch sizes (models, controllers, validation)."""

from __future__ import annotations

import control
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kalmannet_ctrl.controllers import LQG, LQR, analytic_average_cost
from kalmannet_ctrl.errors import DimensionError, NotPositiveDefiniteError, NotSymmetricError
from kalmannet_ctrl.estimators import KalmanFilter, steady_state_gain
from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
dims = st.tuples(st.integers(1, 5), st.integers(0, 3), st.integers(1, 4), st.integers(0, 2**31 - 1))


def random_system(n_x: int, n_u: int, n_y: int, seed: int) -> LinearGaussianModel:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= rng.uniform(0.3, 1.2) / max(abs(np.linalg.eigvals(A)).max(), 1e-3)
    Lw = rng.normal(size=(n_x, n_x))
    Lv = rng.normal(size=(n_y, n_y))
    return LinearGaussianModel(
        A,
        rng.normal(size=(n_x, n_u)) if n_u else None,
        rng.normal(size=(n_y, n_x)),
        process_cov=0.1 * Lw @ Lw.T + 0.05 * np.eye(n_x),
        measurement_cov=0.1 * Lv @ Lv.T + 0.1 * np.eye(n_y),
        x0_mean=rng.normal(size=n_x),
        x0_cov=np.eye(n_x),
    )


@SETTINGS
@given(dims=dims, batch=st.integers(1, 8), T=st.integers(1, 6))
def test_model_shapes_jacobians_and_control_round_trip(dims, batch, T) -> None:
    n_x, n_u, n_y, seed = dims
    model = random_system(n_x, n_u, n_y, seed)
    gen = torch.Generator().manual_seed(seed)
    traj = model.simulate(
        T, batch, u=torch.randn(batch, T, n_u, dtype=torch.float64), generator=gen
    )
    assert traj.x.shape == (batch, T, n_x)
    assert traj.y.shape == (batch, T, n_y)
    assert traj.u.shape == (batch, T, n_u)
    x = traj.x[:, 0]
    F, H = model.jacobians(x, traj.u[:, 0])
    assert torch.equal(F, model.A.expand(batch, n_x, n_x))
    assert torch.equal(H, model.C.expand(batch, n_y, n_x))
    # the transition really is A x + B u: x_1 - f(x_0, u_0) is the process noise only
    if T > 1:
        w = traj.x[:, 1] - model.f(traj.x[:, 0], traj.u[:, 0])
        torch.testing.assert_close(
            w, traj.x[:, 1] - traj.x[:, 0] @ model.A.T - traj.u[:, 0] @ model.B.T
        )
    if n_u == 0 and (n_x == 1 or n_y == 1):
        with pytest.raises(DimensionError, match="python-control cannot represent"):
            model.to_control()
        return
    back = LinearGaussianModel.from_control(
        model.to_control(), model.process_cov, model.measurement_cov
    )
    for name in ("A", "B", "C"):
        torch.testing.assert_close(getattr(back, name), getattr(model, name))


@SETTINGS
@given(dims=dims, batch=st.integers(1, 6))
def test_lqg_matches_python_control_and_closed_form(dims, batch) -> None:
    n_x, n_u, n_y, seed = dims
    assume(n_u >= 1)
    model = random_system(n_x, n_u, n_y, seed)
    m = model.numpy()
    rng = np.random.default_rng(seed + 1)
    Lq = rng.normal(size=(n_x, n_x))
    cost = QuadraticCost(Lq @ Lq.T + 0.1 * np.eye(n_x), np.eye(n_u) * rng.uniform(0.1, 2.0))
    Q, R = cost.numpy()
    K_ref, S, _ = control.dlqr(m["A"], m["B"], Q, R)
    lqr = LQR(model, cost)
    np.testing.assert_allclose(lqr.gain.numpy(), K_ref, rtol=1e-7, atol=1e-9)
    ctrl = LQG(model, cost)
    # oracle LQG: J* = tr(S W) + tr(P_{t|t} K'(R + B'SB)K)
    P_post = steady_state_gain(model).cov.numpy()
    # an unstable mode barely seen by the sensors (e.g. n_x = 5, n_y = 1) can make P_{t|t}'s
    # condition number ~1e9, where float64 round-off alone moves J* by ~1e-5 relative: such
    # draws say nothing about the formula at rel=1e-7
    assume(np.linalg.cond(P_post) < 1e6)
    J_star = np.trace(S @ m["process_cov"]) + np.trace(
        P_post @ K_ref.T @ (R + m["B"].T @ S @ m["B"]) @ K_ref
    )
    assert analytic_average_cost(model, ctrl, cost) == pytest.approx(J_star, rel=1e-7)
    # predict: a batch in, a batch out; the first action is -K x̂_{0|0} of a Kalman filter
    y = rng.normal(size=(batch, n_y)).astype(np.float32)
    action, _ = ctrl.predict(y, episode_start=np.ones(batch, dtype=bool))
    assert action.shape == (batch, n_u) and action.dtype == np.float32
    x_hat, _ = KalmanFilter(model).step(
        KalmanFilter(model).init(batch), torch.as_tensor(y, dtype=torch.float64)
    )
    np.testing.assert_allclose(action, -(x_hat.numpy() @ K_ref.T), rtol=1e-4, atol=1e-5)


@SETTINGS
@given(n=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_covariance_validation(n, seed) -> None:
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(n, n))
    good = L @ L.T + 0.1 * np.eye(n)
    A = np.eye(n) * 0.5
    C = np.eye(n)
    LinearGaussianModel(A, None, C, good, good)  # accepted
    if n >= 2:
        skew = good.copy()
        skew[0, 1] += 1.0 + abs(good).max()
        with pytest.raises(NotSymmetricError, match="process_cov"):
            LinearGaussianModel(A, None, C, skew, good)
    with pytest.raises(NotPositiveDefiniteError, match="measurement_cov"):
        LinearGaussianModel(A, None, C, good, -good)
    with pytest.raises(DimensionError, match="measurement_cov"):
        LinearGaussianModel(A, None, C, good, np.eye(n + 1))
