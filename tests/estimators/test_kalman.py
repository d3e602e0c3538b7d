"""KalmanFilter against filterpy, python-control and closed forms."""

from __future__ import annotations

import control
import numpy as np
import pytest
import torch
from filterpy.kalman import KalmanFilter as FilterPyKF

from kalmannet_ctrl.errors import RiccatiError
from kalmannet_ctrl.estimators import Estimator, KalmanFilter, steady_state_gain
from kalmannet_ctrl.models import LinearGaussianModel


def random_model(n_x: int, n_y: int, n_u: int, seed: int) -> LinearGaussianModel:
    """A random stable system with random (non-diagonal) noise covariances."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= 0.95 / max(abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(n_x, n_u)) if n_u else None
    C = rng.normal(size=(n_y, n_x))
    Lw = rng.normal(size=(n_x, n_x)) * 0.3
    Lv = rng.normal(size=(n_y, n_y)) * 0.5
    return LinearGaussianModel(
        A,
        B,
        C,
        process_cov=Lw @ Lw.T + 0.01 * np.eye(n_x),
        measurement_cov=Lv @ Lv.T + 0.1 * np.eye(n_y),
        x0_mean=rng.normal(size=n_x),
        x0_cov=np.eye(n_x) * 2.0,
    )


def filterpy_run(model: LinearGaussianModel, y: np.ndarray, u: np.ndarray | None):
    """filterpy's predict/update loop in our timing convention (no predict before y_0)."""
    m = model.numpy()
    kf = FilterPyKF(dim_x=model.n_x, dim_z=model.n_y, dim_u=model.n_u)
    kf.F, kf.H, kf.Q, kf.R = m["A"], m["C"], m["process_cov"], m["measurement_cov"]
    kf.B = m["B"] if model.n_u else None
    kf.x = m["x0_mean"].reshape(-1, 1).copy()
    kf.P = m["x0_cov"].copy()
    means, covs = [], []
    for t in range(y.shape[0]):
        if t > 0:
            kf.predict(u=u[t - 1].reshape(-1, 1) if u is not None else None)
        z = None if np.isnan(y[t]).any() else y[t].reshape(-1, 1)
        kf.update(z)
        means.append(kf.x.ravel().copy())
        covs.append(kf.P.copy())
    return np.array(means), np.array(covs)


