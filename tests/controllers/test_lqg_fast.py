"""LQG.predict's NumPy path (one NumPy observation, the Kalman filter on its cached recursion)
against the general path: same actions, dtypes and states, taken where it applies and only
there. The general path is the controller with both shortcuts (its own and the Kalman filter's
``step``) switched off by instance attributes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQG, LQGState
from kalmannet_ctrl.errors import BatchSizeError, NonFiniteError
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost

from .systems import plant, plant_cost, random_system


def record(ctrl: LQG) -> list[bool]:
    """Wrap ``ctrl._fast_predict``: the list gets, per ``predict`` call, whether it was taken."""
    taken: list[bool] = []
    original = ctrl._fast_predict

    def counting(*args: Any) -> Any:
        out = original(*args)
        taken.append(out is not None)
        return out

    ctrl._fast_predict = counting  # type: ignore[method-assign]
    return taken


def general(ctrl: LQG) -> LQG:
    """``ctrl`` without its NumPy path and without the Kalman filter's shortcut."""
    ctrl._fast_predict = lambda *args: None  # type: ignore[method-assign]
    ctrl.estimator._fast_step = lambda *args: None
    return ctrl


def stable_system(seed: int) -> tuple[LinearGaussianModel, QuadraticCost]:
    """random_system(3, 1, 2) with A scaled to spectral radius 0.9."""
    model, cost = random_system(3, 1, 2, seed)
    radius = max(abs(np.linalg.eigvals(model.A.numpy())))
    return model.replace(A=model.A * (0.9 / radius)), cost


