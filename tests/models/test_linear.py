"""LinearGaussianModel and python-control interop."""

from __future__ import annotations

import control
import numpy as np
import pytest
import scipy.linalg
import torch

from kalmannet_ctrl.errors import DimensionError, NonFiniteError
from kalmannet_ctrl.models import LinearGaussianModel

Ac = np.array([[0.0, 1.0], [-2.0, -0.5]])
Bc = np.array([[0.0], [1.0]])
Cc = np.array([[1.0, 0.0]])


def zoh_reference(A, B, dt):
    """Exact zero-order-hold discretization via the matrix exponential of [[A, B], [0, 0]] dt."""
    n, m = B.shape
    M = np.zeros((n + m, n + m))
    M[:n, :n], M[:n, n:] = A, B
    E = scipy.linalg.expm(M * dt)
    return E[:n, :n], E[:n, n:]


def make(**kw):
    args = dict(
        A=[[1.0, 0.1], [0.0, 1.0]],
        B=[[0.0], [0.1]],
        C=[[1.0, 0.0]],
        process_cov=0.01 * np.eye(2),
        measurement_cov=[[0.5]],
    )
    args.update(kw)
    return LinearGaussianModel(**args)


def test_dimensions_values_and_exact_jacobians():
    m = make()
    assert (m.n_x, m.n_u, m.n_y, m.is_linear) == (2, 1, 1, True)
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    u = torch.tensor([[0.5], [-1.0]], dtype=torch.float64)
    expected = x.numpy() @ np.array([[1.0, 0.1], [0.0, 1.0]]).T + u.numpy() @ np.array([[0.0, 0.1]])
    np.testing.assert_allclose(m.f(x, u).numpy(), expected, rtol=1e-15)
    np.testing.assert_allclose(m.f(x).numpy(), x.numpy() @ np.array([[1.0, 0.1], [0.0, 1.0]]).T)
    np.testing.assert_allclose(m.h(x).numpy(), x.numpy()[:, :1])
    assert torch.equal(m.f_jacobian(x, u), m.A.expand(2, 2, 2))
    assert torch.equal(m.h_jacobian(x), m.C.expand(2, 1, 2))
    assert torch.equal(m.input_jacobian(x, u), m.B.expand(2, 2, 1))


def test_autonomous_model_has_no_input():
    m = make(B=None)
    assert m.n_u == 0 and m.B.shape == (2, 0)
    assert m.replace(process_cov=np.eye(2)).n_u == 0
    assert m.simulate(3, 2, generator=torch.Generator().manual_seed(0)).u.shape == (2, 3, 0)


def test_gradients_flow_to_matrices():
    A = torch.tensor([[0.9, 0.1], [0.0, 0.8]], dtype=torch.float64, requires_grad=True)
    m = make(A=A)
    assert m.A is A
    x = torch.ones(3, 2, dtype=torch.float64)
    m.f(x).sum().backward()
    torch.testing.assert_close(A.grad, torch.full((2, 2), 3.0, dtype=torch.float64))


def test_from_control_continuous_matches_sample_system_and_expm():
    dt = 0.1
    sys = control.ss(Ac, Bc, Cc, np.zeros((1, 1)))
    m = LinearGaussianModel.from_control(sys, 0.01 * np.eye(2), [[0.5]], dt=dt)
    ref = control.sample_system(sys, dt, method="zoh")
    Ad, Bd = zoh_reference(Ac, Bc, dt)
    mats = m.numpy()
    np.testing.assert_allclose(mats["A"], ref.A, atol=1e-14)
    np.testing.assert_allclose(mats["B"], ref.B, atol=1e-14)
    np.testing.assert_allclose(mats["A"], Ad, atol=1e-12)
    np.testing.assert_allclose(mats["B"], Bd, atol=1e-12)
    np.testing.assert_array_equal(mats["C"], Cc)
    assert m.dt == dt


def test_from_control_transfer_function_and_discrete_systems():
    tf = control.tf([1.0], [1.0, 0.5, 2.0])
    m = LinearGaussianModel.from_control(tf, 0.01 * np.eye(2), [[1.0]], dt=0.05)
    ref = control.sample_system(control.tf2ss(tf), 0.05)
    np.testing.assert_allclose(m.numpy()["A"], ref.A, atol=1e-14)
    disc = control.ss([[0.5]], [[1.0]], [[2.0]], [[0.0]], dt=0.2)
    m = LinearGaussianModel.from_control(disc, [[1.0]], [[1.0]])
    assert m.dt == 0.2 and float(m.C[0, 0]) == 2.0
    # a sampling period of exactly 1 is a known period, not "unspecified"
    assert (
        LinearGaussianModel.from_control(
            control.ss(disc.A, disc.B, disc.C, 0, dt=1), [[1.0]], [[1.0]]
        ).dt
        == 1.0
    )
    assert (
        LinearGaussianModel.from_control(
            control.ss(disc.A, disc.B, disc.C, 0, dt=True), [[1.0]], [[1.0]]
        ).dt
        is None
    )


