"""SystemModel, NonlinearModel, Trajectory and psd_sqrt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kalmannet_ctrl.errors import (
    DimensionError,
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSymmetricError,
)
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel, SystemModel, psd_sqrt

A = [[0.9, 0.2], [-0.1, 0.8]]
B = [[0.5], [1.0]]
C = [[1.0, 0.0], [0.3, 1.0]]
# Non-diagonal covariances whose Cholesky factor L has L'L far from LL', so a transposed square
# root would fail the statistical test below.
Q = [[1.0, 0.6], [0.6, 0.5]]
R = [[0.3, -0.2], [-0.2, 0.4]]
P0 = [[2.0, 0.5], [0.5, 1.0]]
M0 = [1.0, -2.0]


def make_linear(**kw) -> LinearGaussianModel:
    args = dict(A=A, B=B, C=C, process_cov=Q, measurement_cov=R, x0_mean=M0, x0_cov=P0)
    args.update(kw)
    return LinearGaussianModel(**args)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_cov_close(samples: torch.Tensor, cov: torch.Tensor, mean: torch.Tensor | None = None):
    """Sample mean and covariance within 5 standard errors of the truth (entrywise).

    Standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / N); of a mean entry:
    sqrt(S_ii / N). With a fixed seed the test is deterministic; 5 standard errors make a correct
    implementation pass for essentially every seed, while a wrong square root (e.g. L'L instead of
    LL') is off by dozens of standard errors.
    """
    N = samples.shape[0]
    d = torch.diagonal(cov)
    if mean is None:
        mean = torch.zeros_like(d)
    assert torch.all((samples.mean(0) - mean).abs() <= 5 * torch.sqrt(d / N))
    centered = samples - mean
    emp = centered.T @ centered / N
    se = torch.sqrt((torch.outer(d, d) + cov**2) / N)
    assert torch.all((emp - cov).abs() <= 5 * se), (emp, cov)


# -- simulate -------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 10])
def test_simulate_shapes(batch):
    m = make_linear()
    tr = m.simulate(7, batch, generator=gen())
    assert tr.x.shape == (batch, 7, 2)
    assert tr.y.shape == (batch, 7, 2)
    assert tr.u.shape == (batch, 7, 1)
    assert tr.x.dtype == torch.float64
    assert torch.all(tr.u == 0)


def test_simulate_noise_statistics():
    m = make_linear()
    N = 40_000
    tr = m.simulate(2, N, generator=gen(1))
    Qt, Rt = m.process_cov, m.measurement_cov
    x0, x1 = tr.x[:, 0], tr.x[:, 1]
    assert_cov_close(x0, m.x0_cov, m.x0_mean)
    assert_cov_close(x1 - x0 @ m.A.T, Qt)  # zero input: x1 = A x0 + w0
    assert_cov_close(tr.y[:, 0] - x0 @ m.C.T, Rt)
    assert_cov_close(tr.y[:, 1] - x1 @ m.C.T, Rt)
    # the noise terms are independent of each other: cross-covariance of w0 and v0 is ~0
    w0, v0 = x1 - x0 @ m.A.T, tr.y[:, 0] - x0 @ m.C.T
    cross = w0.T @ v0 / N
    se = torch.sqrt(torch.outer(torch.diagonal(Qt), torch.diagonal(Rt)) / N)
    assert torch.all(cross.abs() <= 5 * se)


def test_simulate_is_reproducible_with_generator():
    m = make_linear()
    a = m.simulate(20, 4, generator=gen(123))
    b = m.simulate(20, 4, generator=gen(123))
    c = m.simulate(20, 4, generator=gen(124))
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.x, c.x)


def test_simulate_open_loop_input_noise_free():
    m = make_linear(process_cov=np.zeros((2, 2)))  # noise-free state: x_{t+1} = A x_t + B u_t
    u = torch.linspace(-1, 1, 5, dtype=torch.float64).reshape(5, 1)  # (T, n_u), broadcast over B
    x0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    tr = m.simulate(5, 2, u=u, x0=x0, generator=gen())
    At, Bt = m.A, m.B
    x = x0
    for t in range(5):
        torch.testing.assert_close(tr.x[:, t], x)
        x = x @ At.T + u[t] @ Bt.T
    torch.testing.assert_close(tr.u, u.expand(2, 5, 1))


def test_simulate_callable_policy_sees_measurements():
    m = make_linear()
    seen = []

    def policy(t, y):
        seen.append((t, y.clone()))
        return -0.5 * y[:, :1]

    tr = m.simulate(6, 3, policy=policy, generator=gen())
    assert [t for t, _ in seen] == list(range(6))
    for t, y in seen:
        torch.testing.assert_close(y, tr.y[:, t])
        torch.testing.assert_close(tr.u[:, t], -0.5 * y[:, :1])


def test_simulate_controller_predict_protocol():
    class Ctrl:
        def __init__(self):
            self.starts = []

        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            assert isinstance(observation, np.ndarray) and observation.shape == (2, 2)
            self.starts.append(episode_start.copy())
            count = 0 if state is None else state + 1
            return np.full((2, 1), float(count)), count

    ctrl = Ctrl()
    tr = make_linear().simulate(4, 2, policy=ctrl, generator=gen())
    assert [bool(s.all()) for s in ctrl.starts] == [True, False, False, False]
    torch.testing.assert_close(tr.u[0, :, 0], torch.arange(4, dtype=torch.float64))


def test_sample_x0_statistics_and_known_initial_state():
    m = make_linear()
    x0 = m.sample_x0(40_000, generator=gen(5))
    assert_cov_close(x0, m.x0_cov, m.x0_mean)
    known = make_linear(x0_cov=None)
    assert torch.equal(known.sample_x0(3, generator=gen()), known.x0_mean.expand(3, 2))


# -- psd_sqrt -------------------------------------------------------------------------------------
def test_psd_sqrt_definite_singular_and_batched():
    pd = torch.tensor(Q, dtype=torch.float64)
    v = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    singular = v @ v.T
    for M in (pd, singular, torch.zeros(2, 2, dtype=torch.float64)):
        L = psd_sqrt(M)
        torch.testing.assert_close(L @ L.mT, M, atol=1e-12, rtol=0)
    L = psd_sqrt(pd)
    assert torch.equal(L, torch.linalg.cholesky(pd))  # Cholesky where it exists
    batch = torch.stack([pd, singular])
    Lb = psd_sqrt(batch)
    torch.testing.assert_close(Lb @ Lb.mT, batch, atol=1e-12, rtol=0)


# -- NonlinearModel and Jacobians -----------------------------------------------------------------
def _f(x, u):
    return torch.stack(
        [
            x[:, 0] + 0.1 * torch.sin(x[:, 1]) * x[:, 0] + 0.2 * u[:, 0] ** 2,
            0.9 * x[:, 1] + 0.05 * x[:, 0] ** 3 - 0.3 * torch.tanh(u[:, 0] * x[:, 1]),
        ],
        dim=-1,
    )


def _h(x):
    return torch.stack([torch.atan2(x[:, 1], x[:, 0]), x.square().sum(-1), x[:, 0] * x[:, 1]], -1)


def make_nonlinear(**kw):
    args = dict(n_x=2, n_y=3, n_u=1, process_cov=0.1 * np.eye(2), measurement_cov=np.eye(3))
    args.update(kw)
    return NonlinearModel(_f, _h, **args)


def fd_jacobian(fn, z, eps=1e-6):
    """Central finite differences of fn: (n,) -> (m,), in float64."""
    cols = []
    for i in range(z.shape[0]):
        e = torch.zeros_like(z)
        e[i] = eps
        cols.append((fn(z + e) - fn(z - e)) / (2 * eps))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("batch", [1, 10])
def test_autograd_jacobians_match_finite_differences(batch):
    m = make_nonlinear()
    g = gen(3)
    x = torch.randn(batch, 2, generator=g, dtype=torch.float64) + 0.5
    u = torch.randn(batch, 1, generator=g, dtype=torch.float64)
    F, H = m.jacobians(x, u)
    G = m.input_jacobian(x, u)
    assert F.shape == (batch, 2, 2) and H.shape == (batch, 3, 2) and G.shape == (batch, 2, 1)
    for b in range(batch):
        fx = fd_jacobian(lambda z, b=b: m.f(z[None], u[b : b + 1])[0], x[b])
        fu = fd_jacobian(lambda v, b=b: m.f(x[b : b + 1], v[None])[0], u[b])
        hx = fd_jacobian(lambda z: m.h(z[None])[0], x[b])
        torch.testing.assert_close(F[b], fx, atol=1e-8, rtol=1e-7)
        torch.testing.assert_close(G[b], fu, atol=1e-8, rtol=1e-7)
        torch.testing.assert_close(H[b], hx, atol=1e-8, rtol=1e-7)


def test_nonlinear_model_uses_exact_jacobians_and_zero_input():
    calls = []

    def fj(x, u):
        calls.append(u.clone())
        return torch.zeros(x.shape[0], 2, 2, dtype=x.dtype)

    m = make_nonlinear(f_jacobian=fj, h_jacobian=lambda x: torch.ones(x.shape[0], 3, 2))
    x = torch.ones(4, 2, dtype=torch.float64)
    assert torch.equal(m.f_jacobian(x), torch.zeros(4, 2, 2, dtype=torch.float64))
    assert torch.equal(calls[0], torch.zeros(4, 1, dtype=torch.float64))  # u=None -> zeros
    assert torch.equal(m.h_jacobian(x), torch.ones(4, 3, 2))
    torch.testing.assert_close(m.f(x), _f(x, torch.zeros(4, 1, dtype=torch.float64)))


def test_nonlinear_model_without_input_has_empty_input_jacobian():
    m = NonlinearModel(
        lambda x, u: 0.5 * x,
        lambda x: x,
        n_x=2,
        n_y=2,
        process_cov=np.eye(2),
        measurement_cov=np.eye(2),
    )
    x = torch.ones(3, 2, dtype=torch.float64)
    assert m.n_u == 0
    assert m.input_jacobian(x).shape == (3, 2, 0)
    torch.testing.assert_close(
        m.f_jacobian(x), 0.5 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    )


# -- copies and parameters ------------------------------------------------------------------------
def test_replace_changes_only_what_is_asked():
    m = make_nonlinear(dt=0.1, name="toy", params={"k": 1.0})
    m2 = m.replace(process_cov=4 * m.process_cov)
    assert isinstance(m2, NonlinearModel)
    torch.testing.assert_close(m2.process_cov, 4 * m.process_cov)
    assert torch.equal(m2.measurement_cov, m.measurement_cov)
    assert (m2.dt, m2.name, m2.params, m2.n_u) == (0.1, "toy", {"k": 1.0}, 1)
    x = torch.ones(2, 2, dtype=torch.float64)
    torch.testing.assert_close(m2.f(x), m.f(x))
    torch.testing.assert_close(m.process_cov, 0.1 * torch.eye(2, dtype=torch.float64))  # unchanged
    with pytest.raises(TypeError, match=r"replace: unknown argument.*'Q'"):
        m.replace(Q=np.eye(2))


def test_with_params_without_factory_raises():
    with pytest.raises(TypeError, match="with_params"):
        make_nonlinear().with_params(k=1.0)


def test_with_params_rejects_unknown_names():
    m = make_nonlinear(params={"k": 1.0}, factory=lambda k: make_nonlinear(params={"k": k}))
    assert m.with_params(k=2.0).params == {"k": 2.0}
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['j'\]"):
        m.with_params(j=2.0)


def test_dtype_follows_tensor_covariances():
    m = make_nonlinear(process_cov=torch.eye(2, dtype=torch.float32), measurement_cov=np.eye(3))
    assert m.dtype == torch.float32 and m.measurement_cov.dtype == torch.float32
    assert m.x0_mean.dtype == torch.float32


# -- error paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_x": 0}, ValueError, "n_x: expected an integer >= 1, found 0"),
        ({"n_u": -1}, ValueError, "n_u: expected an integer >= 0, found -1"),
        ({"n_u": 1.5}, TypeError, "n_u: expected an integer"),
        ({"n_y": True}, TypeError, "n_y: expected an integer"),
        ({"process_cov": [[1.0, 0.5], [0.0, 1.0]]}, NotSymmetricError, "process_cov"),
        ({"process_cov": [[1.0, 0.0], [0.0, -1.0]]}, NotPositiveDefiniteError, "process_cov"),
        (
            {"process_cov": np.eye(3)},
            DimensionError,
            r"process_cov: expected a square matrix of shape \(2, 2\), found \(3, 3\)",
        ),
        (
            {"measurement_cov": np.diag([1.0, 1.0, 0.0])},
            NotPositiveDefiniteError,
            "measurement_cov: expected a positive definite",
        ),
        ({"measurement_cov": np.full((3, 3), np.nan)}, NonFiniteError, "measurement_cov"),
        (
            {"x0_mean": [0.0, 0.0, 0.0]},
            DimensionError,
            r"x0_mean: expected shape \(2,\), found \(3,\)",
        ),
        ({"x0_mean": [0.0, np.inf]}, NonFiniteError, "x0_mean"),
        ({"x0_cov": [[1.0, 2.0], [2.0, 1.0]]}, NotPositiveDefiniteError, "x0_cov"),
        ({"dt": 0.0}, ValueError, "dt: expected a positive finite sampling period, found 0"),
        ({"dt": float("nan")}, ValueError, "dt: expected a positive finite"),
        ({"process_cov": "abc"}, TypeError, "process_cov: expected an array-like of numbers"),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_nonlinear(**kwargs)


def test_nonlinear_model_requires_callables():
    with pytest.raises(TypeError, match="f: expected a callable, found int"):
        NonlinearModel(1, _h, n_x=2, n_y=3, process_cov=np.eye(2), measurement_cov=np.eye(3))
    with pytest.raises(TypeError, match="h_jacobian: expected a callable"):
        make_nonlinear(h_jacobian="no")


def test_system_model_is_abstract():
    with pytest.raises(TypeError):
        SystemModel(n_x=1, n_u=0, n_y=1, process_cov=[[1.0]], measurement_cov=[[1.0]])  # type: ignore[abstract]


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda m: m.simulate(0, 2), ValueError, "T: expected an integer >= 1, found 0"),
        (lambda m: m.simulate(3, 0), ValueError, "batch_size: expected an integer >= 1"),
        (
            lambda m: m.simulate(3, 2, u=np.zeros((3, 2))),
            DimensionError,
            r"u: expected shape \(3, 1\), found \(3, 2\)",
        ),
        (
            lambda m: m.simulate(3, 2, u=np.zeros((4, 3, 1))),
            DimensionError,
            r"u: expected shape \(2, 3, 1\)",
        ),
        (
            lambda m: m.simulate(3, 2, u=np.full((3, 1), np.nan)),
            NonFiniteError,
            "u: expected finite",
        ),
        (
            lambda m: m.simulate(3, 2, u=np.zeros((3, 1)), policy=lambda t, y: y),
            ValueError,
            "either u",
        ),
        (
            lambda m: m.simulate(3, 2, policy=lambda t, y: y),
            DimensionError,
            r"policy action: expected shape \(2, 1\), found \(2, 2\)",
        ),
        (lambda m: m.simulate(3, 2, policy=5), TypeError, "policy: expected a controller"),
        (lambda m: m.simulate(3, 2, x0=np.zeros(3)), DimensionError, r"x0: expected shape \(2,\)"),
        (
            lambda m: m.simulate(3, 2, x0=np.zeros((3, 2))),
            DimensionError,
            r"x0: expected shape \(2, 2\)",
        ),
    ],
)
def test_simulate_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call(make_linear())


def test_repr_lists_params():
    m = make_nonlinear(params={"mass": 2.0}, name="toy")
    assert "name='toy'" in repr(m) and "mass=2.0" in repr(m) and "n_u=1" in repr(m)
    assert math.isclose(float(m.process_cov[0, 0]), 0.1)