def rel_err(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-step relative error ||a_t - b_t|| / ||b_t||."""
    axes = tuple(range(1, a.ndim))
    return np.sqrt(((a - b) ** 2).sum(axes)) / np.maximum(np.sqrt((b**2).sum(axes)), 1e-300)


DIMS = [(1, 1, 1), (2, 1, 1), (3, 2, 1), (4, 4, 2), (5, 3, 0), (6, 2, 3), (6, 6, 2)]


@pytest.mark.parametrize(("n_x", "n_y", "n_u"), DIMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_filterpy_step_by_step(n_x: int, n_y: int, n_u: int, seed: int) -> None:
    model = random_model(n_x, n_y, n_u, seed)
    T, B = 60, 3
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, T, n_u, dtype=torch.float64, generator=gen)
    traj = model.simulate(T, B, u=u, generator=gen)
    kf = KalmanFilter(model)
    batch = kf.filter(traj.y, traj.u)
    state = kf.init(B)
    stepped = []
    for t in range(T):
        x, state = kf.step(state, traj.y[:, t], traj.u[:, t - 1] if t else None)
        stepped.append(x)
    stepped = torch.stack(stepped, 1)
    for b in range(B):
        ref_mean, ref_cov = filterpy_run(
            model, traj.y[b].numpy(), traj.u[b].numpy() if n_u else None
        )
        assert rel_err(batch.mean[b].numpy(), ref_mean).max() <= 1e-10
        assert rel_err(batch.cov[b].numpy(), ref_cov).max() <= 1e-10
        assert rel_err(stepped[b].numpy(), ref_mean).max() <= 1e-10


@pytest.mark.parametrize("seed", [0, 3])
def test_missing_measurements_match_skipped_updates(seed: int) -> None:
    model = random_model(3, 2, 1, seed)
    T, B = 40, 4
    gen = torch.Generator().manual_seed(seed)
    traj = model.simulate(
        T, B, u=torch.randn(B, T, 1, dtype=torch.float64, generator=gen), generator=gen
    )
    y = traj.y.clone()
    mask = torch.rand(B, T, generator=gen) < 0.3
    mask[1, :10] = True  # a long gap, including y_0
    mask[:, 20] = True  # a step missing in every row
    y[mask] = float("nan")
    y[2, 5, 0] = float("nan")  # a partly missing row counts as missing
    mask[2, 5] = True
    res = KalmanFilter(model).filter(y, traj.u)
    assert torch.isfinite(res.mean).all() and torch.isfinite(res.cov).all()
    for b in range(B):
        yb = traj.y[b].numpy().copy()
        yb[mask[b].numpy()] = np.nan
        ref_mean, ref_cov = filterpy_run(model, yb, traj.u[b].numpy())
        assert rel_err(res.mean[b].numpy(), ref_mean).max() <= 1e-10
        assert rel_err(res.cov[b].numpy(), ref_cov).max() <= 1e-10


def test_steady_state_gain_matches_dlqe() -> None:
    for seed, (n_x, n_y) in enumerate([(1, 1), (2, 1), (4, 2), (6, 3)]):
        model = random_model(n_x, n_y, 1, seed)
        m = model.numpy()
        # control.dlqe uses the predictor form x̂_{t+1|t} = A x̂_{t|t-1} + B u + L (y - C x̂_{t|t-1});
        # its P is the a-priori covariance P_{t|t-1}.
        L, P, _ = control.dlqe(m["A"], np.eye(n_x), m["C"], m["process_cov"], m["measurement_cov"])
        ss = steady_state_gain(model)
        np.testing.assert_allclose(ss.predictor_gain.numpy(), L, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ss.cov_pred.numpy(), P, rtol=1e-9, atol=1e-12)
        # filter form: K = P C' (C P C' + V)^-1 and A K = L
        np.testing.assert_allclose(m["A"] @ ss.gain.numpy(), L, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("a", "q", "r"), [(0.9, 1.0, 1.0), (1.0, 0.01, 1.0), (1.5, 0.2, 3.0)])
def test_scalar_closed_form(a: float, q: float, r: float) -> None:
    # P = a^2 P r / (P + r) + q  <=>  P^2 + (r(1 - a^2) - q) P - q r = 0
    b = r * (1 - a**2) - q
    P = (-b + np.sqrt(b**2 + 4 * q * r)) / 2
    model = LinearGaussianModel([[a]], None, [[1.0]], [[q]], [[r]])
    ss = steady_state_gain(model)
    assert ss.cov_pred.item() == pytest.approx(P, rel=1e-12)
    assert ss.gain.item() == pytest.approx(P / (P + r), rel=1e-12)
    assert ss.cov.item() == pytest.approx(P * r / (P + r), rel=1e-12)
    # the time-varying filter converges to it
    res = KalmanFilter(model).filter(torch.zeros(1, 400, 1, dtype=torch.float64))
    assert res.cov[0, -1].item() == pytest.approx(P * r / (P + r), rel=1e-10)


def test_steady_state_mode_uses_constant_gain() -> None:
    model = random_model(3, 2, 1, 5)
    T, B = 80, 5
    gen = torch.Generator().manual_seed(5)
    traj = model.simulate(
        T, B, u=torch.randn(B, T, 1, dtype=torch.float64, generator=gen), generator=gen
    )
    kf = KalmanFilter(model, steady_state=True)
    res = kf.filter(traj.y, traj.u)
    # independent reference: the fixed-gain recursion written out in NumPy
    m = model.numpy()
    K = steady_state_gain(model).gain.numpy()
    x = np.tile(m["x0_mean"], (B, 1))
    y, u = traj.y.numpy(), traj.u.numpy()
    for t in range(T):
        if t:
            x = x @ m["A"].T + u[:, t - 1] @ m["B"].T
        x = x + (y[:, t] - x @ m["C"].T) @ K.T
        np.testing.assert_allclose(res.mean[:, t].numpy(), x, rtol=1e-10, atol=1e-10)
    # the reported covariance is that of the fixed-gain filter and converges to P_{t|t}
    np.testing.assert_allclose(res.cov[0, -1].numpy(), kf.steady.cov.numpy(), rtol=1e-8)
    # and it is never better than the optimal time-varying filter's
    opt = KalmanFilter(model).filter(traj.y, traj.u)
    tr_fixed = torch.diagonal(res.cov[0], dim1=-2, dim2=-1).sum(-1)
    tr_opt = torch.diagonal(opt.cov[0], dim1=-2, dim2=-1).sum(-1)
    assert (tr_fixed >= tr_opt - 1e-10).all()


def test_dare_failure_is_typed() -> None:
    # an unstable mode that is neither observed nor driven by noise: no stabilizing solution
    model = LinearGaussianModel(
        [[2.0, 0.0], [0.0, 0.5]], None, [[0.0, 1.0]], [[0.0, 0.0], [0.0, 1.0]], [[1.0]]
    )
    with pytest.raises(RiccatiError, match="model"):
        steady_state_gain(model)
    with pytest.raises(RiccatiError):
        KalmanFilter(model, steady_state=True)
    # the time-varying filter still runs (without the stationary fast path)
    res = KalmanFilter(model).filter(torch.zeros(2, 5, 1, dtype=torch.float64))
    assert torch.isfinite(res.mean).all()


def test_consistency_mse_matches_covariance_trace() -> None:
    """Over 10,000 trajectories the empirical MSE at each step matches tr(P_{t|t}).

    The error e_t ~ N(0, P_t) for a correctly specified filter, so |e_t|^2 has mean tr(P_t) and
    variance 2 tr(P_t^2): the standard error of the mean over N = 10,000 trajectories is
    sqrt(2 tr(P_t^2) / N). Each of the 50 steps is held to 5 standard errors (a chance failure
    has probability below 50 * 6e-7 with the fixed seed's data anyway).
    """
    model = random_model(3, 2, 1, 11)
    N, T = 10_000, 50
    gen = torch.Generator().manual_seed(11)
    traj = model.simulate(
        T, N, u=torch.randn(N, T, 1, dtype=torch.float64, generator=gen), generator=gen
    )
    res = KalmanFilter(model).filter(traj.y, traj.u)
    err = res.mean - traj.x
    mse = (err**2).sum(-1).mean(0)
    P = res.cov[0]
    trace = torch.diagonal(P, dim1=-2, dim2=-1).sum(-1)
    se = torch.sqrt(2 * torch.diagonal(P @ P, dim1=-2, dim2=-1).sum(-1) / N)
    assert ((mse - trace).abs() <= 5 * se).all(), (mse - trace) / se
    # unbiased: each component's mean error within 5 standard errors
    se_mean = torch.sqrt(torch.diagonal(P, dim1=-2, dim2=-1) / N)
    assert (err.mean(0).abs() <= 5 * se_mean).all()


def test_gradients_match_finite_differences() -> None:
    base = random_model(2, 1, 1, 2)
    gen = torch.Generator().manual_seed(2)
    traj = base.simulate(
        15, 3, u=torch.randn(3, 15, 1, dtype=torch.float64, generator=gen), generator=gen
    )

    def loss(A: torch.Tensor, W: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        model = base.replace(A=A, process_cov=0.5 * (W + W.mT), measurement_cov=V)
        res = KalmanFilter(model).filter(traj.y, traj.u)
        return ((res.mean - traj.x) ** 2).mean() + res.cov.diagonal(dim1=-2, dim2=-1).mean()

    args = tuple(
        t.detach().clone().requires_grad_(True)
        for t in (base.A, base.process_cov, base.measurement_cov)
    )
    assert torch.autograd.gradcheck(loss, args, eps=1e-6, atol=1e-7)


def test_step_filter_and_per_trajectory_agree() -> None:
    """Batching changes nothing: each row equals the same trajectory filtered alone."""
    model = random_model(3, 2, 2, 8)
    T, B = 30, 6
    gen = torch.Generator().manual_seed(8)
    traj = model.simulate(
        T, B, u=torch.randn(B, T, 2, dtype=torch.float64, generator=gen), generator=gen
    )
    kf = KalmanFilter(model)
    res = kf.filter(traj.y, traj.u)
    for b in range(B):
        single = kf.filter(traj.y[b : b + 1], traj.u[b : b + 1])
        torch.testing.assert_close(single.mean[0], res.mean[b], rtol=1e-12, atol=1e-12)


def test_reset_restarts_only_flagged_rows() -> None:
    model = random_model(2, 1, 1, 9)
    T, B = 20, 4
    gen = torch.Generator().manual_seed(9)
    traj = model.simulate(
        T, B, u=torch.randn(B, T, 1, dtype=torch.float64, generator=gen), generator=gen
    )
    kf = KalmanFilter(model)
    state = kf.init(B)
    for t in range(10):
        _, state = kf.step(state, traj.y[:, t], traj.u[:, t - 1] if t else None)
    mask = torch.tensor([True, False, True, False])
    state = kf.reset(state, mask)
    xs = []
    for t in range(10, T):
        x, state = kf.step(
            state, traj.y[:, t], traj.u[:, t - 1] if t > 10 else traj.u[:, t - 1] * 0
        )
        xs.append(x)
    xs = torch.stack(xs, 1)
    # reset rows equal a fresh filter started at t = 10
    fresh = kf.filter(traj.y[:, 10:], torch.cat([traj.u[:, 10:]], 1))
    torch.testing.assert_close(xs[mask], fresh.mean[mask], rtol=1e-12, atol=1e-12)
    # other rows equal the uninterrupted filter (its input at t = 10 was zeroed above)
    u_cont = traj.u.clone()
    u_cont[:, 9] = 0
    full = kf.filter(traj.y, u_cont)
    torch.testing.assert_close(xs[~mask], full.mean[~mask, 10:], rtol=1e-12, atol=1e-12)


def test_float32_and_protocol() -> None:
    model64 = random_model(2, 2, 1, 1)
    m = model64.numpy()
    model32 = LinearGaussianModel(**{k: v for k, v in m.items()}, dtype=torch.float32)
    kf = KalmanFilter(model32)
    assert isinstance(kf, Estimator)
    traj = model64.simulate(25, 3, generator=torch.Generator().manual_seed(1))
    res32 = kf.filter(traj.y.float())
    res64 = KalmanFilter(model64).filter(traj.y)
    assert res32.mean.dtype == torch.float32
    torch.testing.assert_close(res32.mean.double(), res64.mean, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_long_horizon_covariance_stays_spd() -> None:
    """100,000 steps in float64, with random gaps that force per-row covariances every step."""
    rng = np.random.default_rng(0)
    A = np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.0, 0.0, 0.999]])
    model = LinearGaussianModel(
        A, None, [[1.0, 0.0, 0.0]], np.diag([1e-8, 1e-6, 1e-4]), [[10.0]], x0_cov=np.eye(3) * 100
    )
    T, B = 100_000, 2
    y = torch.as_tensor(rng.normal(size=(B, T, 1)))
    y[torch.as_tensor(rng.random((B, T)) < 0.2)] = float("nan")
    kf = KalmanFilter(model)
    state = kf.init(B)
    worst_asym, min_eig = 0.0, np.inf
    with torch.no_grad():
        for t in range(T):
            _, state = kf.step(state, y[:, t])
            if t % 1000 == 999 or t == T - 1:
                P = state.cov
                worst_asym = max(worst_asym, float((P - P.mT).abs().max()))
                min_eig = min(min_eig, float(torch.linalg.eigvalsh(P).min()))
                assert bool((torch.linalg.cholesky_ex(P).info == 0).all())
    assert worst_asym == 0.0
    assert min_eig > 0


def test_cached_recursion_follows_in_place_model_changes() -> None:
    """Gains cached from the model are recomputed when its tensors change in place."""
    model = random_model(3, 2, 1, 12)
    gen = torch.Generator().manual_seed(12)
    traj = model.simulate(
        60, 4, u=torch.randn(4, 60, 1, dtype=torch.float64, generator=gen), generator=gen
    )
    for steady_state in (False, True):
        kf = KalmanFilter(model.replace(), steady_state=steady_state)
        kf.filter(traj.y, traj.u)  # fills the caches
        with torch.no_grad():
            kf.model.A.mul_(0.9)
            kf.model.measurement_cov.mul_(2.0)
        changed = kf.filter(traj.y, traj.u)
        fresh = KalmanFilter(kf.model.replace(A=kf.model.A.clone()), steady_state=steady_state)
        expected = fresh.filter(traj.y, traj.u)
        torch.testing.assert_close(changed.mean, expected.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(changed.cov, expected.cov, rtol=1e-12, atol=1e-12)
        model = random_model(3, 2, 1, 12)  # the replace() above shared tensors; start clean


def test_repeated_episodes_reuse_the_same_recursion() -> None:
    """Episodes restarted with reset() give the same estimates as filtering each one alone."""
    model = random_model(2, 1, 1, 13)
    kf = KalmanFilter(model)
    gen = torch.Generator().manual_seed(13)
    episodes = [
        model.simulate(
            150, 1, u=torch.randn(1, 150, 1, dtype=torch.float64, generator=gen), generator=gen
        )
        for _ in range(3)
    ]
    state = kf.init(1)
    with torch.no_grad():
        for i, ep in enumerate(episodes):
            if i:
                state = kf.reset(state, [True])
            xs = []
            for t in range(150):
                x, state = kf.step(state, ep.y[:, t], ep.u[:, t - 1] if t else None)
                xs.append(x)
            alone = KalmanFilter(model).filter(ep.y, ep.u)
            torch.testing.assert_close(torch.stack(xs, 1), alone.mean, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(state.cov, alone.cov[0, -1], rtol=1e-10, atol=1e-12)
