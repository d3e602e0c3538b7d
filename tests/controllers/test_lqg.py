"""LQG.predict: shapes, dtypes, resets, clipping, missing measurements and errors."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQG, LQR, Controller, LQGState
from kalmannet_ctrl.errors import BatchSizeError, DimensionError, NonFiniteError
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel, QuadraticCost

from .systems import plant, plant_cost, random_system


def reference_actions(
    ctrl: LQG, y: np.ndarray, u: np.ndarray, bounds: tuple[float, float] | None = None
) -> np.ndarray:
    """−K x̂_{t|t} from an independent batch KF run on the recorded y and applied u."""
    xhat = KalmanFilter(ctrl.model).filter(y, u).mean.numpy()
    ref = -xhat @ ctrl.lqr.gain.numpy().T
    return ref if bounds is None else np.clip(ref, *bounds)


def run(ctrl: Any, y: np.ndarray, starts: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Drive ``ctrl.predict`` over y (B, T, n_y); ``starts[t]`` is the episode_start at step t."""
    B, T, _ = y.shape
    starts = starts or {}
    state, actions = None, []
    for t in range(T):
        start = starts.get(t, np.full(B, t == 0))
        a, state = ctrl.predict(y[:, t], state, episode_start=start)
        actions.append(a)
    return np.stack(actions, 1)


