"""linearize: Jacobians about an equilibrium, against closed forms discretized by expm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from kalmannet_ctrl.errors import DimensionError, NotAnEquilibriumError
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    cartpole,
    linearize,
    lorenz,
    pendulum,
    scale_parameters,
)


def zoh(Ac, Bc, dt):
    """Exact zero-order-hold discretization (matrix exponential of the augmented matrix)."""
    n, m = Bc.shape
    M = np.zeros((n + m, n + m))
    M[:n, :n], M[:n, n:] = Ac, Bc
    E = scipy.linalg.expm(M * dt)
    return E[:n, :n], E[:n, n:]


def rk4_linear(Ac, Bc, dt):
    """What one RK4 step does to x' = Ac x + Bc u (u held): the degree-4 Taylor polynomials."""
    n = Ac.shape[0]
    Ad = sum(np.linalg.matrix_power(Ac * dt, k) / math.factorial(k) for k in range(5))
    Bd = (
        sum(np.linalg.matrix_power(Ac, k) * dt ** (k + 1) / math.factorial(k + 1) for k in range(4))
        @ Bc
    )
    assert Ad.shape == (n, n)
    return Ad, Bd


def pendulum_continuous(m, l, b, g, theta0=0.0):
    Ac = np.array([[0.0, 1.0], [g * math.cos(theta0) / l, -b / (m * l * l)]])
    Bc = np.array([[0.0], [1.0 / (m * l * l)]])
    return Ac, Bc


def cartpole_continuous(mc, mp, l, mu, g):
    """Closed-form Jacobian of the cart-pole at the upright equilibrium, derived by hand."""
    M = mc + mp
    D = l * (4.0 / 3.0 - mp / M)
    th_th, th_v, th_F = g / D, mu / (M * D), -1.0 / (M * D)
    k = mp * l / M
    x_v, x_th, x_F = -mu / M - k * th_v, -k * th_th, 1.0 / M - k * th_F
    Ac = np.array([[0, 1, 0, 0], [0, x_v, x_th, 0], [0, 0, 0, 1], [0, th_v, th_th, 0]], dtype=float)
    Bc = np.array([[0.0], [x_F], [0.0], [th_F]])
    return Ac, Bc


def test_pendulum_upright_matches_closed_form():
    params = dict(mass=1.5, length=0.7, damping=0.2, gravity=9.81, dt=0.05)
    model = pendulum(**params)
    lin = linearize(model, [0.0, 0.0])
    assert isinstance(lin, LinearGaussianModel) and lin.dt == 0.05
    Ac, Bc = pendulum_continuous(1.5, 0.7, 0.2, 9.81)
    Ad, Bd = zoh(Ac, Bc, 0.05)
    A, B, C = (lin.numpy()[k] for k in "ABC")
    # RK4 vs exact exponential: the difference is the O(dt^5) tail of the series
    np.testing.assert_allclose(A, Ad, atol=2e-5, rtol=0)
    np.testing.assert_allclose(B, Bd, atol=2e-6, rtol=0)
    # and exactly what RK4 does to the linearized ODE
    Ar, Br = rk4_linear(Ac, Bc, 0.05)
    np.testing.assert_allclose(A, Ar, atol=1e-13, rtol=0)
    np.testing.assert_allclose(B, Br, atol=1e-13, rtol=0)
    np.testing.assert_array_equal(C, [[1.0, 0.0]])
    assert np.abs(np.linalg.eigvals(A)).max() > 1.0  # upright is unstable


def test_pendulum_off_upright_equilibrium_with_holding_torque():
    m, l, b, g, theta0 = 1.0, 1.0, 0.1, 9.81, 0.3
    tau = -m * g * l * math.sin(theta0)
    lin = linearize(pendulum(), [theta0, 0.0], [tau])
    Ar, Br = rk4_linear(*pendulum_continuous(m, l, b, g, theta0), 0.05)
    np.testing.assert_allclose(lin.numpy()["A"], Ar, atol=1e-13)
    np.testing.assert_allclose(lin.numpy()["B"], Br, atol=1e-13)
    # hanging down is a stable equilibrium
    down = linearize(pendulum(), [math.pi, 0.0])
    assert np.abs(np.linalg.eigvals(down.numpy()["A"])).max() < 1.0