def assert_same_state(a: LQGState, b: LQGState) -> None:
    torch.testing.assert_close(a.u_prev, b.u_prev, rtol=1e-10, atol=1e-12)
    est_a, est_b = a.estimator_state, b.estimator_state
    torch.testing.assert_close(est_a.mean, est_b.mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(est_a.cov, est_b.cov, rtol=0, atol=0)
    assert (est_a.fresh is None) == (est_b.fresh is None)


def drive(ctrl: LQG, obs: np.ndarray, starts: set[int]) -> tuple[list[np.ndarray], list[Any]]:
    """``predict`` along obs (T, n_y), one observation at a time; episode_start at ``starts``."""
    state, actions, states = None, [], []
    for t in range(obs.shape[0]):
        start = np.array([t in starts])
        action, state = ctrl.predict(obs[t], state, start)
        actions.append(action)
        states.append(state)
    return actions, states


CASES = {
    "unstable 3x2x2": lambda: random_system(3, 2, 2, seed=0),
    "unstable plant": lambda: (plant(x0_mean=[1.0, -1.0], x0_cov=np.eye(2)), plant_cost()),
    "stable 3x1x2": lambda: stable_system(seed=1),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", ["float32 (n_y,)", "float64 (1, n_y)"])
def test_same_actions_and_states_as_the_general_path(case: str, layout: str) -> None:
    """Three episodes (episode_start at 60 and 130), missing measurements in the second one,
    bounds active about half of the time (set from the unbounded controller's actions)."""
    model, cost = CASES[case]()
    T, starts, missing = 200, {0, 60, 130}, (80, 81, 100)
    obs = 3 * np.random.default_rng(0).normal(size=(T, model.n_y))
    obs[list(missing)] = np.nan
    obs[100, 1:] = 0.0  # a partly missing row counts as missing
    obs = obs.astype(np.float32) if layout.startswith("float32") else obs[:, None, :]
    free, _ = drive(general(LQG(model, cost)), obs, starts)
    free_u = np.concatenate(free).reshape(T, model.n_u)
    bounds = tuple(np.quantile(free_u, [0.25, 0.7], axis=0))  # each input's, active about half
    make = lambda: LQG(model, cost, input_bounds=bounds)  # noqa: E731
    fast = make()
    taken = record(fast)
    actions, states = drive(fast, obs, starts)
    ref_actions, ref_states = drive(general(make()), obs, starts)
    for t in range(T):
        assert actions[t].dtype == ref_actions[t].dtype == obs.dtype
        assert actions[t].shape == ref_actions[t].shape
        np.testing.assert_allclose(actions[t], ref_actions[t], rtol=1e-10, atol=1e-12)
        assert_same_state(states[t], ref_states[t])
    u = np.concatenate(ref_actions).reshape(T, model.n_u)
    assert 0.2 < (np.isclose(u, bounds[0]) | np.isclose(u, bounds[1])).mean() < 0.8
    # taken at every step that continues an episode on the recursion from the prior; never at
    # a start, a missing measurement or the step after one
    continuing = [t for t in range(T) if t not in starts and not 80 <= t < 130]
    assert all(taken[t] for t in continuing)
    assert not any(taken[t] for t in (0, 60, 80, 81, 82, 100, 101, 130))


def test_state_handed_between_the_paths() -> None:
    """The NumPy path's state continues on the tensor path (``step``, ``predict`` without the
    shortcut) and back, with the same results as the general path all along."""
    model, cost = random_system(3, 2, 2, seed=2)
    obs = np.random.default_rng(2).normal(size=(60, 2)).astype(np.float32)
    ctrl = LQG(model, cost, input_bounds=(-0.5, 0.5))
    taken = record(ctrl)
    numpy_path = ctrl._fast_predict
    ref = general(LQG(model, cost, input_bounds=(-0.5, 0.5)))
    state, ref_state = None, None
    for t in range(60):
        how = ("predict", "step", "general")[t % 3]
        ctrl._fast_predict = numpy_path if how == "predict" else (lambda *a: None)
        if how == "step":
            u, state = ctrl.step(state, torch.as_tensor(obs[t : t + 1], dtype=torch.float64))
            action = u.numpy().astype(np.float32)[0]
        else:
            action, state = ctrl.predict(obs[t], state)
        ref_action, ref_state = ref.predict(obs[t], ref_state)
        np.testing.assert_allclose(action, ref_action, rtol=1e-10, atol=1e-12)
        assert_same_state(state, ref_state)
    assert sum(taken) == 19  # every "predict" step but the first (state=None: a new batch)


def test_not_taken_where_it_does_not_apply() -> None:
    model, cost = random_system(2, 1, 2, seed=3)
    ctrl = LQG(model, cost)
    taken = record(ctrl)
    y = np.array([0.3, -0.2], dtype=np.float32)
    _, state = ctrl.predict(y)  # a new batch
    _, state = ctrl.predict(y, state, episode_start=np.array([False]))
    assert taken == [False, True]
    calls = [
        (y, state, np.array([True])),  # a reset
        (y, state, True),
        (y[None].repeat(2, 0), None, None),  # a batch
        (y.tolist(), state, None),  # not a NumPy array
        (torch.as_tensor(y), state, None),
        (y.astype(np.int64), state, None),
        (y, state, [False]),  # episode_start not as NumPy
        (np.array([np.nan, 0.1], dtype=np.float32), state, None),  # missing
    ]
    for obs, st, start in calls:
        ref = general(LQG(model, cost)).predict(obs, st, start)
        got = ctrl.predict(obs, st, start)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-12, atol=1e-14)
    assert not any(taken[2:])
    # a model changed in place: its Kalman filter's recursion is no longer the cached one
    with torch.no_grad():
        model.measurement_cov.mul_(2.0)
    action, _ = ctrl.predict(y, state)
    assert not taken[-1]
    ref_action, _ = general(LQG(model, cost)).predict(y, state)
    np.testing.assert_allclose(action, ref_action, rtol=1e-12, atol=1e-14)


def test_not_taken_where_the_estimator_needs_gradients_or_differs() -> None:
    model, cost = random_system(2, 1, 2, seed=4)
    y = np.array([0.3, -0.2])
    # a Kalman filter whose model needs gradients, and an estimator of another dtype
    grad_model = model.replace(process_cov=model.process_cov.clone().requires_grad_(True))
    m32 = LinearGaussianModel(**model.numpy(), dtype=torch.float32)
    for estimator in (KalmanFilter(grad_model), KalmanFilter(m32)):
        ctrl = LQG(model, cost, estimator)
        taken = record(ctrl)
        ref = general(LQG(model, cost, KalmanFilter(estimator.model)))
        state = ref_state = None
        for _ in range(5):
            action, state = ctrl.predict(y, state)
            ref_action, ref_state = ref.predict(y, ref_state)
            np.testing.assert_allclose(action, ref_action, rtol=1e-6, atol=1e-7)
            assert state.estimator_state.mean.dtype == estimator.model.dtype
        assert not any(taken)

    # a subclass with its own act keeps it
    class Noisy(LQG):
        def act(self, state: Any, y: Any, **kwargs: Any) -> Any:
            u, state = super().act(state, y, **kwargs)
            return u + 1.0, state._replace(u_prev=u + 1.0)

    noisy = Noisy(model, cost)
    taken = record(noisy)
    _, state = noisy.predict(y)
    noisy.predict(y, state)
    assert taken == [False, False]


def test_errors_from_a_state_on_the_recursion() -> None:
    ctrl = LQG(plant(), plant_cost(), input_bounds=(-1.0, 1.0))
    _, state = ctrl.predict(np.array([0.5], dtype=np.float32))
    _, state = ctrl.predict(np.array([0.5], dtype=np.float32), state)
    with pytest.raises(NonFiniteError, match=r"observation: .*found 1 infinite"):
        ctrl.predict(np.array([np.inf], dtype=np.float32), state)
    with pytest.raises(BatchSizeError, match=r"observation: expected batch size 1 .*found 2"):
        ctrl.predict(np.ones((2, 1), dtype=np.float32), state)
    with pytest.raises(BatchSizeError, match="episode_start: expected batch size 1, found 2"):
        ctrl.predict(np.ones(1, dtype=np.float32), state, episode_start=np.zeros(2, dtype=bool))
    with pytest.raises(TypeError, match="state: expected the LQGState"):
        ctrl.predict(np.ones(1, dtype=np.float32), state.estimator_state)
    # every row reset: a new batch of another size
    action, new = ctrl.predict(np.ones((2, 1)), state, episode_start=np.ones(2, dtype=bool))
    assert action.shape == (2, 1) and new.u_prev.shape == (2, 1)


def test_follows_changes_of_the_gain_and_the_bounds() -> None:
    """The NumPy copies of the gain and bounds follow in-place changes and new objects."""
    model, cost = random_system(3, 2, 2, seed=5)
    obs = np.random.default_rng(5).normal(size=(12, 2))
    ctrl = LQG(model, cost, input_bounds=(-0.5, 0.5))
    taken = record(ctrl)
    ref = general(LQG(model, cost, input_bounds=(-0.5, 0.5)))
    state = ref_state = None
    for t in range(12):
        for c in (ctrl, ref):
            with torch.no_grad():
                if t == 4:
                    c.lqr.gain.mul_(0.5)
                if t == 7:
                    c.input_bounds[1].fill_(0.1)
                if t == 9:
                    low = torch.full((2,), -0.2, dtype=torch.float64)
                    c.input_bounds = (low, c.input_bounds[1])
        action, state = ctrl.predict(obs[t], state)
        ref_action, ref_state = ref.predict(obs[t], ref_state)
        np.testing.assert_allclose(action, ref_action, rtol=1e-10, atol=1e-12)
    assert all(taken[1:])