@pytest.mark.parametrize("B", [1, 10])
def test_closed_loop_equals_kalman_filter_and_gain(B: int) -> None:
    model, cost = random_system(3, 2, 2, seed=0)
    ctrl = LQG(model, cost)
    traj = model.simulate(30, B, policy=ctrl, generator=torch.Generator().manual_seed(0))
    y, u = traj.y.numpy(), traj.u.numpy()
    np.testing.assert_allclose(u, reference_actions(ctrl, y, u), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("B", [1, 10])
def test_input_bounds_clip_and_feed_the_estimator(B: int) -> None:
    model = plant(x0_mean=[2.0, -1.0], x0_cov=np.eye(2))
    bounds = (-0.3, 0.4)
    ctrl = LQG(model, plant_cost(), input_bounds=bounds)
    traj = model.simulate(40, B, policy=ctrl, generator=torch.Generator().manual_seed(1))
    y, u = traj.y.numpy(), traj.u.numpy()
    assert u.min() >= bounds[0] and u.max() <= bounds[1]
    clipped = np.isclose(u, bounds[0]) | np.isclose(u, bounds[1])
    assert 0.1 < clipped.mean() < 0.9  # the bounds are active often, but not always
    # the estimator predicted with the clipped (applied) inputs
    np.testing.assert_allclose(u, reference_actions(ctrl, y, u, bounds), rtol=1e-9, atol=1e-12)
    # and the state carries the applied action
    a, state = ctrl.predict(y[:, 0], episode_start=np.ones(B, dtype=bool))
    np.testing.assert_array_equal(state.u_prev.numpy(), a)


def test_input_bounds_per_input_arrays() -> None:
    model, cost = random_system(3, 2, 2, seed=1)
    low, high = np.array([-0.1, -np.inf]), np.array([0.1, 0.05])
    ctrl = LQG(model, cost, input_bounds=(low, high))
    free = LQG(model, cost)
    y = 10 * np.random.default_rng(0).normal(size=(50, 2))
    a, _ = ctrl.predict(y)
    a_free, _ = free.predict(y)
    np.testing.assert_array_equal(a, np.clip(a_free, low, high))


@pytest.mark.parametrize("B", [1, 10])
def test_shapes_and_dtypes(B: int) -> None:
    model, cost = random_system(3, 2, 2, seed=2)
    ctrl = LQG(model, cost)
    assert isinstance(ctrl, Controller)
    y = np.random.default_rng(1).normal(size=(B, 2))
    a32, state = ctrl.predict(y.astype(np.float32))
    assert a32.shape == (B, 2) and a32.dtype == np.float32
    assert isinstance(state, LQGState) and state.u_prev.shape == (B, 2)
    a64, _ = ctrl.predict(y)
    assert a64.dtype == np.float64
    np.testing.assert_allclose(a32, a64, rtol=1e-5, atol=1e-6)
    a_t, _ = ctrl.predict(torch.as_tensor(y, dtype=torch.float32))
    assert a_t.dtype == np.float64 and a_t.shape == (B, 2)
    a_list, _ = ctrl.predict(y.tolist())
    np.testing.assert_array_equal(a_list, a64)
    # one observation (n_y,) -> one action (n_u,)
    a1, state1 = ctrl.predict(y[0].astype(np.float32))
    assert a1.shape == (2,) and a1.dtype == np.float32
    assert state1.u_prev.shape == (1, 2)
    np.testing.assert_array_equal(a1, a32[0])
    a1b, _ = ctrl.predict(y[0].astype(np.float32), state1, episode_start=np.array([False]))
    assert a1b.shape == (2,)


@pytest.mark.parametrize("B", [1, 10])
def test_episode_start_resets_only_flagged_rows(B: int) -> None:
    model = plant(x0_mean=[1.0, -2.0], x0_cov=0.5 * np.eye(2))
    y = np.random.default_rng(2).normal(size=(B, 12, 1))
    flagged = np.zeros(B, dtype=bool)
    flagged[1::3] = True
    if B == 1:
        flagged[0] = True
    k = 5
    make = lambda: LQG(model, plant_cost(), input_bounds=(-1.0, 1.0))  # noqa: E731
    with_reset = run(make(), y, {k: flagged})
    without = run(make(), y)
    fresh = run(make(), y[flagged, k:])
    # the other rows are untouched; after the reset each row carries its own covariance, and the
    # batched products can round differently from the shared-covariance ones (by 1 ulp on some
    # CPUs), hence a round-off tolerance rather than bitwise equality
    np.testing.assert_allclose(with_reset[~flagged], without[~flagged], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(with_reset[flagged, k:], fresh, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(with_reset[:, :k], without[:, :k])
    assert np.abs(with_reset[flagged, k:] - without[flagged, k:]).max() > 1e-3


def test_episode_start_as_float_array_and_scalar() -> None:
    ctrl = LQG(plant(x0_mean=[1.0, 0.0]), plant_cost())
    y = np.array([[0.5], [-0.2]])
    _, state = ctrl.predict(y)
    a_float, _ = ctrl.predict(y, state, episode_start=np.array([1.0, 0.0], dtype=np.float32))
    a_bool, _ = ctrl.predict(y, state, episode_start=np.array([True, False]))
    np.testing.assert_array_equal(a_float, a_bool)
    a_all, _ = ctrl.predict(y, state, episode_start=True)
    a_new, _ = ctrl.predict(y)
    np.testing.assert_array_equal(a_all, a_new)
    a_none, _ = ctrl.predict(y, state, episode_start=False)
    a_plain, _ = ctrl.predict(y, state)
    np.testing.assert_array_equal(a_none, a_plain)


@pytest.mark.parametrize("B", [1, 10])
def test_missing_measurements(B: int) -> None:
    model, cost = random_system(3, 2, 2, seed=3)
    ctrl = LQG(model, cost)
    rng = np.random.default_rng(3)
    y = rng.normal(size=(B, 15, 2))
    missing = rng.random(size=(B, 15)) < 0.3
    missing[0, 0] = missing[0, 7] = True  # a missing first measurement, too
    y[missing] = np.nan
    y[0, 9, 1] = np.nan  # a partly missing row counts as missing, as for the estimators
    state, actions = None, []
    for t in range(15):
        a, state = ctrl.predict(y[:, t], state)
        actions.append(a)
    u = np.stack(actions, 1)
    assert np.isfinite(u).all()
    np.testing.assert_allclose(u, reference_actions(ctrl, y, u), rtol=1e-9, atol=1e-12)


def test_deterministic_and_reentrant() -> None:
    model, cost = random_system(3, 2, 2, seed=4)
    y = np.random.default_rng(4).normal(size=(6, 20, 2))
    first = run(LQG(model, cost, input_bounds=(-0.5, 0.5)), y)
    second = run(LQG(model, cost, input_bounds=(-0.5, 0.5)), y)
    np.testing.assert_array_equal(first, second)
    ctrl = LQG(model, cost)
    _, state = ctrl.predict(y[:, 0])
    saved_mean = state.estimator_state.mean.clone()
    a1, _ = ctrl.predict(y[:, 1], state, deterministic=True)
    a2, _ = ctrl.predict(y[:, 1], state, episode_start=np.array([True] + [False] * 5))
    a3, _ = ctrl.predict(y[:, 1], state, deterministic=False)
    np.testing.assert_array_equal(a1, a3)
    # the reset row gets its own covariance: round-off differences only (see above)
    np.testing.assert_allclose(a1[1:], a2[1:], rtol=1e-12, atol=1e-14)
    assert torch.equal(state.estimator_state.mean, saved_mean)


def test_step_is_differentiable() -> None:
    # At t = 0 there is no prediction: x̂_0 = m0 + K0 (y − C m0), K0 = P0 C'(C P0 C' + V)^{-1}.
    P0 = np.eye(2)
    model = plant(x0_cov=P0)
    ctrl = LQG(model, plant_cost())
    y = torch.tensor([[0.7], [-0.1]], dtype=torch.float64, requires_grad=True)
    u, state = ctrl.step(None, y)
    u.sum().backward()
    C, V = model.C.numpy(), model.measurement_cov.numpy()
    K0 = P0 @ C.T @ np.linalg.inv(C @ P0 @ C.T + V)
    expected = -(ctrl.lqr.gain.numpy() @ K0).sum(0)
    np.testing.assert_allclose(y.grad.numpy(), np.tile(expected, (2, 1)), rtol=1e-12)
    assert isinstance(state, LQGState)


class _Inversion(NamedTuple):
    u_prev: Any


class MeasurementInversion:
    """A memoryless estimator x̂ = C⁺ y (for a full-rank square C), recording u_prev."""

    def __init__(self, C: np.ndarray) -> None:
        self.n_x = C.shape[1]
        self.C_inv = torch.as_tensor(np.linalg.inv(C))

    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> _Inversion:
        return _Inversion(None)

    def step(self, state: Any, y: Any, u_prev: Any = None) -> tuple[torch.Tensor, _Inversion]:
        return torch.as_tensor(y) @ self.C_inv.mT, _Inversion(u_prev)

    def filter(self, y: Any, u: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reset(self, state: Any, mask: Any) -> _Inversion:
        return state


def test_any_estimator() -> None:
    model, cost = random_system(2, 1, 2, seed=5)
    C = model.C.numpy()
    ctrl = LQG(model, cost, MeasurementInversion(C), input_bounds=(-0.2, 0.2))
    y = np.random.default_rng(5).normal(size=(4, 2))
    a, state = ctrl.predict(y)
    expected = np.clip(-y @ np.linalg.inv(C).T @ ctrl.lqr.gain.numpy().T, -0.2, 0.2)
    np.testing.assert_allclose(a, expected, rtol=1e-12)
    _, state2 = ctrl.predict(y, state)
    np.testing.assert_array_equal(state2.estimator_state.u_prev.numpy(), a)


def test_attributes() -> None:
    model, cost = plant(), plant_cost()
    ctrl = LQG(model, cost)
    assert isinstance(ctrl.lqr, LQR) and isinstance(ctrl.estimator, KalmanFilter)
    assert ctrl.estimator.model is model and not ctrl.estimator.steady_state
    np.testing.assert_array_equal(ctrl.lqr.gain.numpy(), LQR(model, cost).gain.numpy())
    assert ctrl.input_bounds is None
    assert "LQG(n_x=2, n_u=1, n_y=1" in repr(ctrl)


# -- errors --------------------------------------------------------------------------------------


def test_constructor_errors() -> None:
    model, cost = plant(), plant_cost()
    nl = NonlinearModel(
        lambda x, u: x,
        lambda x: x,
        n_x=1,
        n_y=1,
        n_u=1,
        process_cov=[[1.0]],
        measurement_cov=[[1.0]],
    )
    with pytest.raises(TypeError, match=r"model: LQG needs a LinearGaussianModel.*linearize"):
        LQG(nl, QuadraticCost([[1.0]], [[1.0]]))
    with pytest.raises(DimensionError, match=r"cost: expected Q of shape \(2, 2\)"):
        LQG(model, QuadraticCost(np.eye(3), [[1.0]]))
    with pytest.raises(
        TypeError, match="estimator: expected an object with the Estimator protocol"
    ):
        LQG(model, cost, estimator=object())
    other = LinearGaussianModel(np.eye(3), np.ones((3, 1)), np.ones((1, 3)), np.eye(3), [[1.0]])
    with pytest.raises(
        DimensionError, match="estimator: expected an estimator of the model's n_x = 2"
    ):
        LQG(model, cost, estimator=KalmanFilter(other))
    other_y = LinearGaussianModel(np.eye(2), np.ones((2, 1)), np.eye(2), np.eye(2), np.eye(2))
    with pytest.raises(
        DimensionError, match=r"estimator: expected a model with n_y = 1.*found n_y = 2"
    ):
        LQG(model, cost, estimator=KalmanFilter(other_y))


def test_input_bounds_errors() -> None:
    model, cost = plant(), plant_cost()
    with pytest.raises(TypeError, match="input_bounds: expected a pair"):
        LQG(model, cost, input_bounds=1.0)
    with pytest.raises(TypeError, match=r"input_bounds: expected a pair.*length 3"):
        LQG(model, cost, input_bounds=(0.0, 1.0, 2.0))
    with pytest.raises(DimensionError, match=r"input_bounds: expected low .*\(1,\), found \(2,\)"):
        LQG(model, cost, input_bounds=([-1.0, -1.0], 1.0))
    with pytest.raises(ValueError, match="input_bounds: expected low <= high"):
        LQG(model, cost, input_bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="input_bounds: expected high without NaN"):
        LQG(model, cost, input_bounds=(-1.0, np.nan))


def test_predict_errors() -> None:
    ctrl = LQG(plant(), plant_cost())
    with pytest.raises(
        DimensionError, match=r"observation: expected shape \(1,\) or \(B, 1\).*found \(2,\)"
    ):
        ctrl.predict(np.ones(2))
    with pytest.raises(DimensionError, match=r"observation: .*found \(3, 2\)"):
        ctrl.predict(np.ones((3, 2)))
    with pytest.raises(DimensionError, match=r"observation: .*found \(2, 3, 1\)"):
        ctrl.predict(np.ones((2, 3, 1)))
    with pytest.raises(NonFiniteError, match=r"observation: .*found 1 infinite"):
        ctrl.predict(np.array([[np.inf], [0.0]]))
    with pytest.raises(TypeError, match="observation: expected an array-like of numbers"):
        ctrl.predict(np.array(["a"]))
    _, state = ctrl.predict(np.ones((3, 1)))
    with pytest.raises(BatchSizeError, match=r"observation: expected batch size 3 .*found 2"):
        ctrl.predict(np.ones((2, 1)), state)
    with pytest.raises(BatchSizeError, match=r"observation: expected batch size 3 .*found 2"):
        ctrl.predict(np.ones((2, 1)), state, episode_start=np.array([True, False]))
    with pytest.raises(BatchSizeError, match="episode_start: expected batch size 3, found 2"):
        ctrl.predict(np.ones((3, 1)), state, episode_start=np.array([True, False]))
    with pytest.raises(
        DimensionError, match=r"episode_start: expected shape \(3,\), found \(3, 1\)"
    ):
        ctrl.predict(np.ones((3, 1)), state, episode_start=np.ones((3, 1), dtype=bool))
    with pytest.raises(TypeError, match="episode_start: expected None or an array of bools"):
        ctrl.predict(np.ones((3, 1)), state, episode_start="yes")
    with pytest.raises(TypeError, match="state: expected the LQGState"):
        ctrl.predict(np.ones((3, 1)), state.estimator_state)
    with pytest.raises(DimensionError, match=r"y: expected shape \(B, 1\), found \(3,\)"):
        ctrl.step(None, np.ones(3))
    # resetting every row starts a new batch of another size
    a, state = ctrl.predict(np.ones((2, 1)), state, episode_start=np.ones(2, dtype=bool))
    assert a.shape == (2, 1) and state.u_prev.shape == (2, 1)


def test_episode_start_zeroes_u_prev() -> None:
    """The estimator of a row that starts an episode gets u_prev = 0, the others the last action."""
    model, cost = random_system(2, 1, 2, seed=6)
    ctrl = LQG(model, cost, MeasurementInversion(model.C.numpy()))
    y = np.random.default_rng(6).normal(size=(3, 2))
    a, state = ctrl.predict(y)
    assert np.all(a != 0)
    _, state = ctrl.predict(y, state, episode_start=np.array([False, True, False]))
    seen = state.estimator_state.u_prev.numpy()
    np.testing.assert_array_equal(seen[[0, 2]], a[[0, 2]])
    np.testing.assert_array_equal(seen[1], [0.0])


def test_estimate_is_the_kalman_filter_mean() -> None:
    import numpy as np

    from kalmannet_ctrl.controllers import LQG
    from kalmannet_ctrl.estimators import KalmanFilter
    from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost

    model = LinearGaussianModel(
        [[0.9, 0.2], [0.0, 0.8]], [[0.0], [1.0]], [[1.0, 0.0]], 0.1 * np.eye(2), [[0.5]]
    )
    ctrl = LQG(model, QuadraticCost(np.eye(2), [[0.1]]))
    y = np.array([[0.3], [-1.0], [2.0]])
    action, state = ctrl.predict(y)
    kf = KalmanFilter(model)
    x_hat, _ = kf.step(kf.init(3), y)
    np.testing.assert_allclose(ctrl.estimate(state).numpy(), x_hat.numpy(), rtol=1e-12)
    np.testing.assert_allclose(action, -(x_hat.numpy() @ ctrl.lqr.gain.numpy().T), rtol=1e-10)
    with pytest.raises(TypeError, match="state: expected an LQGState"):
        ctrl.estimate((1, 2))
