"""Mismatch helpers: rotations, parameter changes, misstated noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    NonlinearModel,
    SystemModel,
    cartpole,
    linear_canonical,
    linearize,
    lorenz,
    misstate_noise,
    pendulum,
    rotate_dynamics,
    rotate_measurement,
    rotation_matrix,
    scale_parameters,
    set_parameters,
    synthetic_nonlinear,
)

F64 = torch.float64


def points(n, batch=6, seed=0):
    return 0.7 * torch.randn(batch, n, generator=torch.Generator().manual_seed(seed), dtype=F64)


# -- rotation_matrix ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "plane"), [(2, (0, 1)), (3, (1, 2)), (3, (2, 0)), (5, (4, 1))])
@pytest.mark.parametrize("angle", [10.0, -37.5, 180.0])
def test_rotation_is_orthogonal_with_unit_determinant(n, plane, angle):
    R = rotation_matrix(n, angle, plane)
    I = torch.eye(n, dtype=F64)
    torch.testing.assert_close(R @ R.T, I)
    torch.testing.assert_close(torch.linalg.det(R), torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(R @ rotation_matrix(n, -angle, plane), I)
    torch.testing.assert_close(rotation_matrix(n, -angle, plane), R.T)
    torch.testing.assert_close(rotation_matrix(n, angle, plane[::-1]), R.T)
    others = [k for k in range(n) if k not in plane]
    torch.testing.assert_close(R[others][:, others], torch.eye(len(others), dtype=F64))


def test_rotation_explicit_form():
    th = math.radians(10.0)
    np.testing.assert_allclose(
        rotation_matrix(2, 10.0).numpy(),
        [[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]],
        rtol=1e-15,
    )
    np.testing.assert_allclose(
        rotation_matrix(2, 90.0).numpy() @ [1.0, 0.0], [0.0, 1.0], atol=1e-15
    )
    assert rotation_matrix(3, 5.0, dtype=torch.float32).dtype == torch.float32


def test_rotation_is_differentiable_in_the_angle():
    angle = torch.tensor(30.0, dtype=F64, requires_grad=True)
    R = rotation_matrix(2, angle)
    R[0, 1].backward()  # -sin(angle)
    torch.testing.assert_close(
        angle.grad, torch.tensor(-math.cos(math.radians(30.0)) * math.pi / 180, dtype=F64)
    )


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((1, 10.0), DimensionError, "n: a rotation needs a dimension >= 2, found n = 1"),
        ((2.0, 10.0), TypeError, "n: expected an integer"),
        (
            (3, 10.0, (0, 0)),
            DimensionError,
            r"plane: expected two distinct indices in \[0, 3\), found \(0, 0\)",
        ),
        ((3, 10.0, (0, 3)), DimensionError, r"plane: expected two distinct indices in \[0, 3\)"),
        ((3, 10.0, (0,)), TypeError, "plane: expected a pair of indices"),
        ((3, float("nan")), NonFiniteError, "angle_deg: expected finite values"),
        ((3, [1.0, 2.0]), DimensionError, "angle_deg: expected a scalar"),
    ],
)
def test_rotation_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        rotation_matrix(*args)


# -- rotate_dynamics ------------------------------------------------------------------------------
def controlled_linear():
    return LinearGaussianModel(
        A=[[1.0, 1.0], [0.0, 1.0]],
        B=[[0.5], [1.0]],
        C=[[1.0, 0.0]],
        process_cov=0.1 * np.eye(2),
        measurement_cov=[[1.0]],
        dt=0.1,
    )


def test_rotate_dynamics_linear_left_and_right():
    m = linear_canonical()
    R = rotation_matrix(2, 10.0)
    left = rotate_dynamics(m, 10.0)
    assert isinstance(left, LinearGaussianModel) and left.factory is None
    torch.testing.assert_close(left.A, R @ m.A)
    assert torch.equal(left.C, m.C) and torch.equal(left.process_cov, m.process_cov)
    assert left.params["q2"] == m.params["q2"]
    assert left.params["rotations"] == (
        {"target": "dynamics", "angle_deg": 10.0, "plane": (0, 1), "side": "left"},
    )
    right = rotate_dynamics(m, 10.0, side="right")
    torch.testing.assert_close(right.A, m.A @ R)
    np.testing.assert_array_equal(m.numpy()["A"], [[1.0, 1.0], [0.0, 1.0]])  # input untouched
    c = controlled_linear()
    cl, cr = rotate_dynamics(c, 20.0), rotate_dynamics(c, 20.0, side="right")
    R20 = rotation_matrix(2, 20.0)
    torch.testing.assert_close(cl.B, R20 @ c.B)  # the whole mean map R (A x + B u) is rotated
    torch.testing.assert_close(cr.B, c.B)
    assert cl.dt == 0.1


def test_rotating_a_linear_model_agrees_with_rotating_its_nonlinear_twin():
    c = controlled_linear()
    twin = NonlinearModel(
        c.f, c.h, n_x=2, n_y=1, n_u=1, process_cov=c.process_cov, measurement_cov=c.measurement_cov
    )
    x, u = points(2), points(1, seed=1)
    for side in ("left", "right"):
        a, b = rotate_dynamics(c, 15.0, side=side), rotate_dynamics(twin, 15.0, side=side)
        torch.testing.assert_close(a.f(x, u), b.f(x, u))
        torch.testing.assert_close(a.f_jacobian(x, u), b.f_jacobian(x, u))


@pytest.mark.parametrize("side", ["left", "right"])
def test_rotate_dynamics_nonlinear_pointwise_and_jacobian(side):
    m = synthetic_nonlinear(n=3, q2=0.02)
    rot = rotate_dynamics(m, 25.0, plane=(2, 0), side=side)
    assert isinstance(rot, NonlinearModel) and rot.factory is None
    R = rotation_matrix(3, 25.0, (2, 0))
    x = points(3)
    expected = m.f(x) @ R.T if side == "left" else m.f(x @ R.T)
    torch.testing.assert_close(rot.f(x), expected)
    torch.testing.assert_close(rot.h(x), m.h(x))
    # the exact Jacobian it provides equals automatic differentiation of the rotated f
    torch.testing.assert_close(rot.f_jacobian(x), SystemModel.f_jacobian(rot, x))
    torch.testing.assert_close(rot.h_jacobian(x), m.h_jacobian(x))
    assert torch.equal(rot.process_cov, m.process_cov) and torch.equal(rot.x0_mean, m.x0_mean)
    assert rot.params["alpha"] == 0.9 and rot.params["rotations"][0]["side"] == side


def test_rotate_dynamics_with_input():
    m = cartpole()
    rot = rotate_dynamics(m, 5.0, plane=(0, 2))
    R = rotation_matrix(4, 5.0, (0, 2))
    x, u = 0.1 * points(4), points(1)
    torch.testing.assert_close(rot.f(x, u), m.f(x, u) @ R.T)
    torch.testing.assert_close(rot.input_jacobian(x, u), R @ m.input_jacobian(x, u))
    assert rot.dt == m.dt and rot.n_u == 1


def test_rotate_dynamics_errors():
    scalar = LinearGaussianModel(A=[[0.5]], C=[[1.0]], process_cov=[[1.0]], measurement_cov=[[1.0]])
    with pytest.raises(DimensionError, match="rotate_dynamics needs n_x >= 2, found n_x = 1"):
        rotate_dynamics(scalar, 10.0)
    with pytest.raises(ValueError, match="side: expected 'left' or 'right', found 'up'"):
        rotate_dynamics(linear_canonical(), 10.0, side="up")
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        rotate_dynamics("model", 10.0)
    with pytest.raises(DimensionError, match="plane"):
        rotate_dynamics(linear_canonical(), 10.0, plane=(0, 2))


# -- rotate_measurement ---------------------------------------------------------------------------
def test_rotate_measurement_linear():
    m = linear_canonical(3, measurement="inverse_canonical")
    R = rotation_matrix(3, 10.0, (1, 2))
    torch.testing.assert_close(rotate_measurement(m, 10.0, (1, 2)).C, R @ m.C)
    torch.testing.assert_close(rotate_measurement(m, 10.0, (1, 2), side="right").C, m.C @ R)
    assert torch.equal(rotate_measurement(m, 10.0).A, m.A)


def test_rotate_measurement_nonlinear_reproduces_lorenz_rotation():
    m = lorenz()
    rot = m
    for plane in ((1, 2), (2, 0), (0, 1)):  # H' = R_z R_y R_x H
        rot = rotate_measurement(rot, 1.0, plane)
    ref = lorenz(measurement_rotation_deg=1.0)
    x = 10 * points(3)
    torch.testing.assert_close(rot.h(x), ref.h(x))
    torch.testing.assert_close(rot.h_jacobian(x), ref.h_jacobian(x))
    torch.testing.assert_close(rot.f(x), m.f(x))
    assert len(rot.params["rotations"]) == 3 and rot.params["order"] == 5


def test_rotate_measurement_right_on_scalar_measurement():
    m = pendulum()
    with pytest.raises(DimensionError, match="needs n_y >= 2, found n_y = 1"):
        rotate_measurement(m, 10.0)
    rot = rotate_measurement(m, 30.0, side="right")
    R = rotation_matrix(2, 30.0)
    x = points(2)
    torch.testing.assert_close(rot.h(x), (x @ R.T)[:, :1])
    torch.testing.assert_close(rot.h_jacobian(x), SystemModel.h_jacobian(rot, x))


# -- scale_parameters / set_parameters ------------------------------------------------------------
def test_scale_parameters_rebuilds_the_model():
    m = cartpole()
    s = scale_parameters(m, pole_length=1.5, pole_mass=2.0)
    assert s.params["pole_length"] == 0.75 and s.params["pole_mass"] == 0.2
    assert s.params["cart_mass"] == 1.0 and m.params["pole_length"] == 0.5
    ref = cartpole(pole_length=0.75, pole_mass=0.2)
    x, u = 0.2 * points(4), points(1)
    torch.testing.assert_close(s.f(x, u), ref.f(x, u))
    assert not torch.allclose(s.f(x, u), m.f(x, u))
    assert scale_parameters(lorenz(), order=0.4).params["order"] == 2


def test_set_parameters_changes_lorenz_order():
    m = set_parameters(lorenz(), order=2)
    x = 5 * points(3)
    torch.testing.assert_close(m.f(x), lorenz(order=2).f(x))
    assert set_parameters(lorenz(), a_matrix="paper").params["a_matrix"] == "paper"


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: scale_parameters(cartpole(), pole_lenght=1.5),
            ParameterError,
            r"unknown parameter\(s\) \['pole_lenght'\].*'pole_length'",
        ),
        (lambda: scale_parameters(cartpole(), mass=0.0), ParameterError, "unknown parameter"),
        (
            lambda: scale_parameters(cartpole(), pole_length=0.0),
            ParameterError,
            "factor for 'pole_length': expected a positive number, found 0",
        ),
        (
            lambda: scale_parameters(cartpole(), pole_length=-2),
            ParameterError,
            "expected a positive number, found -2",
        ),
        (
            lambda: scale_parameters(cartpole(), pole_length=float("inf")),
            NonFiniteError,
            "factor for 'pole_length': expected a finite number",
        ),
        (
            lambda: scale_parameters(cartpole(), pole_length="2"),
            ParameterError,
            "expected a positive number, found str",
        ),
        (
            lambda: scale_parameters(lorenz(), a_matrix=2.0),
            ParameterError,
            "parameter 'a_matrix' is not a number",
        ),
        (
            lambda: scale_parameters(lorenz(), order=0.5),
            ParameterError,
            "parameter 'order' is an integer",
        ),
        (
            lambda: scale_parameters(rotate_dynamics(cartpole(), 1.0), pole_length=2.0),
            ParameterError,
            "has no factory",
        ),
        (
            lambda: set_parameters(lorenz(), J=2),
            ParameterError,
            r"set_parameters: unknown parameter\(s\) \['J'\]",
        ),
        (
            lambda: set_parameters(lorenz(), order=0),
            ParameterError,
            "order: expected an integer >= 1",
        ),
        (lambda: set_parameters(controlled_linear(), q2=1.0), ParameterError, "has no factory"),
    ],
)
def test_parameter_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- misstate_noise -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "names"),
    [
        (lorenz, {"q2": 4.0, "r2": 0.5}),
        (pendulum, {"process_std": 2.0, "measurement_std": math.sqrt(0.5)}),
        (cartpole, {"force_std": 2.0, "position_std": math.sqrt(0.5), "angle_std": math.sqrt(0.5)}),
    ],
)
def test_misstate_noise_library_models(fn, names):
    m = fn()
    mis = misstate_noise(m, process_scale=4.0, measurement_scale=0.5)
    torch.testing.assert_close(mis.process_cov, 4.0 * m.process_cov)
    torch.testing.assert_close(mis.measurement_cov, 0.5 * m.measurement_cov)
    for name, ratio in names.items():
        assert mis.params[name] == pytest.approx(ratio * m.params[name], rel=1e-14)
    # the factory still describes the model: rebuilding reproduces the misstated covariances
    rebuilt = mis.with_params()
    torch.testing.assert_close(rebuilt.process_cov, mis.process_cov, rtol=1e-12, atol=1e-18)
    torch.testing.assert_close(rebuilt.measurement_cov, mis.measurement_cov)
    x = points(m.n_x)
    torch.testing.assert_close(mis.f(x), m.f(x))
    assert torch.equal(mis.x0_cov, m.x0_cov)


def test_misstate_noise_other_models():
    c = controlled_linear()
    mis = misstate_noise(c, measurement_scale=3.0)
    torch.testing.assert_close(mis.measurement_cov, 3.0 * c.measurement_cov)
    assert torch.equal(mis.process_cov, c.process_cov) and torch.equal(mis.A, c.A)
    lin = linearize(cartpole(), np.zeros(4))
    mis = misstate_noise(lin, process_scale=2.0)
    assert mis.factory is None
    assert mis.params["process_noise_scale"] == 2.0 and mis.params["measurement_noise_scale"] == 1.0
    same = misstate_noise(lin)
    assert same.factory is lin.factory
    assert torch.equal(
        misstate_noise(linear_canonical(), process_scale=0.0).process_cov,
        torch.zeros(2, 2, dtype=F64),
    )


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (
            {"process_scale": -1.0},
            ParameterError,
            "process_scale: expected a number >= 0, found -1",
        ),
        (
            {"measurement_scale": 0.0},
            ParameterError,
            "measurement_scale: expected a number > 0, found 0",
        ),
        (
            {"measurement_scale": float("nan")},
            NonFiniteError,
            "measurement_scale: expected a finite number",
        ),
        ({"process_scale": "2"}, TypeError, "process_scale: expected a number, found str"),
    ],
)
def test_misstate_noise_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        misstate_noise(lorenz(), **kwargs)
