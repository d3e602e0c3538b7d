"""The dynamics library: KalmanNet benchmark models, pendulum, cart-pole."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from scipy.integrate import solve_ivp

from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    NonlinearModel,
    cartpole,
    linear_canonical,
    lorenz,
    noise_from_db,
    pendulum,
    synthetic_nonlinear,
)

F64 = torch.float64
ALL = [linear_canonical, synthetic_nonlinear, lorenz, pendulum, cartpole]


def t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def fd_jacobian(fn, z, eps=1e-6):
    cols = []
    for i in range(z.shape[0]):
        e = torch.zeros_like(z)
        e[i] = eps
        cols.append((fn(z + e) - fn(z - e)) / (2 * eps))
    return torch.stack(cols, -1)


# -- common contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", ALL)
def test_params_factory_and_with_params_round_trip(fn):
    m = fn()
    assert isinstance(m.factory, functools.partial) and m.factory.func is fn
    assert m.name == fn.__name__
    same = m.with_params()
    for k in ("process_cov", "measurement_cov", "x0_mean", "x0_cov"):
        assert torch.equal(getattr(same, k), getattr(m, k)), k
    assert same.params == m.params and same.dt == m.dt
    g = torch.Generator().manual_seed(0)
    x = m.x0_mean + 0.3 * torch.randn(5, m.n_x, generator=g, dtype=F64)
    u = torch.randn(5, m.n_u, generator=g, dtype=F64)
    assert torch.equal(same.f(x, u), m.f(x, u)) and torch.equal(same.h(x), m.h(x))


@pytest.mark.parametrize("fn", ALL)
@pytest.mark.parametrize("batch", [1, 10])
def test_jacobians_match_finite_differences(fn, batch):
    m = fn()
    g = torch.Generator().manual_seed(1)
    x = m.x0_mean + 0.5 * torch.randn(batch, m.n_x, generator=g, dtype=F64)
    u = torch.randn(batch, m.n_u, generator=g, dtype=F64)
    F, H = m.jacobians(x, u)
    G = m.input_jacobian(x, u)
    assert F.shape == (batch, m.n_x, m.n_x) and H.shape == (batch, m.n_y, m.n_x)
    assert G.shape == (batch, m.n_x, m.n_u)
    for b in (0, batch - 1):
        xb, ub = x[b], u[b]
        torch.testing.assert_close(
            F[b], fd_jacobian(lambda z, ub=ub: m.f(z[None], ub[None])[0], xb), atol=1e-7, rtol=1e-7
        )
        torch.testing.assert_close(
            H[b], fd_jacobian(lambda z: m.h(z[None])[0], xb), atol=1e-7, rtol=1e-7
        )
        if m.n_u:
            torch.testing.assert_close(
                G[b],
                fd_jacobian(lambda v, xb=xb: m.f(xb[None], v[None])[0], ub),
                atol=1e-7,
                rtol=1e-7,
            )


@pytest.mark.parametrize("fn", ALL)
def test_float32_models_stay_float32(fn):
    m = fn(dtype=torch.float32)
    rebuilt = m.with_params()
    for model in (m, rebuilt):
        assert model.dtype == torch.float32 and model.x0_mean.dtype == torch.float32
        tr = model.simulate(4, 3, generator=torch.Generator().manual_seed(0))
        assert tr.x.dtype == tr.y.dtype == torch.float32
        assert torch.isfinite(tr.x).all()


@pytest.mark.parametrize("fn", ALL)
def test_simulate_runs(fn):
    m = fn()
    tr = m.simulate(30, 4, generator=torch.Generator().manual_seed(2))
    assert tr.x.shape == (4, 30, m.n_x) and tr.y.shape == (4, 30, m.n_y)
    assert torch.isfinite(tr.x).all() and torch.isfinite(tr.y).all()


def test_x0_params_are_stored_and_reused():
    m = pendulum(x0_mean=torch.tensor([math.pi, 0.0], dtype=F64), x0_cov=np.diag([0.1, 0.2]))
    assert m.params["x0_mean"] == (math.pi, 0.0)
    assert m.params["x0_cov"] == ((0.1, 0.0), (0.0, 0.2))
    m2 = m.with_params(mass=2.0)
    assert torch.equal(m2.x0_mean, m.x0_mean) and torch.equal(m2.x0_cov, m.x0_cov)


# -- noise_from_db --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inv_r2_db", "nu_db", "q2", "r2"),
    [
        (0.0, -20.0, 0.01, 1.0),
        (20.0, 0.0, 0.01, 0.01),
        (-10.0, -20.0, 0.1, 10.0),
        (40.0, -20.0, 1e-6, 1e-4),
    ],
)
def test_noise_from_db(inv_r2_db, nu_db, q2, r2):
    got = noise_from_db(inv_r2_db, nu_db)
    assert got == pytest.approx((q2, r2), rel=1e-12)


def test_noise_from_db_rejects_non_numbers():
    with pytest.raises(ParameterError, match="inv_r2_db: expected a real number"):
        noise_from_db("0", -20)
    with pytest.raises(ParameterError, match="nu_db: expected a finite number, found nan"):
        noise_from_db(0, float("nan"))


# -- linear canonical -----------------------------------------------------------------------------
def test_linear_canonical_structure():
    m = linear_canonical(q2=0.04, r2=2.0)
    assert isinstance(m, LinearGaussianModel) and (m.n_x, m.n_u, m.n_y) == (2, 0, 2)
    np.testing.assert_array_equal(m.numpy()["A"], [[1.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(m.numpy()["C"], np.eye(2))
    np.testing.assert_array_equal(m.numpy()["process_cov"], 0.04 * np.eye(2))
    np.testing.assert_array_equal(m.numpy()["measurement_cov"], 2.0 * np.eye(2))
    np.testing.assert_array_equal(m.numpy()["x0_mean"], [0.0, 0.0])
    np.testing.assert_array_equal(m.numpy()["x0_cov"], np.zeros((2, 2)))
    A5 = linear_canonical(5).numpy()["A"]
    expected = np.eye(5)
    expected[0] = 1.0
    np.testing.assert_array_equal(A5, expected)


def test_linear_canonical_inverse_canonical_measurement():
    H3 = linear_canonical(3, measurement="inverse_canonical").numpy()["C"]
    np.testing.assert_array_equal(H3, [[1, 1, 1], [0, 1, 0], [1, 0, 0]])
    H5 = linear_canonical(5, measurement="inverse_canonical").numpy()["C"]
    np.testing.assert_array_equal(
        H5,
        [[1, 1, 1, 1, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]],
    )
    m = linear_canonical(4, measurement="inverse_canonical").with_params(n=5)
    np.testing.assert_array_equal(m.numpy()["C"], H5)


# -- synthetic nonlinear --------------------------------------------------------------------------
def test_synthetic_nonlinear_values_by_hand():
    m = synthetic_nonlinear()
    assert (m.n_x, m.n_u, m.n_y) == (2, 0, 2)
    np.testing.assert_array_equal(m.x0_mean.numpy(), [0.1, 0.1])
    x = t([[0.3, -1.2]])
    f_ref = [0.9 * math.sin(1.1 * v + 0.1 * math.pi) + 0.01 for v in (0.3, -1.2)]
    np.testing.assert_allclose(m.f(x)[0].numpy(), f_ref, rtol=1e-14)
    np.testing.assert_allclose(m.h(x)[0].numpy(), [0.09, 1.44], rtol=1e-14)
    m2 = synthetic_nonlinear(alpha=1.0, beta=1.0, phi=0.0, delta=0.0, a=2.0, b=0.5, c=1.0, n=3)
    x3 = t([[0.3, -1.2, 2.0]])
    np.testing.assert_allclose(m2.f(x3)[0].numpy(), np.sin([0.3, -1.2, 2.0]), rtol=1e-14)
    np.testing.assert_allclose(
        m2.h(x3)[0].numpy(), [2 * 1.15**2, 2 * 0.4**2, 2 * 2.0**2], rtol=1e-14
    )
    # exact diagonal Jacobians
    np.testing.assert_allclose(
        m2.f_jacobian(x3)[0].numpy(), np.diag(np.cos([0.3, -1.2, 2.0])), rtol=1e-14
    )
    np.testing.assert_allclose(
        m2.h_jacobian(x3)[0].numpy(), np.diag([2 * 1.15, 2 * 0.4, 2 * 2.0]), rtol=1e-14
    )


# -- Lorenz ---------------------------------------------------------------------------------------
def lorenz_field(x, sigma=10.0, rho=28.0, beta=8 / 3):
    return np.array([sigma * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - beta * x[2]])


def a_code(x):
    return np.array([[-10.0, 10.0, 0.0], [28.0 - x[2], -1.0, 0.0], [x[1], 0.0, -8 / 3]])


def a_paper(x):
    return np.array([[-10.0, 10.0, 0.0], [28.0, -1.0, -x[0]], [0.0, x[0], -8 / 3]])


POINTS = np.array([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0], [8.0, 8.0, 27.0], [0.5, -12.0, 33.0]])


def test_lorenz_defaults():
    m = lorenz()
    assert (m.n_x, m.n_u, m.n_y, m.dt) == (3, 3, 3, 0.02)
    np.testing.assert_array_equal(m.x0_mean.numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(m.x0_cov.numpy(), np.zeros((3, 3)))
    x = t(POINTS)
    torch.testing.assert_close(m.h(x), x)
    torch.testing.assert_close(m.h_jacobian(x), torch.eye(3, dtype=F64).expand(4, 3, 3))


@pytest.mark.parametrize("form", ["code", "paper"])
def test_lorenz_order_one_is_euler_step_of_the_lorenz_field(form):
    m = lorenz(order=1, a_matrix=form)
    out = m.f(t(POINTS)).numpy()
    ref = np.stack([x + 0.02 * lorenz_field(x) for x in POINTS])
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize(("form", "A_of"), [("code", a_code), ("paper", a_paper)])
def test_lorenz_taylor_expansion_matches_hand_series(form, A_of):
    m = lorenz(order=5, a_matrix=form)
    out = m.f(t(POINTS)).numpy()
    for x, got in zip(POINTS, out, strict=True):
        Adt = A_of(x) * 0.02
        ref = sum(np.linalg.matrix_power(Adt, j) / math.factorial(j) for j in range(6)) @ x
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize(("form", "A_of"), [("code", a_code), ("paper", a_paper)])
def test_lorenz_high_order_approaches_matrix_exponential(form, A_of):
    out = lorenz(order=30, a_matrix=form).f(t(POINTS)).numpy()
    for x, got in zip(POINTS, out, strict=True):
        ref = scipy.linalg.expm(A_of(x) * 0.02) @ x
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_lorenz_order_and_factorization_change_the_result():
    x = t(POINTS)
    f5, f2 = lorenz(order=5).f(x), lorenz(order=2).f(x)
    assert (f5 - f2).abs().max() > 1e-2
    assert (lorenz(a_matrix="paper").f(x) - f5).abs().max() > 1e-3


def test_lorenz_input_is_additive():
    m = lorenz()
    x = t(POINTS)
    u = t(np.arange(12.0).reshape(4, 3))
    torch.testing.assert_close(m.f(x, u) - m.f(x), 0.02 * u)
    torch.testing.assert_close(
        m.input_jacobian(x, u), 0.02 * torch.eye(3, dtype=F64).expand(4, 3, 3)
    )


def test_lorenz_measurement_rotation_is_official_rz_ry_rx():
    th = math.radians(1.0)
    c, s = math.cos(th), math.sin(th)
    RX = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    RY = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    RZ = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    m = lorenz(measurement_rotation_deg=1.0)
    np.testing.assert_allclose(m.h(t(POINTS)).numpy(), POINTS @ (RZ @ RY @ RX).T, rtol=1e-13)
    np.testing.assert_allclose(m.h_jacobian(t(POINTS[:1]))[0].numpy(), RZ @ RY @ RX, rtol=1e-13)


# -- pendulum -------------------------------------------------------------------------------------
def pendulum_rhs(m=1.0, l=1.0, b=0.1, g=9.81, tau=0.0):
    return lambda _t, s: [s[1], (m * g * l * np.sin(s[0]) - b * s[1] + tau) / (m * l * l)]


def test_pendulum_structure_and_noise():
    m = pendulum(process_std=0.03, measurement_std=0.2)
    assert (m.n_x, m.n_u, m.n_y, m.dt) == (2, 1, 1, 0.05)
    np.testing.assert_allclose(m.process_cov.numpy(), np.diag([0.0, 0.03**2]))
    np.testing.assert_allclose(m.measurement_cov.numpy(), [[0.04]])
    x = t([[7.0, 1.0]])  # unwrapped angle
    np.testing.assert_array_equal(m.h(x).numpy(), [[7.0]])
    # upright and hanging are equilibria
    torch.testing.assert_close(m.f(t([[0.0, 0.0]])), t([[0.0, 0.0]]))
    torch.testing.assert_close(m.f(t([[math.pi, 0.0]])), t([[math.pi, 0.0]]), atol=1e-15, rtol=0)
    # gravity pushes away from upright: a small positive angle grows
    assert float(m.f(t([[0.1, 0.0]]))[0, 0]) > 0.1


def test_pendulum_energy_nearly_conserved_without_damping():
    mass, l, g = 1.3, 0.8, 9.81
    m = pendulum(mass=mass, length=l, damping=0.0, gravity=g)

    def energy(x):  # theta = 0 upright: potential m g l cos(theta)
        return 0.5 * mass * l**2 * x[:, 1] ** 2 + mass * g * l * torch.cos(x[:, 0])

    x = t([[2.0, 0.5], [0.3, -2.0]])
    e0 = energy(x)
    for _ in range(40):
        x = m.f(x)
    # RK4 drift is ~1.6e-5 relative over these 40 steps; an Euler step drifts by ~1e-1
    assert torch.all((energy(x) - e0).abs() <= 1e-4 * e0.abs().clamp_min(1.0))


def test_pendulum_step_matches_ode_solution_with_fifth_order_local_error():
    x0, tau = [0.3, -1.0], 0.7
    errs = []
    for dt in (0.05, 0.025):
        m = pendulum(dt=dt)
        ref = solve_ivp(pendulum_rhs(tau=tau), (0, dt), x0, rtol=1e-12, atol=1e-12).y[:, -1]
        errs.append(np.abs(m.f(t([x0]), t([[tau]]))[0].numpy() - ref).max())
    assert errs[0] < 1e-5
    assert errs[0] / errs[1] > 20  # local error O(dt^5): halving dt divides it by ~32


# -- cart-pole ------------------------------------------------------------------------------------
def gym_cartpole_rhs(masscart=1.0, masspole=0.1, length=0.5, gravity=9.81, force=0.0):
    """The continuous dynamics as implemented by Gymnasium's CartPoleEnv (Euler step with tau=1)."""
    env = CartPoleEnv()
    env.gravity, env.masscart, env.masspole, env.length = gravity, masscart, masspole, length
    env.total_mass = masscart + masspole
    env.polemass_length = masspole * length
    env.force_mag, env.tau, env.kinematics_integrator = abs(force), 1.0, "euler"
    action = 1 if force >= 0 else 0

    def rhs(_t, s):
        env.state = np.array(s, dtype=np.float64)
        env.steps_beyond_terminated = None
        env.step(action)
        return env.state - np.asarray(s)

    return rhs


