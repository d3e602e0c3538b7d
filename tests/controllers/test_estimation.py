"""EstimationOnly: the constant input, the estimate against an independent batch filter, resets
and errors on the controller base."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import BaseController, EstimationOnly, OutputFeedback
from kalmannet_ctrl.errors import BatchSizeError, DimensionError, NonFiniteError
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanFilter
from kalmannet_ctrl.models import lorenz

from .systems import plant


@pytest.mark.parametrize("B", [1, 10])
def test_estimate_equals_batch_filter_with_the_applied_input(B: int) -> None:
    model = plant(x0_mean=[1.0, -0.5], x0_cov=np.eye(2))
    bounds = (0.25, 2.0)  # zero is outside: the applied input is 0.25
    ctrl = EstimationOnly(model, input_bounds=bounds)
    traj = model.simulate(25, B, policy=ctrl, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(traj.u.numpy(), np.full((B, 25, model.n_u), 0.25))
    state, estimates = None, []
    for t in range(25):
        _, state = ctrl.predict(traj.y[:, t].numpy(), state, episode_start=np.full(B, t == 0))
        estimates.append(ctrl.estimate(state).numpy())
    ref = KalmanFilter(model).filter(traj.y, traj.u).mean.numpy()
    np.testing.assert_allclose(np.stack(estimates, 1), ref, rtol=1e-9, atol=1e-12)


def test_default_estimator_and_protocols() -> None:
    ctrl = EstimationOnly(lorenz())
    assert isinstance(ctrl.estimator, ExtendedKalmanFilter)
    assert isinstance(ctrl, BaseController) and isinstance(ctrl, OutputFeedback)
    action, state = ctrl.predict(np.zeros(3, dtype=np.float32))
    assert action.shape == (3,) and action.dtype == np.float32 and not action.any()
    assert ctrl.estimate(state).shape == (1, 3)


def test_episode_start_resets_only_flagged_rows() -> None:
    model = plant(x0_mean=[1.0, -0.5], x0_cov=np.eye(2))
    ctrl = EstimationOnly(model)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((3, 5, model.n_y))
    state = None
    for t in range(5):
        _, state = ctrl.predict(y[:, t], state, episode_start=np.full(3, t == 0))
    before = ctrl.estimate(state).clone()
    _, state = ctrl.predict(y[:, 0], state, episode_start=np.array([False, True, False]))
    _, fresh_state = ctrl.predict(y[1:2, 0], None)
    np.testing.assert_allclose(ctrl.estimate(state)[1], ctrl.estimate(fresh_state)[0], rtol=1e-12)
    # the other rows continued their episodes (a leaked reset would change them by O(0.1))
    assert float((ctrl.estimate(state)[[0, 2]] - before[[0, 2]]).abs().max()) > 1e-6


def test_errors() -> None:
    model = plant()
    ctrl = EstimationOnly(model)
    _, state = ctrl.predict(np.zeros((3, model.n_y)))
    with pytest.raises(BatchSizeError, match="expected batch size 3"):
        ctrl.predict(np.zeros((2, model.n_y)), state)
    with pytest.raises(DimensionError, match="observation: expected shape"):
        ctrl.predict(np.zeros((3, model.n_y + 1)), state)
    with pytest.raises(NonFiniteError, match="infinite"):
        ctrl.predict(np.full((3, model.n_y), np.inf), state)
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        EstimationOnly("plant")  # type: ignore[arg-type]
    with pytest.raises(DimensionError, match="estimator: expected an estimator of the model"):
        EstimationOnly(model, ExtendedKalmanFilter(lorenz()))
    # a new batch starts when every row is reset
    action, _ = ctrl.predict(np.zeros((2, model.n_y)), state, episode_start=np.ones(2, bool))
    assert action.shape == (2, model.n_u)


def test_missing_measurement_predicts_only() -> None:
    model = plant(x0_mean=[1.0, -0.5], x0_cov=np.eye(2))
    ctrl = EstimationOnly(model)
    y = np.array([[0.3], [np.nan]])
    _, state = ctrl.predict(y)
    ref = KalmanFilter(model).filter(torch.as_tensor(y)[:, None]).mean[:, 0]
    np.testing.assert_allclose(ctrl.estimate(state).numpy(), ref.numpy(), rtol=1e-12)
    assert np.isfinite(ctrl.estimate(state).numpy()).all()
