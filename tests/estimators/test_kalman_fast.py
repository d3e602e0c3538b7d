"""KalmanFilter.step's one-trajectory shortcut against the general path.

Along the recursion the filter caches (from the model's prior, or converged), a B = 1 step is one
affine map of (x̂_{t-1}, y_t, u_{t-1}). These tests run the same steps with the shortcut and with
it switched off (an instance attribute shadowing ``_fast_step``), and record where it was taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from kalmannet_ctrl.errors import BatchSizeError, DimensionError, NonFiniteError
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.estimators.base import GaussianState
from kalmannet_ctrl.models import LinearGaussianModel


def system(
    n_x: int, n_y: int, n_u: int, radius: float, seed: int, dtype: torch.dtype = torch.float64
) -> LinearGaussianModel:
    """A random system whose A has spectral radius ``radius`` (> 1: open-loop unstable)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= radius / max(abs(np.linalg.eigvals(A)))
    Lw = rng.normal(size=(n_x, n_x)) * 0.3
    Lv = rng.normal(size=(n_y, n_y)) * 0.5
    return LinearGaussianModel(
        A,
        rng.normal(size=(n_x, n_u)) if n_u else None,
        rng.normal(size=(n_y, n_x)),
        process_cov=Lw @ Lw.T + 0.05 * np.eye(n_x),
        measurement_cov=Lv @ Lv.T + 0.1 * np.eye(n_y),
        x0_mean=rng.normal(size=n_x),
        x0_cov=np.eye(n_x),
        dtype=dtype,
    )


def record(kf: KalmanFilter) -> list[bool]:
    """Wrap ``kf._fast_step``: the returned list gets, per ``step`` call, whether it was taken."""
    taken: list[bool] = []
    original = kf._fast_step

    def counting(state: Any, y: Any, u_prev: Any) -> Any:
        out = original(state, y, u_prev)
        taken.append(out is not None)
        return out

    kf._fast_step = counting  # type: ignore[method-assign]
    return taken


def general(kf: KalmanFilter) -> KalmanFilter:
    """``kf`` with the shortcut switched off: every step takes the general path."""
    kf._fast_step = lambda state, y, u_prev: None  # type: ignore[method-assign]
    return kf


def episodes(
    kf: KalmanFilter, y: torch.Tensor, u: torch.Tensor | None, resets: set[int]
) -> tuple[list[torch.Tensor], list[GaussianState]]:
    """Step along y (1, T, n_y), restarting (``reset``) before the steps in ``resets``; u_{t-1}
    is None at the first step of each episode and every fifth step (zero input)."""
    state, means, states = kf.init(1), [], []
    first = True
    for t in range(y.shape[1]):
        if t in resets:
            state, first = kf.reset(state, [True]), True
        u_prev = None if (u is None or first or t % 5 == 0) else u[:, t - 1]
        mean, state = kf.step(state, y[:, t], u_prev)
        means.append(mean)
        states.append(state)
        first = False
    return means, states


def data(model: LinearGaussianModel, T: int, seed: int, missing: tuple[int, ...] = ()) -> tuple:
    """Random measurements and inputs (the filter is stable even where A is not), NaN rows at
    the steps in ``missing`` (the first one only partly NaN)."""
    gen = torch.Generator().manual_seed(seed)
    y = 2 * torch.randn(1, T, model.n_y, dtype=model.dtype, generator=gen)
    for i, t in enumerate(missing):
        y[0, t, : 1 if i == 0 else None] = float("nan")
    u = torch.randn(1, T, model.n_u, dtype=model.dtype, generator=gen) if model.n_u else None
    return y, u