@pytest.mark.parametrize("friction", [0.0, 0.3])
def test_cartpole_upright_matches_closed_form(friction):
    kw = dict(
        cart_mass=1.0, pole_mass=0.1, pole_length=0.5, friction=friction, gravity=9.81, dt=0.02
    )
    lin = linearize(cartpole(**kw), np.zeros(4))
    Ac, Bc = cartpole_continuous(1.0, 0.1, 0.5, friction, 9.81)
    Ad, Bd = zoh(Ac, Bc, 0.02)
    A, B, C = (lin.numpy()[k] for k in "ABC")
    np.testing.assert_allclose(A, Ad, atol=1e-6, rtol=0)
    np.testing.assert_allclose(B, Bd, atol=1e-7, rtol=0)
    Ar, Br = rk4_linear(Ac, Bc, 0.02)
    np.testing.assert_allclose(A, Ar, atol=1e-13, rtol=0)
    np.testing.assert_allclose(B, Br, atol=1e-13, rtol=0)
    np.testing.assert_array_equal(C, [[1, 0, 0, 0], [0, 0, 1, 0]])


def test_lorenz_origin():
    lin = linearize(lorenz(), np.zeros(3))
    A0 = np.array([[-10.0, 10.0, 0.0], [28.0, -1.0, 0.0], [0.0, 0.0, -8 / 3]]) * 0.02
    ref = sum(np.linalg.matrix_power(A0, j) / math.factorial(j) for j in range(6))
    np.testing.assert_allclose(lin.numpy()["A"], ref, atol=1e-14)
    np.testing.assert_allclose(lin.numpy()["B"], 0.02 * np.eye(3), atol=1e-16)
    np.testing.assert_array_equal(lin.numpy()["C"], np.eye(3))


def test_noise_initial_state_and_deviation_coordinates():
    model = pendulum(x0_mean=[0.2, -0.1], x0_cov=np.diag([0.3, 0.4]))
    lin = linearize(model, [math.pi, 0.0])
    torch.testing.assert_close(
        lin.x0_mean, torch.tensor([0.2 - math.pi, -0.1], dtype=torch.float64)
    )
    assert torch.equal(lin.x0_cov, model.x0_cov)
    assert torch.equal(lin.process_cov, model.process_cov)
    assert torch.equal(lin.measurement_cov, model.measurement_cov)
    assert lin.dt == model.dt and lin.params == model.params


def test_linear_model_is_its_own_linearization():
    m = LinearGaussianModel(
        A=[[0.9, 0.1], [0.0, 0.7]],
        B=[[0.0], [1.0]],
        C=[[1.0, 1.0]],
        process_cov=np.eye(2),
        measurement_cov=[[1.0]],
        x0_mean=[1.0, 2.0],
    )
    lin = linearize(m, [0.0, 0.0])
    for k in ("A", "B", "C", "x0_mean"):
        np.testing.assert_array_equal(lin.numpy()[k], m.numpy()[k])
    auto = LinearGaussianModel(A=[[0.5]], C=[[1.0]], process_cov=[[1.0]], measurement_cov=[[1.0]])
    assert linearize(auto, [0.0]).n_u == 0


def test_factory_relinearizes_with_changed_parameters():
    lin = linearize(cartpole(), np.zeros(4))
    longer = lin.with_params(pole_length=1.0)
    ref = linearize(cartpole(pole_length=1.0), np.zeros(4))
    np.testing.assert_allclose(longer.numpy()["A"], ref.numpy()["A"], rtol=1e-15)
    scaled = scale_parameters(lin, pole_mass=2.0)
    assert scaled.params["pole_mass"] == 0.2
    np.testing.assert_allclose(
        scaled.numpy()["B"], linearize(cartpole(pole_mass=0.2), np.zeros(4)).numpy()["B"]
    )


def test_not_an_equilibrium():
    with pytest.raises(
        NotAnEquilibriumError, match=r"x_eq, u_eq: expected an equilibrium .* found"
    ):
        linearize(pendulum(), [0.3, 0.0])
    with pytest.raises(NotAnEquilibriumError, match="check_equilibrium=False"):
        linearize(lorenz(), [1.0, 1.0, 1.0])
    lin = linearize(pendulum(), [0.3, 0.0], check_equilibrium=False)
    Ar, _ = rk4_linear(*pendulum_continuous(1.0, 1.0, 0.1, 9.81, 0.3), 0.05)
    # away from an equilibrium the RK4 Jacobian also carries drift terms; close to the ODE's
    np.testing.assert_allclose(lin.numpy()["A"], Ar, atol=1e-3)
    assert isinstance(NotAnEquilibriumError("x"), ValueError)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([0.0, 0.0, 0.0],), DimensionError, r"x_eq: expected shape \(2,\), found \(3,\)"),
        (([0.0, 0.0], [0.0, 0.0]), DimensionError, r"u_eq: expected shape \(1,\), found \(2,\)"),
        (([np.nan, 0.0],), ValueError, "x_eq: expected finite values"),
    ],
)
def test_argument_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        linearize(pendulum(), *args)


def test_model_type_error():
    with pytest.raises(TypeError, match="model: expected a SystemModel, found dict"):
        linearize({}, [0.0])
