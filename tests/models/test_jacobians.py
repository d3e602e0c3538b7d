"""Exact Jacobians of the pendulum and cart-pole RK4 steps, and NonlinearModel's Jacobian hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kalmannet_ctrl.models import (
    NonlinearModel,
    SystemModel,
    cartpole,
    pendulum,
    rotate_dynamics,
    scale_parameters,
    set_parameters,
)

F64 = torch.float64

# (name, model builder): the defaults and models changed by every parameter helper
VARIANTS = [
    ("pendulum", pendulum),
    ("pendulum.set_parameters", lambda: set_parameters(pendulum(), damping=0.7, dt=0.1)),
    ("pendulum.scale_parameters", lambda: scale_parameters(pendulum(), length=0.5, mass=2.0)),
    ("pendulum.with_params", lambda: pendulum().with_params(gravity=3.7)),
    ("cartpole", cartpole),
    (
        "cartpole.set_parameters",
        lambda: set_parameters(cartpole(), friction=0.8, pole_mass=0.3, dt=0.05),
    ),
    ("cartpole.scale_parameters", lambda: scale_parameters(cartpole(), pole_length=1.5)),
    ("cartpole.with_params", lambda: cartpole().with_params(cart_mass=2.5, gravity=1.6)),
]
IDS = [name for name, _ in VARIANTS]
BUILDERS = [build for _, build in VARIANTS]


def points(m: SystemModel, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random states and inputs; angles well beyond ±π (f does not wrap them)."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(batch, m.n_x, generator=g, dtype=F64)
    x[0, 0 if m.n_x == 2 else 2] = 7.0  # an angle past 2π
    u = 3.0 * torch.randn(batch, m.n_u, generator=g, dtype=F64)
    return x, u


def fd_jacobian(fn, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of fn (n,) -> (k,) at z: (k, n)."""
    cols = []
    for i in range(z.shape[0]):
        e = torch.zeros_like(z)
        e[i] = eps
        cols.append((fn(z + e) - fn(z - e)) / (2 * eps))
    return torch.stack(cols, -1)


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
@pytest.mark.parametrize("batch", [1, 10])
def test_exact_jacobians_match_autograd(build, batch):
    m = build()
    x, u = points(m, batch)
    A, B = m.f_jacobian(x, u), m.input_jacobian(x, u)
    assert A.shape == (batch, m.n_x, m.n_x) and B.shape == (batch, m.n_x, m.n_u)
    assert A.dtype == B.dtype == F64
    # the base class's torch.func.jacrev of f
    torch.testing.assert_close(A, SystemModel.f_jacobian(m, x, u), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(B, SystemModel.input_jacobian(m, x, u), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        m.h_jacobian(x), SystemModel.h_jacobian(m, x), rtol=0, atol=0, check_stride=False
    )


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
@pytest.mark.parametrize("batch", [1, 10])
def test_exact_jacobians_match_finite_differences(build, batch):
    m = build()
    x, u = points(m, batch, seed=1)
    A, B = m.f_jacobian(x, u), m.input_jacobian(x, u)
    for b in range(batch):
        xb, ub = x[b], u[b]
        fx = fd_jacobian(lambda z, ub=ub: m.f(z[None], ub[None])[0], xb)
        fu = fd_jacobian(lambda v, xb=xb: m.f(xb[None], v[None])[0], ub)
        torch.testing.assert_close(A[b], fx, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(B[b], fu, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("build", BUILDERS, ids=IDS)
def test_f_and_jacobians_is_f_and_the_two_jacobians(build):
    m = build()
    x, u = points(m, 10, seed=2)
    F, A, B = m.f_and_jacobians(x, u)
    assert torch.equal(F, m.f(x, u))  # the same RK4 step, bit for bit
    assert torch.equal(A, m.f_jacobian(x, u))
    assert torch.equal(B, m.input_jacobian(x, u))
    # u = None is the zero input, as for f
    F0, A0, B0 = m.f_and_jacobians(x)
    zero = torch.zeros(10, m.n_u, dtype=F64)
    assert torch.equal(F0, m.f(x)) and torch.equal(A0, m.f_jacobian(x, zero))
    assert torch.equal(B0, m.input_jacobian(x, zero))


@pytest.mark.parametrize(
    ("fn", "change"),
    [
        (pendulum, {"length": 0.4, "damping": 1.0, "dt": 0.02}),
        (cartpole, {"pole_length": 1.2, "friction": 0.5, "pole_mass": 0.5}),
    ],
)
def test_jacobians_follow_parameter_changes(fn, change):
    """A rebuilt model's Jacobians use its own parameters, and the original's are unchanged."""
    m = fn()
    x, u = points(m, 4, seed=3)
    A0, B0 = m.f_jacobian(x, u), m.input_jacobian(x, u)
    for other in (set_parameters(m, **change), m.with_params(**change)):
        A1, B1 = other.f_jacobian(x, u), other.input_jacobian(x, u)
        assert not torch.allclose(A1, A0) and not torch.allclose(B1, B0)
        torch.testing.assert_close(A1, SystemModel.f_jacobian(other, x, u), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(
            B1, SystemModel.input_jacobian(other, x, u), rtol=1e-10, atol=1e-10
        )
    assert torch.equal(m.f_jacobian(x, u), A0) and torch.equal(m.input_jacobian(x, u), B0)


@pytest.mark.parametrize("fn", [pendulum, cartpole])
def test_replace_keeps_the_exact_jacobians(fn):
    m = fn()
    other = m.replace(process_cov=4.0 * m.process_cov)
    x, u = points(m, 3, seed=4)
    for a, b in zip(m.f_and_jacobians(x, u), other.f_and_jacobians(x, u), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(other.input_jacobian(x, u), m.input_jacobian(x, u))


@pytest.mark.parametrize("fn", [pendulum, cartpole])
def test_exact_jacobians_are_differentiable_in_x_and_u(fn):
    m = fn()
    x, u = points(m, 2, seed=5)
    x.requires_grad_(True)
    u.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, u: m.f_and_jacobians(x, u), (x, u))


@pytest.mark.parametrize("fn", [pendulum, cartpole])
def test_float32_jacobians_stay_float32(fn):
    m = fn(dtype=torch.float32)
    x, u = points(m, 3, seed=6)
    x, u = x.float(), u.float()
    F, A, B = m.f_and_jacobians(x, u)
    assert F.dtype == A.dtype == B.dtype == torch.float32
    torch.testing.assert_close(A, SystemModel.f_jacobian(m, x, u), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(B, SystemModel.input_jacobian(m, x, u), rtol=1e-4, atol=1e-4)


def test_cartpole_process_noise_direction_is_the_autograd_input_jacobian():
    m = cartpole(force_std=2.0)
    zero_x, zero_u = torch.zeros(1, 4, dtype=F64), torch.zeros(1, 1, dtype=F64)
    b = SystemModel.input_jacobian(m, zero_x, zero_u)[0]
    torch.testing.assert_close(m.process_cov, 4.0 * (b @ b.mT), rtol=1e-13, atol=1e-16)


def test_rotated_models_keep_correct_jacobians():
    """rotate_dynamics builds a new f: the input Jacobian falls back to autograd of it."""
    m = rotate_dynamics(cartpole(), 10.0, (1, 3))
    x, u = points(m, 3, seed=7)
    torch.testing.assert_close(
        m.f_jacobian(x, u), SystemModel.f_jacobian(m, x, u), rtol=1e-10, atol=1e-10
    )
    F, _, B = m.f_and_jacobians(x, u)
    assert torch.equal(F, m.f(x, u))
    torch.testing.assert_close(B, SystemModel.input_jacobian(m, x, u), rtol=1e-10, atol=1e-10)


# -- NonlinearModel hooks ------------------------------------------------------------------------
def _model(**hooks) -> NonlinearModel:
    return NonlinearModel(
        lambda x, u: torch.sin(x) + x[..., :1] * u,
        lambda x: x,
        n_x=2,
        n_y=2,
        n_u=1,
        process_cov=np.eye(2),
        measurement_cov=np.eye(2),
        **hooks,
    )


def test_nonlinear_model_uses_the_input_jacobian_hook_with_zero_input():
    calls = []

    def u_jac(x, u):
        calls.append(u.clone())
        return torch.full((x.shape[0], 2, 1), 7.0, dtype=x.dtype)

    m = _model(input_jacobian=u_jac)
    x = torch.ones(3, 2, dtype=F64)
    assert torch.equal(m.input_jacobian(x), torch.full((3, 2, 1), 7.0, dtype=F64))
    assert torch.equal(calls[0], torch.zeros(3, 1, dtype=F64))  # u=None -> zeros
    # the fallback combined path: f and the two Jacobians (hook and autograd)
    F, A, B = m.f_and_jacobians(x)
    assert torch.equal(F, m.f(x)) and torch.equal(B, m.input_jacobian(x))
    torch.testing.assert_close(A, SystemModel.f_jacobian(m, x))
    # copies keep the hook
    assert torch.equal(m.replace(name="copy").input_jacobian(x), m.input_jacobian(x))


def test_nonlinear_model_without_hooks_falls_back_to_autograd():
    m = _model()
    x = torch.tensor([[0.3, -1.0]], dtype=F64)
    u = torch.tensor([[2.0]], dtype=F64)
    F, A, B = m.f_and_jacobians(x, u)
    torch.testing.assert_close(F, m.f(x, u))
    torch.testing.assert_close(
        A, torch.tensor([[[np.cos(0.3) + 2.0, 0.0], [2.0, np.cos(-1.0)]]], dtype=F64)
    )
    torch.testing.assert_close(B, torch.tensor([[[0.3], [0.3]]], dtype=F64))


def test_nonlinear_model_uses_the_f_and_jacobians_hook():
    def both(x, u):
        n = x.shape[0]
        return x, torch.zeros(n, 2, 2, dtype=x.dtype), torch.ones(n, 2, 1, dtype=x.dtype)

    m = _model(f_and_jacobians=both)
    x = torch.ones(2, 2, dtype=F64)
    F, A, B = m.f_and_jacobians(x)
    assert torch.equal(F, x) and not A.any() and B.all()
    F2, A2, B2 = m.replace(name="copy").f_and_jacobians(x)
    assert torch.equal(F2, F) and torch.equal(A2, A) and torch.equal(B2, B)


@pytest.mark.parametrize("hook", ["input_jacobian", "f_and_jacobians"])
def test_nonlinear_model_rejects_non_callable_hooks(hook):
    with pytest.raises(TypeError, match=f"{hook}: expected a callable, found int"):
        _model(**{hook: 3})