@pytest.mark.parametrize(
    ("n_x", "n_y", "n_u", "radius"),
    [(1, 1, 1, 0.9), (3, 2, 1, 0.95), (4, 2, 2, 1.2), (3, 1, 0, 1.2), (6, 3, 2, 1.1)],
)
@pytest.mark.parametrize("grad", [False, True])
def test_same_estimates_and_states_as_the_general_path(
    n_x: int, n_y: int, n_u: int, radius: float, grad: bool
) -> None:
    """Three episodes (resets at 70 and 150), missing measurements in the second one; with grad
    mode on and off (the model needs no gradient, so the shortcut applies in both)."""
    model = system(n_x, n_y, n_u, radius, seed=n_x + n_u)
    y, u = data(model, 220, seed=n_x, missing=(90, 91, 120))
    resets = {70, 150}
    with torch.set_grad_enabled(grad):
        fast = KalmanFilter(model)
        taken = record(fast)
        means, states = episodes(fast, y, u, resets)
        ref_means, ref_states = episodes(general(KalmanFilter(model)), y, u, resets)
    for t, (a, b, sa, sb) in enumerate(zip(means, ref_means, states, ref_states, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"step {t}")
        torch.testing.assert_close(sa.cov, sb.cov, rtol=0, atol=0, msg=f"step {t}")
        assert sa.fresh is None and sa.mean is a
    # taken on the recursion: every step of the first and third episodes, the second one up
    # to its first missing measurement; never at a missing measurement or just after one
    on_recursion = [t for t in range(220) if t < 90 or t >= 150]
    assert all(taken[t] for t in on_recursion)
    assert not any(taken[t] for t in (90, 91, 92, 120, 121))


def test_steps_handed_between_the_paths_share_the_cached_recursion() -> None:
    """A state from the shortcut continues on the general path and back: from the same state
    both paths end at the same covariance object (the cache's) and the same estimate."""
    model = system(3, 2, 1, 1.2, seed=3)
    y, u = data(model, 60, seed=3)
    kf = KalmanFilter(model)
    shortcut = kf._fast_step
    off = general(KalmanFilter(model))._fast_step
    ref = general(KalmanFilter(model))
    state, ref_state = kf.init(1), ref.init(1)
    for t in range(60):
        u_prev = u[:, t - 1] if t else None
        paths = (shortcut, off) if t % 3 else (off, shortcut)
        kf._fast_step = paths[0]  # type: ignore[method-assign]
        mean, new = kf.step(state, y[:, t], u_prev)
        kf._fast_step = paths[1]  # type: ignore[method-assign]
        other_mean, other = kf.step(state, y[:, t], u_prev)
        assert other.cov is new.cov
        torch.testing.assert_close(other_mean, mean, rtol=1e-10, atol=1e-12)
        ref_mean, ref_state = ref.step(ref_state, y[:, t], u_prev)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-10, atol=1e-12)
        state = new
    assert shortcut(state, y[:, 0], u[:, 0]) is not None  # it was in use to the end


def test_not_taken_off_the_cached_recursion() -> None:
    """A prior other than the model's is not on the recursion: the general path runs until the
    covariance has converged to the stationary one, the shortcut from then on."""
    model = system(2, 1, 1, 0.9, seed=4)
    y, u = data(model, 400, seed=4)
    kf = KalmanFilter(model)
    taken = record(kf)
    ref = general(KalmanFilter(model))
    prior = {"x0_mean": [1.0, -1.0], "x0_cov": 5 * np.eye(2)}
    state, ref_state = kf.init(1, **prior), ref.init(1, **prior)
    converged_at = None
    for t in range(400):
        u_prev = u[:, t - 1] if t else None
        mean, state = kf.step(state, y[:, t], u_prev)
        ref_mean, ref_state = ref.step(ref_state, y[:, t], u_prev)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-10, atol=1e-12)
        if converged_at is None and state.cov is kf.steady.cov:
            converged_at = t
    assert converged_at is not None and 5 < converged_at < 399
    assert not any(taken[: converged_at + 1]) and all(taken[converged_at + 1 :])


def test_not_taken_where_a_gradient_with_respect_to_the_model_is_needed() -> None:
    base = system(2, 1, 1, 1.1, seed=5)
    y, u = data(base, 30, seed=5)
    A = base.A.clone().requires_grad_(True)
    kf = KalmanFilter(base.replace(A=A))
    taken = record(kf)
    state = kf.init(1)
    for t in range(30):
        mean, state = kf.step(state, y[:, t], u[:, t - 1] if t else None)
    assert not any(taken)
    assert mean.requires_grad  # the shortcut's constants would have cut the graph to A
    (grad,) = torch.autograd.grad(mean.sum(), A)
    A_ref = base.A.clone().requires_grad_(True)
    last = KalmanFilter(base.replace(A=A_ref)).filter(y, u).mean[:, -1]
    (expected,) = torch.autograd.grad(last.sum(), A_ref)
    torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)
    # without gradients (no_grad) the same filter takes it
    with torch.no_grad():
        state = kf.init(1)
        for t in range(30):
            _, state = kf.step(state, y[:, t], u[:, t - 1] if t else None)
    assert all(taken[30:])