@pytest.mark.parametrize(
    ("state", "force"), [([0.1, -0.3, 0.2, 0.5], 3.0), ([0.0, 1.0, -2.5, 1.0], -7.0)]
)
def test_cartpole_step_matches_gymnasium_dynamics(state, force):
    m = cartpole(cart_mass=1.2, pole_mass=0.3, pole_length=0.6)
    rhs = gym_cartpole_rhs(masscart=1.2, masspole=0.3, length=0.6, force=force)
    ref = solve_ivp(rhs, (0, 0.02), state, rtol=1e-12, atol=1e-12).y[:, -1]
    got = m.f(t([state]), t([[force]]))[0].numpy()
    # RK4 local error here is <= ~1e-7; a wrong term in the equations is off by ~dt = 2e-2
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_cartpole_structure_noise_and_friction():
    m = cartpole(force_std=2.0, position_std=0.1, angle_std=0.05)
    assert (m.n_x, m.n_u, m.n_y, m.dt) == (4, 1, 2, 0.02)
    x = t([[1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_array_equal(m.h(x).numpy(), [[1.0, 3.0]])
    np.testing.assert_allclose(m.measurement_cov.numpy(), np.diag([0.01, 0.0025]), rtol=1e-15)
    # process noise = force disturbance along the discrete input direction at upright
    b = m.input_jacobian(t([[0.0, 0.0, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(m.process_cov.numpy(), 4.0 * (b @ b.T).numpy(), rtol=1e-14)
    assert torch.linalg.matrix_rank(m.process_cov) == 1
    assert float(b[1, 0]) > 0 and float(b[3, 0]) < 0  # pushing right tilts the pole left
    torch.testing.assert_close(m.f(t([[0.0] * 4])), t([[0.0] * 4]))
    # viscous cart friction slows a moving cart
    v0 = t([[0.0, 1.0, 0.0, 0.0]])
    assert float(cartpole(friction=0.5).f(v0)[0, 1]) < float(m.f(v0)[0, 1]) < 1.0 + 1e-12
    assert cartpole(pole_length=0.6).params["pole_length"] == 0.6


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (linear_canonical, {"n": 0}, "n: expected an integer >= 1, found 0"),
        (
            linear_canonical,
            {"measurement": "rotated"},
            "measurement: expected 'identity' or 'inverse_canonical', found 'rotated'",
        ),
        (linear_canonical, {"r2": 0.0}, "r2: expected a number > 0, found 0"),
        (linear_canonical, {"q2": -1.0}, "q2: expected a number >= 0, found -1"),
        (synthetic_nonlinear, {"alpha": float("inf")}, "alpha: expected a finite number"),
        (synthetic_nonlinear, {"n": 2.0}, "n: expected an integer >= 1, found 2.0"),
        (lorenz, {"order": 0}, "order: expected an integer >= 1, found 0"),
        (lorenz, {"a_matrix": "other"}, "a_matrix: expected 'code' or 'paper', found 'other'"),
        (lorenz, {"dt": -0.1}, "dt: expected a number > 0"),
        (pendulum, {"mass": 0.0}, "mass: expected a number > 0, found 0"),
        (pendulum, {"damping": -0.1}, "damping: expected a number >= 0"),
        (pendulum, {"measurement_std": 0.0}, "measurement_std: expected a number > 0"),
        (pendulum, {"length": "1"}, "length: expected a real number, found str"),
        (
            cartpole,
            {"pole_length": float("nan")},
            "pole_length: expected a finite number, found nan",
        ),
        (cartpole, {"friction": -1.0}, "friction: expected a number >= 0"),
        (cartpole, {"force_std": True}, "force_std: expected a real number, found bool"),
    ],
)
def test_parameter_errors(fn, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        fn(**kwargs)


def test_library_models_are_nonlinear_models():
    for fn in (synthetic_nonlinear, lorenz, pendulum, cartpole):
        assert isinstance(fn(), NonlinearModel)