def test_to_control_round_trip():
    m = make(dt=0.1)
    sys = m.to_control()
    assert sys.dt == 0.1 and sys.isdtime(strict=True)
    np.testing.assert_array_equal(sys.D, np.zeros((1, 1)))
    back = LinearGaussianModel.from_control(sys, m.process_cov, m.measurement_cov)
    for k in ("A", "B", "C", "process_cov", "measurement_cov"):
        np.testing.assert_array_equal(back.numpy()[k], m.numpy()[k])
    assert back.dt == 0.1
    assert make().to_control().dt is True


@pytest.mark.parametrize(
    ("sys", "dt", "match"),
    [
        (control.ss(Ac, Bc, Cc, [[0.3]]), 0.1, "sys: a nonzero feedthrough D is not supported"),
        (control.ss(Ac, Bc, Cc, 0), None, "dt: sys is a continuous-time system"),
        (
            control.ss([[0.5]], [[1.0]], [[1.0]], 0, dt=0.2),
            0.1,
            "dt: sys is discrete-time with dt=0.2, found dt=0.1",
        ),
    ],
)
def test_from_control_errors(sys, dt, match):
    n = sys.nstates
    with pytest.raises(ValueError, match=match):
        LinearGaussianModel.from_control(sys, np.eye(n), np.eye(sys.noutputs), dt=dt)


def test_from_control_rejects_non_systems():
    with pytest.raises(
        TypeError, match=r"sys: expected a control\.StateSpace or TransferFunction, found ndarray"
    ):
        LinearGaussianModel.from_control(np.eye(2), np.eye(2), np.eye(2), dt=0.1)


def test_replace_keeps_matrices():
    m = make(dt=0.5)
    m2 = m.replace(measurement_cov=[[2.0]])
    assert isinstance(m2, LinearGaussianModel)
    assert torch.equal(m2.A, m.A) and torch.equal(m2.B, m.B) and torch.equal(m2.C, m.C)
    assert float(m2.measurement_cov[0, 0]) == 2.0 and m2.dt == 0.5
    m3 = m.replace(A=torch.zeros(2, 2, dtype=torch.float64))
    assert torch.equal(m3.A, torch.zeros(2, 2, dtype=torch.float64)) and torch.equal(m.A, make().A)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"A": [[1.0, 0.0]]},
            DimensionError,
            r"A: expected a square matrix \(n_x, n_x\), found shape \(1, 2\)",
        ),
        (
            {"A": [[np.nan, 0.0], [0.0, 1.0]]},
            NonFiniteError,
            "A: expected finite values, found 1 NaN/inf",
        ),
        ({"B": [0.0, 1.0]}, DimensionError, r"B: expected a matrix \(2, n_u\), found shape \(2,\)"),
        (
            {"B": [[0.0], [1.0], [2.0]]},
            DimensionError,
            r"B: expected shape \(2, \?\), found \(3, 1\)",
        ),
        ({"B": [[np.inf], [1.0]]}, NonFiniteError, "B: expected finite"),
        ({"C": None}, TypeError, r"C: the measurement matrix \(n_y, n_x\) is required"),
        ({"C": [[1.0, 0.0, 0.0]]}, DimensionError, r"C: expected shape \(\?, 2\), found \(1, 3\)"),
        ({"C": [1.0, 0.0]}, DimensionError, r"C: expected a matrix \(n_y, 2\), found shape \(2,\)"),
        ({"process_cov": None}, TypeError, "process_cov and measurement_cov are required"),
        ({"measurement_cov": [[0.0]]}, ValueError, "measurement_cov: expected a positive definite"),
        (
            {"measurement_cov": np.eye(2)},
            DimensionError,
            r"measurement_cov: expected a square matrix of shape \(1, 1\)",
        ),
    ],
)
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make(**kwargs)


def test_dtype_argument_and_float32_tensors():
    m = make(dtype=torch.float32)
    assert m.A.dtype == m.process_cov.dtype == m.x0_mean.dtype == torch.float32
    m = make(A=torch.eye(2, dtype=torch.float32))
    assert m.dtype == torch.float32 and m.C.dtype == torch.float32
