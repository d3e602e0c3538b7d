"""Bad input to the filters gets typed errors that name the argument; property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kalmannet_ctrl.errors import (
    BatchSizeError,
    DimensionError,
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSymmetricError,
)
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanFilter, UnscentedKalmanFilter

from .test_kalman import random_model
from .test_nonlinear import nonlinear_model

FILTERS = [KalmanFilter, ExtendedKalmanFilter, UnscentedKalmanFilter]


@pytest.fixture
def model():
    return random_model(3, 2, 1, 0)


def test_kf_needs_linear_model() -> None:
    with pytest.raises(TypeError, match="model: KalmanFilter needs a LinearGaussianModel"):
        KalmanFilter(nonlinear_model())
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        ExtendedKalmanFilter("not a model")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", FILTERS)
def test_step_errors(cls, model) -> None:
    flt = cls(model)
    state = flt.init(4)
    with pytest.raises(DimensionError, match=r"y: expected shape \(4, 2\), found \(4, 3\)"):
        flt.step(state, torch.zeros(4, 3))
    with pytest.raises(DimensionError, match="y: expected shape"):
        flt.step(state, torch.zeros(2))
    with pytest.raises(BatchSizeError, match="y: expected batch size 4, found 5"):
        flt.step(state, torch.zeros(5, 2))
    with pytest.raises(DimensionError, match=r"u_prev: expected shape \(4, 1\), found \(4, 2\)"):
        flt.step(state, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(NonFiniteError, match="u_prev"):
        flt.step(state, torch.zeros(4, 2), torch.full((4, 1), float("inf")))
    with pytest.raises(NonFiniteError, match="y: found inf"):
        flt.step(state, torch.tensor([[0.0, float("inf")]] * 4))
    with pytest.raises(TypeError, match="state: expected a GaussianState"):
        flt.step((state.mean, state.cov), torch.zeros(4, 2))
    with pytest.raises(TypeError, match="y: expected an array-like of numbers"):
        flt.step(state, [["a", "b"]] * 4)


@pytest.mark.parametrize("cls", FILTERS)
def test_filter_errors(cls, model) -> None:
    flt = cls(model)
    with pytest.raises(DimensionError, match=r"y: expected shape \(B, T, 2\), found \(5, 2\)"):
        flt.filter(torch.zeros(5, 2))
    with pytest.raises(DimensionError, match=r"u: expected shape \(2, 5, 1\), found \(2, 4, 1\)"):
        flt.filter(torch.zeros(2, 5, 2), torch.zeros(2, 4, 1))
    with pytest.raises(NonFiniteError, match="u: expected finite values"):
        flt.filter(torch.zeros(2, 5, 2), torch.full((2, 5, 1), float("nan")))
    with pytest.raises(NonFiniteError, match="y: found inf"):
        flt.filter(torch.full((2, 5, 2), float("-inf")))
    with pytest.raises(DimensionError, match="y: expected at least one"):
        flt.filter(torch.zeros(2, 0, 2))


@pytest.mark.parametrize("cls", FILTERS)
def test_init_errors(cls, model) -> None:
    flt = cls(model)
    with pytest.raises(ValueError, match="batch_size"):
        flt.init(0)
    with pytest.raises(DimensionError, match=r"x0_mean: expected shape \(3,\)"):
        flt.init(2, x0_mean=torch.zeros(4))
    with pytest.raises(DimensionError, match=r"x0_mean: expected shape \(2, 3\)"):
        flt.init(2, x0_mean=torch.zeros(3, 3))
    with pytest.raises(NonFiniteError, match="x0_mean"):
        flt.init(2, x0_mean=[float("nan"), 0.0, 0.0])
    with pytest.raises(NotSymmetricError, match="x0_cov"):
        flt.init(2, x0_cov=[[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(NotPositiveDefiniteError, match="x0_cov: expected a positive semi-definite"):
        flt.init(2, x0_cov=-np.eye(3))
    with pytest.raises(DimensionError, match="x0_cov"):
        flt.init(2, x0_cov=np.eye(2))
    with pytest.raises(DimensionError, match="x0_cov"):
        flt.init(2, x0_cov=np.stack([np.eye(3)] * 3))
    # a per-trajectory prior is accepted and used
    covs = np.stack([np.eye(3), 4 * np.eye(3)])
    state = flt.init(2, x0_mean=np.zeros((2, 3)), x0_cov=covs)
    assert state.cov.shape == (2, 3, 3)


def test_reset_mask_errors(model) -> None:
    kf = KalmanFilter(model)
    state = kf.init(3)
    with pytest.raises(BatchSizeError, match="mask"):
        kf.reset(state, [True, False])


# -- property tests over random dimensions and batch sizes ------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_x=st.integers(1, 5),
    n_y_frac=st.floats(0.0, 1.0),
    n_u=st.integers(0, 2),
    batch=st.integers(1, 7),
    T=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_filters_agree_on_random_linear_systems(n_x, n_y_frac, n_u, batch, T, seed) -> None:
    """On any linear system and batch, KF (fast path), KF (step loop), EKF and UKF agree."""
    n_y = 1 + int(n_y_frac * (n_x - 1))
    model = random_model(n_x, n_y, n_u, seed)
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, T, n_u, dtype=torch.float64, generator=gen)
    traj = model.simulate(T, batch, u=u, generator=gen)
    kf = KalmanFilter(model)
    ref = kf.filter(traj.y, traj.u)
    assert ref.mean.shape == (batch, T, n_x) and ref.cov.shape == (batch, T, n_x, n_x)
    state = kf.init(batch)
    for t in range(T):
        x, state = kf.step(state, traj.y[:, t], traj.u[:, t - 1] if t else None)
        torch.testing.assert_close(x, ref.mean[:, t], rtol=1e-9, atol=1e-9)
    for cls in (ExtendedKalmanFilter, UnscentedKalmanFilter):
        res = cls(model).filter(traj.y, traj.u)
        torch.testing.assert_close(res.mean, ref.mean, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(res.cov, ref.cov, rtol=1e-8, atol=1e-8)
    # covariances are symmetric positive semi-definite at every step
    P = ref.cov[0]
    assert torch.equal(P, P.mT)
    assert (torch.linalg.eigvalsh(P) > -1e-12).all()
