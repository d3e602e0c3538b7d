"""ExtendedKalmanFilter and UnscentedKalmanFilter against the KF and against filterpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from filterpy.kalman import ExtendedKalmanFilter as FilterPyEKF
from filterpy.kalman import MerweScaledSigmaPoints
from filterpy.kalman import UnscentedKalmanFilter as FilterPyUKF

from kalmannet_ctrl.estimators import (
    Estimator,
    ExtendedKalmanFilter,
    KalmanFilter,
    UnscentedKalmanFilter,
)
from kalmannet_ctrl.models import NonlinearModel

from .test_kalman import random_model, rel_err

# A 2-state nonlinear model with an input, written once in torch (for the library) and once
# in NumPy (for filterpy), so that the references share no code with the filters under test.
ALPHA, BETA, PHI, DELTA = 0.9, 1.1, 0.3, 0.01


def f_torch(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    mixed = torch.stack([x[:, 0] + 0.1 * x[:, 1], x[:, 1]], -1)
    return ALPHA * torch.sin(BETA * mixed + PHI) + DELTA + 0.5 * u.expand(-1, 2)


def h_torch(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0] ** 2 + x[:, 1], torch.cos(x[:, 1])], -1)


def f_np(x: np.ndarray, u: float) -> np.ndarray:
    mixed = np.array([x[0] + 0.1 * x[1], x[1]])
    return ALPHA * np.sin(BETA * mixed + PHI) + DELTA + 0.5 * u


def F_np(x: np.ndarray) -> np.ndarray:
    c = ALPHA * BETA * np.cos(BETA * np.array([x[0] + 0.1 * x[1], x[1]]) + PHI)
    return np.array([[c[0], 0.1 * c[0]], [0.0, c[1]]])


def h_np(x: np.ndarray) -> np.ndarray:
    return np.array([x[0] ** 2 + x[1], np.cos(x[1])])


def H_np(x: np.ndarray) -> np.ndarray:
    return np.array([[2 * x[0], 1.0], [0.0, -np.sin(x[1])]])


def nonlinear_model(**overrides) -> NonlinearModel:
    kwargs = dict(
        n_x=2,
        n_y=2,
        n_u=1,
        process_cov=[[0.02, 0.005], [0.005, 0.01]],
        measurement_cov=[[0.1, 0.0], [0.0, 0.05]],
        x0_mean=[0.2, -0.1],
        x0_cov=0.3 * np.eye(2),
    )
    kwargs.update(overrides)
    return NonlinearModel(f_torch, h_torch, **kwargs)


def simulate(model, T=40, B=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, T, model.n_u, dtype=torch.float64, generator=gen) * 0.5
    return model.simulate(T, B, u=u, generator=gen)


@pytest.mark.parametrize("filter_cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
@pytest.mark.parametrize(("n_x", "n_y", "n_u", "seed"), [(1, 1, 1, 0), (3, 2, 1, 1), (6, 3, 2, 2)])
def test_reproduces_kf_on_linear_model(filter_cls, n_x: int, n_y: int, n_u: int, seed: int) -> None:
    model = random_model(n_x, n_y, n_u, seed)
    gen = torch.Generator().manual_seed(seed)
    T, B = 50, 4
    traj = model.simulate(
        T, B, u=torch.randn(B, T, n_u, dtype=torch.float64, generator=gen), generator=gen
    )
    y = traj.y.clone()
    y[1, 3:7] = float("nan")
    ref = KalmanFilter(model).filter(y, traj.u)
    res = filter_cls(model).filter(y, traj.u)
    assert (res.mean - ref.mean).abs().max() <= 1e-8
    assert (res.cov - ref.cov).abs().max() <= 1e-8


def test_ekf_matches_filterpy() -> None:
    model = nonlinear_model()
    traj = simulate(model, seed=3)
    res = ExtendedKalmanFilter(model).filter(traj.y, traj.u)
    m = {
        k: getattr(model, k).numpy()
        for k in ("process_cov", "measurement_cov", "x0_mean", "x0_cov")
    }
    for b in range(traj.y.shape[0]):
        ekf = FilterPyEKF(dim_x=2, dim_z=2)
        ekf.x, ekf.P = m["x0_mean"].copy(), m["x0_cov"].copy()
        ekf.Q, ekf.R = m["process_cov"], m["measurement_cov"]
        means, covs = [], []
        for t in range(traj.y.shape[1]):
            if t:
                ekf.F = F_np(ekf.x)
                ekf.x = f_np(ekf.x, float(traj.u[b, t - 1, 0]))
                ekf.P = ekf.F @ ekf.P @ ekf.F.T + ekf.Q
            ekf.update(traj.y[b, t].numpy(), H_np, h_np)
            means.append(ekf.x.copy())
            covs.append(ekf.P.copy())
        assert rel_err(res.mean[b].numpy(), np.array(means)).max() <= 1e-10
        assert rel_err(res.cov[b].numpy(), np.array(covs)).max() <= 1e-10


@pytest.mark.parametrize(
    ("alpha", "beta", "kappa"), [(1.0, 2.0, 0.0), (0.5, 2.0, 1.0), (0.8, 0.0, 3.0)]
)
def test_ukf_matches_filterpy(alpha: float, beta: float, kappa: float) -> None:
    model = nonlinear_model()
    traj = simulate(model, seed=4)
    res = UnscentedKalmanFilter(model, alpha=alpha, beta=beta, kappa=kappa).filter(traj.y, traj.u)
    m = {
        k: getattr(model, k).numpy()
        for k in ("process_cov", "measurement_cov", "x0_mean", "x0_cov")
    }
    for b in range(traj.y.shape[0]):
        points = MerweScaledSigmaPoints(2, alpha=alpha, beta=beta, kappa=kappa)
        ukf = FilterPyUKF(
            dim_x=2, dim_z=2, dt=1.0, hx=h_np, fx=lambda x, dt, u: f_np(x, u), points=points
        )
        ukf.x, ukf.P = m["x0_mean"].copy(), m["x0_cov"].copy()
        ukf.Q, ukf.R = m["process_cov"], m["measurement_cov"]
        means, covs = [], []
        for t in range(traj.y.shape[1]):
            if t:
                ukf.predict(u=float(traj.u[b, t - 1, 0]))
            # the library redraws sigma points from the predicted distribution before updating
            ukf.sigmas_f = points.sigma_points(ukf.x, ukf.P)
            ukf.update(traj.y[b, t].numpy())
            means.append(ukf.x.copy())
            covs.append(ukf.P.copy())
        assert rel_err(res.mean[b].numpy(), np.array(means)).max() <= 1e-10
        assert rel_err(res.cov[b].numpy(), np.array(covs)).max() <= 1e-10


@pytest.mark.parametrize("filter_cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_nonlinear_missing_measurements(filter_cls) -> None:
    model = nonlinear_model()
    traj = simulate(model, T=30, B=4, seed=5)
    y = traj.y.clone()
    y[0, 0] = float("nan")
    y[2, 10:15] = float("nan")
    y[:, 20] = float("nan")
    flt = filter_cls(model)
    res = flt.filter(y, traj.u)
    assert torch.isfinite(res.mean).all() and torch.isfinite(res.cov).all()
    # equal to a loop that skips the update where the row is missing
    for b in range(4):
        mean, cov = model.x0_mean[None], model.x0_cov
        for t in range(30):
            if t:
                mean, cov = flt._predict(mean, cov, traj.u[b : b + 1, t - 1])
            if not torch.isnan(y[b, t]).any():
                mean, cov = flt._update(mean, cov, y[b : b + 1, t])
            torch.testing.assert_close(res.mean[b, t], mean[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(
                res.cov[b, t], cov.expand(1, 2, 2)[0], rtol=1e-12, atol=1e-12
            )


@pytest.mark.parametrize("filter_cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_gradients_flow_to_model_parameters(filter_cls) -> None:
    traj = simulate(nonlinear_model(), T=12, B=2, seed=6)

    def loss(scale: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        model = NonlinearModel(
            lambda x, u: scale * f_torch(x, u),
            h_torch,
            n_x=2,
            n_y=2,
            n_u=1,
            process_cov=0.5 * (W + W.mT),
            measurement_cov=[[0.1, 0.0], [0.0, 0.05]],
            x0_mean=[0.2, -0.1],
            x0_cov=0.3 * np.eye(2),
        )
        res = filter_cls(model).filter(traj.y, traj.u)
        return ((res.mean - traj.x) ** 2).mean() + res.cov.diagonal(dim1=-2, dim2=-1).mean()

    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    W = torch.tensor([[0.02, 0.005], [0.005, 0.01]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (scale, W), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("filter_cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
@pytest.mark.parametrize("batch", [1, 10])
def test_protocol_shapes_and_dtypes(filter_cls, batch: int) -> None:
    model = nonlinear_model()
    traj = simulate(model, T=8, B=batch, seed=7)
    flt = filter_cls(model)
    assert isinstance(flt, Estimator)
    res = flt.filter(traj.y, traj.u)
    assert res.mean.shape == (batch, 8, 2) and res.cov.shape == (batch, 8, 2, 2)
    state = flt.init(batch)
    x, state = flt.step(state, traj.y[:, 0].numpy())  # NumPy accepted
    assert x.shape == (batch, 2) and x.dtype == torch.float64
    model32 = nonlinear_model(dtype=torch.float32)
    res32 = filter_cls(model32).filter(traj.y.float(), traj.u.float())
    assert res32.mean.dtype == torch.float32
    torch.testing.assert_close(res32.mean.double(), res.mean, rtol=1e-3, atol=1e-3)


def test_ukf_parameter_errors() -> None:
    model = nonlinear_model()
    with pytest.raises(ValueError, match="alpha"):
        UnscentedKalmanFilter(model, alpha=0.0)
    with pytest.raises(ValueError, match="kappa"):
        UnscentedKalmanFilter(model, alpha=1.0, kappa=-2.5)