def test_gradients_with_respect_to_the_inputs_pass_through() -> None:
    model = system(3, 2, 1, 1.2, seed=6)
    y, u = data(model, 20, seed=6)
    grads, taken = [], []
    for kf in (KalmanFilter(model), general(KalmanFilter(model))):
        taken.append(record(kf))
        y_in = y.clone().requires_grad_(True)
        state = kf.init(1)
        for t in range(20):
            mean, state = kf.step(state, y_in[:, t], u[:, t - 1] if t else None)
        grads.append(torch.autograd.grad(mean.sum(), y_in)[0])
    assert all(taken[0]) and not any(taken[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_not_taken_after_the_model_changes_in_place() -> None:
    model = system(2, 1, 1, 0.9, seed=7)
    y, u = data(model, 40, seed=7)
    kf = KalmanFilter(model.replace(A=model.A.clone()))
    taken = record(kf)
    state = kf.init(1)
    for t in range(20):
        _, state = kf.step(state, y[:, t], u[:, t - 1] if t else None)
    with torch.no_grad():
        kf.model.A.mul_(0.5)
    mean, after = kf.step(state, y[:, 20], u[:, 19])
    assert all(taken[:20]) and not taken[20]
    ref_mean, ref_after = general(KalmanFilter(kf.model)).step(state, y[:, 20], u[:, 19])
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=0)
    torch.testing.assert_close(after.cov, ref_after.cov, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_other_input_types_and_dtypes(dtype: torch.dtype) -> None:
    """float32 tensors into a float64 filter (converted), NumPy rows (the general path), a
    float32 filter: the same results and dtypes as the general path."""
    model = system(3, 2, 1, 0.95, seed=8, dtype=dtype)
    y, u = data(model, 30, seed=8)
    kf, ref = KalmanFilter(model), general(KalmanFilter(model))
    taken = record(kf)
    state, ref_state = kf.init(1), ref.init(1)
    for t in range(30):
        y_t = y[:, t].float() if t % 2 else y[:, t].numpy()
        u_prev = u[:, t - 1] if t else None
        mean, state = kf.step(state, y_t, u_prev)
        ref_mean, ref_state = ref.step(ref_state, y_t, u_prev)
        assert mean.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(mean, ref_mean, rtol=tol, atol=tol)
    assert taken[1::2] == [True] * 15 and not any(taken[::2])


def test_errors_are_the_general_paths() -> None:
    """From a state on the recursion, invalid arguments still raise the general path's errors."""
    model = system(2, 1, 1, 0.9, seed=9)
    kf = KalmanFilter(model)
    state = kf.init(1)
    one = torch.ones(1, 1, dtype=torch.float64)
    for _ in range(3):
        _, state = kf.step(state, one, one)
    assert kf._affine_step(state) is not None
    with pytest.raises(NonFiniteError, match="y: found inf"):
        kf.step(state, torch.tensor([[float("inf")]], dtype=torch.float64), one)
    with pytest.raises(NonFiniteError, match="u_prev: expected finite values"):
        kf.step(state, one, torch.tensor([[float("nan")]], dtype=torch.float64))
    with pytest.raises(DimensionError, match=r"y: expected shape \(1, 1\), found \(1, 2\)"):
        kf.step(state, torch.ones(1, 2, dtype=torch.float64), one)
    with pytest.raises(DimensionError, match=r"u_prev: expected shape \(1, 1\)"):
        kf.step(state, one, torch.ones(1, 2, dtype=torch.float64))
    with pytest.raises(BatchSizeError, match="y: expected batch size 1, found 2"):
        kf.step(state, torch.ones(2, 1, dtype=torch.float64), None)
    with pytest.raises(TypeError, match="y: expected a real floating tensor"):
        kf.step(state, torch.ones(1, 1, dtype=torch.complex128), one)
    with pytest.raises(TypeError, match="state: expected a GaussianState"):
        kf.step(tuple(state), one, one)
    # a missing measurement is predicted over, as on the general path
    mean, _ = kf.step(state, torch.tensor([[float("nan")]], dtype=torch.float64), one)
    expected = general(KalmanFilter(model)).step(state, torch.full((1, 1), float("nan")), one)
    torch.testing.assert_close(mean, expected[0], rtol=0, atol=0)
