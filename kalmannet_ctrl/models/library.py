"""A small library of dynamics: the KalmanNet benchmark models and two mechanical systems.

Every function returns a :class:`~kalmannet_ctrl.models.SystemModel` whose ``params`` hold the
named parameters it was built from (physical constants, noise levels, initial distribution) and
whose ``factory`` rebuilds it, so that ``model.with_params(pole_length=0.6)`` returns the same
system with one parameter changed. The factory is the library function with the model's ``dtype``
and ``device`` bound (a :func:`functools.partial`; ``model.factory.func`` is the function).

All dynamics are written with batched torch operations (batch first) and are differentiable, so
the autograd Jacobians of :class:`SystemModel` work through them. The pendulum and the cart-pole
also have exact closed-form Jacobians of their RK4 step (df/dx, df/du and both with f in one pass,
:meth:`NonlinearModel.f_and_jacobians`), for controllers that linearize at every step.

- :func:`linear_canonical` (n_x = n_y = n, n_u = 0): the KalmanNet paper's linear model;
- :func:`synthetic_nonlinear` (n_x = n_y = n, n_u = 0): its synthetic nonlinear model;
- :func:`lorenz` (n_x = n_u = n_y = 3): its discrete-time Lorenz attractor, plus an input;
- :func:`pendulum` (n_x = 2, n_u = 1, n_y = 1): a torque-driven pendulum, RK4;
- :func:`cartpole` (n_x = 4, n_u = 1, n_y = 2): the cart-pole of Barto et al. / Florian, RK4.

References
----------
G. Revach, N. Shlezinger, X. Ni, A. López Escoriza, R. J. G. van Sloun, Y. C. Eldar,
"KalmanNet: Neural Network Aided Kalman Filtering for Partially Known Dynamics",
IEEE Trans. Signal Processing 70, 2022 (arXiv:2107.10043); public code KalmanNet/KalmanNet_TSP.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ParameterError
from .base import NonlinearModel, SystemModel
from .linear import LinearGaussianModel
from .mismatch import rotation_matrix

__all__ = [
    "cartpole",
    "linear_canonical",
    "lorenz",
    "noise_from_db",
    "pendulum",
    "synthetic_nonlinear",
]

Dtype = torch.dtype
Device = torch.device | str | None


# -- noise conventions -----------------------------------------------------------------------------
def noise_from_db(inv_r2_db: float, nu_db: float) -> tuple[float, float]:
    """Noise variances (q², r²) from the KalmanNet paper's dB convention.

    The paper specifies the measurement noise by "1/r²" in dB and the process noise by the ratio
    ν = q²/r² in dB: ``r² = 10^(-inv_r2_db / 10)``, ``q² = ν · r² = r² · 10^(nu_db / 10)``.

    Parameters
    ----------
    inv_r2_db : float
        1/r² in dB (e.g. 0 dB gives r² = 1, 20 dB gives r² = 0.01).
    nu_db : float
        ν = q²/r² in dB (the paper mostly uses -20 dB and 0 dB).

    Returns
    -------
    (q2, r2) : (float, float)
        Process and measurement noise variances; the models use Q = q² I and R = r² I.

    Shapes
    ------
    Scalars in, scalars out.

    Examples
    --------
    >>> noise_from_db(0.0, -20.0)
    (0.01, 1.0)
    """
    inv_r2_db = _real(inv_r2_db, "inv_r2_db")
    nu_db = _real(nu_db, "nu_db")
    r2 = 10.0 ** (-inv_r2_db / 10.0)
    q2 = r2 * 10.0 ** (nu_db / 10.0)
    return q2, r2


# -- KalmanNet benchmark models --------------------------------------------------------------------
def linear_canonical(
    n: int = 2,
    *,
    q2: float = 0.01,
    r2: float = 1.0,
    measurement: str = "identity",
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> LinearGaussianModel:
    """The KalmanNet paper's linear model in canonical form.

    x_{t+1} = F x_t + w_t, y_t = H x_t + v_t with F the identity whose first row is all ones
    (for n = 2, F = [[1, 1], [0, 1]]), Q = q² I, R = r² I and no input.

    In the authors' released code (``Simulations/Linear_canonical/parameters.py`` and the older
    ``Extended_data.py`` of KalmanNet/KalmanNet_TSP) H = I for the 2×2 model and the "inverse
    canonical" H for larger ones: first row all ones and ones on the anti-diagonal
    (H[0, :] = 1, H[i, n-1-i] = 1), e.g. for n = 3 [[1, 1, 1], [0, 1, 0], [1, 0, 0]]. The initial
    state there is deterministic: m1x_0 = 0, m2x_0 = 0 (the defaults here).

    Parameters
    ----------
    n : int
        State and measurement dimension (>= 1).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; see :func:`noise_from_db`.
        Default: 1/r² = 0 dB, ν = -20 dB.
    measurement : {"identity", "inverse_canonical"}
        The observation matrix H.
    x0_mean : array-like, (n,), optional
        Default zeros.
    x0_cov : array-like, (n, n), optional
        Default zeros (known initial state).
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    LinearGaussianModel
        ``A = F``, ``C = H``, no ``B`` (n_u = 0).

    Shapes
    ------
    State x : (B, n); measurement y : (B, n).
    """
    n = _int(n, "n", minimum=1)
    q2 = _real(q2, "q2", minimum=0.0)
    r2 = _real(r2, "r2", minimum=0.0, strict=True)
    if measurement not in ("identity", "inverse_canonical"):
        raise ParameterError(
            f"measurement: expected 'identity' or 'inverse_canonical', found {measurement!r}"
        )
    F = np.eye(n)
    F[0, :] = 1.0
    if measurement == "identity":
        H = np.eye(n)
    else:
        H = np.zeros((n, n))
        H[0, :] = 1.0
        H[np.arange(n), n - 1 - np.arange(n)] = 1.0
    params = {
        "n": n,
        "q2": q2,
        "r2": r2,
        "measurement": measurement,
        "x0_mean": _freeze(x0_mean),
        "x0_cov": _freeze(x0_cov),
    }
    return LinearGaussianModel(
        A=F,
        C=H,
        process_cov=q2 * np.eye(n),
        measurement_cov=r2 * np.eye(n),
        x0_mean=x0_mean,
        x0_cov=x0_cov,
        dtype=dtype,
        device=device,
        params=params,
        factory=_factory(linear_canonical, dtype, device),
        name="linear_canonical",
    )


def synthetic_nonlinear(
    *,
    alpha: float = 0.9,
    beta: float = 1.1,
    phi: float = 0.1 * math.pi,
    delta: float = 0.01,
    a: float = 1.0,
    b: float = 1.0,
    c: float = 0.0,
    n: int = 2,
    q2: float = 0.01,
    r2: float = 1.0,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """The KalmanNet paper's synthetic nonlinear model, elementwise in each coordinate.

    f(x) = α sin(β x + φ) + δ,  h(x) = a (b x + c)²,  Q = q² I, R = r² I, no input.

    The defaults are the paper's "true" parameters (α, β, φ, δ) = (0.9, 1.1, 0.1π, 0.01),
    a = b = 1, c = 0; its partial-information filter uses (1, 1, 0, 0) instead (build it with
    ``model.with_params(alpha=1, beta=1, phi=0, delta=0)``). The authors' released code
    (``Simulations/Toy_problems/parameters.py``) uses m = n = 2 and a deterministic initial
    state m1x_0 = 0.1 · 1, m2x_0 = 0, the defaults here.

    Parameters
    ----------
    alpha, beta, phi, delta : float
        Evolution parameters (phi in radians).
    a, b, c : float
        Observation parameters.
    n : int
        State and measurement dimension (default 2).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; default 1/r² = 0 dB, ν = -20 dB.
    x0_mean : array-like, (n,), optional
        Default 0.1 in every coordinate.
    x0_cov : array-like, (n, n), optional
        Default zeros.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        With exact (diagonal) Jacobians df/dx = diag(α β cos(β x + φ)) and
        dh/dx = diag(2 a b (b x + c)).

    Shapes
    ------
    State x : (B, n); measurement y : (B, n).
    """
    alpha, beta = _real(alpha, "alpha"), _real(beta, "beta")
    phi, delta = _real(phi, "phi"), _real(delta, "delta")
    a, b, c = _real(a, "a"), _real(b, "b"), _real(c, "c")
    n = _int(n, "n", minimum=1)
    q2 = _real(q2, "q2", minimum=0.0)
    r2 = _real(r2, "r2", minimum=0.0, strict=True)

    def f(x: Tensor, u: Tensor) -> Tensor:
        return alpha * torch.sin(beta * x + phi) + delta

    def h(x: Tensor) -> Tensor:
        return a * (b * x + c) ** 2

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return torch.diag_embed(alpha * beta * torch.cos(beta * x + phi))

    def h_jac(x: Tensor) -> Tensor:
        return torch.diag_embed(2.0 * a * b * (b * x + c))

    params = {
        "alpha": alpha,
        "beta": beta,
        "phi": phi,
        "delta": delta,
        "a": a,
        "b": b,
        "c": c,
        "n": n,
        "q2": q2,
        "r2": r2,
        "x0_mean": _freeze(x0_mean),
        "x0_cov": _freeze(x0_cov),
    }
    return NonlinearModel(
        f,
        h,
        n_x=n,
        n_y=n,
        n_u=0,
        f_jacobian=f_jac,
        h_jacobian=h_jac,
        process_cov=q2 * np.eye(n),
        measurement_cov=r2 * np.eye(n),
        x0_mean=0.1 * np.ones(n) if x0_mean is None else x0_mean,
        x0_cov=x0_cov,
        dtype=dtype,
        device=device,
        params=params,
        factory=_factory(synthetic_nonlinear, dtype, device),
        name="synthetic_nonlinear",
    )


def lorenz(
    *,
    order: int = 5,
    dt: float = 0.02,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    a_matrix: str = "code",
    q2: float = 0.01,
    r2: float = 1.0,
    measurement_rotation_deg: float = 0.0,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """The KalmanNet paper's discrete-time Lorenz attractor, with an additive input.

    The Lorenz system ẋ = A(x) x is discretized by a Taylor expansion of order J of the matrix
    exponential with A frozen at the current state, plus an additive input::

        f(x, u) = Σ_{j=0}^{J} (A(x) Δt)^j / j! · x + Δt · u,    h(x) = R_h x

    with Q = q² I and R = r² I. With J → ∞ the first term tends to expm(A(x) Δt) x. The input u
    (n_u = 3, a velocity-like forcing added to ẋ over one step) lets environments steer the state;
    ``u = None`` means zero, which is the paper's autonomous model.

    Two factorizations of the same vector field A(x) x are available (they differ for J >= 2):

    - ``a_matrix="code"`` (default; what the authors' released code uses in
      ``Simulations/Lorenz_Atractor/parameters.py`` and ``model.py`` of KalmanNet/KalmanNet_TSP,
      hence what produced the published numbers)::

          A(x) = [[-σ,      σ,  0],
                  [ρ - x₃, -1,  0],
                  [x₂,      0, -β]]

    - ``a_matrix="paper"`` (as printed in the paper)::

          A(x) = [[-σ,  σ,   0],
                  [ρ,  -1, -x₁],
                  [0,  x₁,  -β]]

    (x = (x₁, x₂, x₃); σ = 10, ρ = 28, β = 8/3 in both.) The released code also fixes the
    initial state to m1x_0 = (1, 1, 1) with m2x_0 = 0, Δt = 0.02 and J = 5 (the defaults here),
    and its observation mismatch rotates h = I by 1° about each axis, H' = R_z R_y R_x
    (``measurement_rotation_deg=1.0``).

    Parameters
    ----------
    order : int
        Taylor order J (>= 1). The paper's evolution mismatch uses J = 2 in the filter.
    dt : float
        Sampling period Δt in seconds.
    sigma, rho, beta : float
        Lorenz constants.
    a_matrix : {"code", "paper"}
        Which factorization A(x) to expand (see above).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; default 1/r² = 0 dB, ν = -20 dB.
    measurement_rotation_deg : float
        Angle θ (degrees) of R_h = R_z(θ) R_y(θ) R_x(θ); 0 gives h = I.
    x0_mean : array-like, (3,), optional
        Default (1, 1, 1).
    x0_cov : array-like, (3, 3), optional
        Default zeros.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        df/dx by automatic differentiation (the exact derivative of the truncated series, not
        the matrix F(x) = Σ (A(x) Δt)^j / j!); dh/dx = R_h exactly.

    Shapes
    ------
    State x : (B, 3); input u : (B, 3); measurement y : (B, 3).
    """
    order = _int(order, "order", minimum=1)
    dt = _real(dt, "dt", minimum=0.0, strict=True)
    sigma, rho, beta = _real(sigma, "sigma"), _real(rho, "rho"), _real(beta, "beta")
    if a_matrix not in ("code", "paper"):
        raise ParameterError(f"a_matrix: expected 'code' or 'paper', found {a_matrix!r}")
    q2 = _real(q2, "q2", minimum=0.0)
    r2 = _real(r2, "r2", minimum=0.0, strict=True)
    theta = _real(measurement_rotation_deg, "measurement_rotation_deg")
    R_h = (
        rotation_matrix(3, theta, (0, 1), dtype=dtype, device=device)
        @ rotation_matrix(3, theta, (2, 0), dtype=dtype, device=device)
        @ rotation_matrix(3, theta, (1, 2), dtype=dtype, device=device)
    )
    paper_form = a_matrix == "paper"

    def state_matrix(x: Tensor) -> Tensor:
        x1, x2, x3 = x.unbind(-1)
        zero, one = torch.zeros_like(x1), torch.ones_like(x1)
        if paper_form:
            rows = [
                [-sigma * one, sigma * one, zero],
                [rho * one, -one, -x1],
                [zero, x1, -beta * one],
            ]
        else:
            rows = [
                [-sigma * one, sigma * one, zero],
                [rho - x3, -one, zero],
                [x2, zero, -beta * one],
            ]
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (B, 3, 3)

    def f(x: Tensor, u: Tensor) -> Tensor:
        Adt = state_matrix(x) * dt
        term, out = x, x
        for j in range(1, order + 1):  # term_j = (A dt)^j x / j!
            term = (Adt @ term.unsqueeze(-1)).squeeze(-1) / j
            out = out + term
        return out + dt * u

    def h(x: Tensor) -> Tensor:
        return x @ R_h.mT

    def h_jac(x: Tensor) -> Tensor:
        return R_h.expand(x.shape[0], 3, 3)

    params = {
        "order": order,
        "dt": dt,
        "sigma": sigma,
        "rho": rho,
        "beta": beta,
        "a_matrix": a_matrix,
        "q2": q2,
        "r2": r2,
        "measurement_rotation_deg": theta,
        "x0_mean": _freeze(x0_mean),
        "x0_cov": _freeze(x0_cov),
    }
    return NonlinearModel(
        f,
        h,
        n_x=3,
        n_y=3,
        n_u=3,
        h_jacobian=h_jac,
        process_cov=q2 * np.eye(3),
        measurement_cov=r2 * np.eye(3),
        x0_mean=np.ones(3) if x0_mean is None else x0_mean,
        x0_cov=x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
        params=params,
        factory=_factory(lorenz, dtype, device),
        name="lorenz",
    )


# -- mechanical systems ----------------------------------------------------------------------------
def pendulum(
    *,
    mass: float = 1.0,
    length: float = 1.0,
    damping: float = 0.1,
    gravity: float = 9.81,
    dt: float = 0.05,
    process_std: float = 0.01,
    measurement_std: float = 0.02,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """A torque-driven pendulum (point mass on a massless rod), integrated with RK4.

    Continuous dynamics, with θ the angle from the **upright** position (θ = 0 up, θ = ±π down;
    θ grows in the direction of positive torque)::

        m l² θ̈ = m g l sin θ − b θ̇ + τ

    discretized by one classical Runge-Kutta (RK4) step of length Δt with the torque held
    constant over the step (zero-order hold). The measurement is the angle, unwrapped (no
    reduction modulo 2π): h(x) = θ. Process noise is added to the discrete state on the velocity
    only, process_cov = diag(0, process_std²) (rad²/s²; a random angular-velocity kick per step,
    i.e. a torque disturbance of std ``process_std · m l² / Δt``); measurement_cov =
    measurement_std² (rad²).

    Parameters
    ----------
    mass : float
        m (kg), > 0.
    length : float
        l (m), > 0.
    damping : float
        Viscous damping b (N·m·s/rad), >= 0.
    gravity : float
        g (m/s²), >= 0.
    dt : float
        Sampling period Δt (s), > 0.
    process_std : float
        Std of the per-step angular-velocity noise (rad/s), >= 0.
    measurement_std : float
        Std of the angle measurement noise (rad), > 0.
    x0_mean : array-like, (2,), optional
        Default zeros (upright, at rest).
    x0_cov : array-like, (2, 2), optional
        Default (0.05² / 3) I, the variance of Gymnasium's U(-0.05, 0.05) resets.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        n_x = 2, n_u = 1, n_y = 1. Exact Jacobians of the RK4 step: the stage sensitivities are
        propagated through the integrator with the hand-written partials
        ∂θ̈/∂θ = g cos θ / l, ∂θ̈/∂θ̇ = −b / (m l²), ∂θ̈/∂τ = 1 / (m l²) (see
        :func:`_rk4_step_and_jacobians`); dh/dx = [1, 0].

    Shapes
    ------
    State x : (B, 2) = (θ [rad], θ̇ [rad/s]); input u : (B, 1) = τ [N·m];
    measurement y : (B, 1) = θ [rad].
    """
    m = _real(mass, "mass", minimum=0.0, strict=True)
    l = _real(length, "length", minimum=0.0, strict=True)
    b = _real(damping, "damping", minimum=0.0)
    g = _real(gravity, "gravity", minimum=0.0)
    dt = _real(dt, "dt", minimum=0.0, strict=True)
    process_std = _real(process_std, "process_std", minimum=0.0)
    measurement_std = _real(measurement_std, "measurement_std", minimum=0.0, strict=True)
    inertia = m * l * l

    def acceleration(theta: Tensor, omega: Tensor, torque: Tensor) -> Tensor:
        # (m g l sin θ − b θ̇ + τ) / (m l²) in four operations
        acc = torch.sin(theta).mul_(g / l)
        return acc.add_(omega, alpha=-b / inertia).add_(torque, alpha=1.0 / inertia)

    def stages(x: Tensor, u: Tensor) -> tuple[Tensor, list[Tensor]]:
        # the RK4 step on the columns θ, θ̇ (about half the tensor operations of the generic
        # _rk4_step on stacked states: this is MPPI's inner loop) and the stage angles
        theta, omega = x.unbind(-1)
        torque = u[..., 0]
        half = 0.5 * dt
        a1 = acceleration(theta, omega, torque)
        th2, om2 = torch.add(theta, omega, alpha=half), torch.add(omega, a1, alpha=half)
        a2 = acceleration(th2, om2, torque)
        th3, om3 = torch.add(theta, om2, alpha=half), torch.add(omega, a2, alpha=half)
        a3 = acceleration(th3, om3, torque)
        th4, om4 = torch.add(theta, om3, alpha=dt), torch.add(omega, a3, alpha=dt)
        a4 = acceleration(th4, om4, torque)
        d_theta = torch.add(omega, om2, alpha=2.0).add_(om3, alpha=2.0).add_(om4)
        d_omega = torch.add(a1, a2, alpha=2.0).add_(a3, alpha=2.0).add_(a4)
        x_next = torch.stack(
            [theta.add(d_theta, alpha=dt / 6.0), omega.add(d_omega, alpha=dt / 6.0)], -1
        )
        return x_next, [theta, th2, th3, th4]

    def partials(thetas: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        # (∂φ/∂x (.., 2, 2), ∂φ/∂u (.., 2, 1)) at the stage angles, φ = (θ̇, θ̈):
        # ∂θ̈/∂θ = g cos θ / l, ∂θ̈/∂θ̇ = −b / (m l²), ∂θ̈/∂τ = 1 / (m l²)
        one = torch.ones_like(thetas[0])
        zero = torch.zeros_like(one)
        dphi_du = torch.stack([zero, one * (1.0 / inertia)], -1).unsqueeze(-1)
        out = []
        for theta in thetas:
            d_acc_d_theta = (g / l) * torch.cos(theta)
            dphi_dx = torch.stack([zero, one, d_acc_d_theta, one * (-b / inertia)], -1)
            out.append((dphi_dx.unflatten(-1, (2, 2)), dphi_du))
        return out

    def f(x: Tensor, u: Tensor) -> Tensor:
        return stages(x, u)[0]

    def f_and_jacobians(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_next, thetas = stages(x, u)
        sens = partials(thetas)
        return x_next, _rk4_state_jacobian(sens, x, dt), _rk4_input_jacobian(sens, dt)

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_state_jacobian(partials(stages(x, u)[1]), x, dt)

    def u_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_input_jacobian(partials(stages(x, u)[1]), dt)

    def h(x: Tensor) -> Tensor:
        return x[..., :1]

    def h_jac(x: Tensor) -> Tensor:
        return _selector((0,), 2, x)

    params = {
        "mass": m,
        "length": l,
        "damping": b,
        "gravity": g,
        "dt": dt,
        "process_std": process_std,
        "measurement_std": measurement_std,
        "x0_mean": _freeze(x0_mean),
        "x0_cov": _freeze(x0_cov),
    }
    return NonlinearModel(
        f,
        h,
        n_x=2,
        n_y=1,
        n_u=1,
        f_jacobian=f_jac,
        h_jacobian=h_jac,
        input_jacobian=u_jac,
        f_and_jacobians=f_and_jacobians,
        process_cov=np.diag([0.0, process_std**2]),
        measurement_cov=[[measurement_std**2]],
        x0_mean=x0_mean,
        x0_cov=_RESET_VAR * np.eye(2) if x0_cov is None else x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
        params=params,
        factory=_factory(pendulum, dtype, device),
        name="pendulum",
    )


def cartpole(
    *,
    cart_mass: float = 1.0,
    pole_mass: float = 0.1,
    pole_length: float = 0.5,
    friction: float = 0.0,
    gravity: float = 9.81,
    dt: float = 0.02,
    force_std: float = 0.5,
    position_std: float = 0.01,
    angle_std: float = 0.01,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """The cart-pole of Barto, Sutton & Anderson (1983), integrated with RK4.

    State (x, ẋ, θ, θ̇) with θ the pole angle from the **upright** position (θ = 0 up; θ > 0 when
    the pole leans toward +x, as in Gymnasium's CartPole) and x the cart position. The input is
    a continuous horizontal force F on the cart. With M = m_c + m_p, l the pole's half-length
    and F' = F − μ ẋ (viscous cart friction)::

        temp = (F' + m_p l θ̇² sin θ) / M
        θ̈ = (g sin θ − cos θ · temp) / (l (4/3 − m_p cos² θ / M))
        ẍ = temp − m_p l θ̈ cos θ / M

    (the corrected equations of Florian (2007), as in Gymnasium; without pole friction.) The
    cart friction is viscous, force −μ ẋ, a smooth stand-in for Barto et al.'s Coulomb term
    μ_c sgn(ẋ) that keeps the dynamics differentiable. One RK4 step of length Δt with F held
    constant over the step (zero-order hold) gives f(x, u). The measurement is (x, θ), θ
    unwrapped.

    Process noise is a random force: w = b_d · ε with ε ~ N(0, force_std²) and b_d = ∂f/∂F at the
    upright equilibrium (x = 0, F = 0), the discrete input direction (the exact input Jacobian of
    the RK4 step, computed when the model is built). So process_cov =
    force_std² · b_d b_dᵀ: rank one, positive semi-definite, and exactly the effect of a force
    disturbance held over one step for the linearized system. measurement_cov =
    diag(position_std², angle_std²).

    Parameters
    ----------
    cart_mass, pole_mass : float
        m_c, m_p (kg), > 0.
    pole_length : float
        Half-length l of the pole (m), > 0 (Gymnasium's ``length``).
    friction : float
        Viscous cart friction coefficient μ (N·s/m), >= 0.
    gravity : float
        g (m/s²), >= 0.
    dt : float
        Sampling period Δt (s), > 0.
    force_std : float
        Std of the force disturbance (N), >= 0.
    position_std, angle_std : float
        Measurement noise stds (m, rad), > 0.
    x0_mean : array-like, (4,), optional
        Default zeros.
    x0_cov : array-like, (4, 4), optional
        Default (0.05² / 3) I, the variance of Gymnasium's U(-0.05, 0.05) resets.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        n_x = 4, n_u = 1, n_y = 2. Exact Jacobians of the RK4 step, from the hand-written
        partials of (ẍ, θ̈) in (ẋ, θ, θ̇, F) propagated through the integrator stages (see
        :func:`_rk4_step_and_jacobians`); dh/dx selects (x, θ).

    Shapes
    ------
    State x : (B, 4) = (x [m], ẋ [m/s], θ [rad], θ̇ [rad/s]); input u : (B, 1) = F [N];
    measurement y : (B, 2) = (x [m], θ [rad]).
    """
    m_c = _real(cart_mass, "cart_mass", minimum=0.0, strict=True)
    m_p = _real(pole_mass, "pole_mass", minimum=0.0, strict=True)
    l = _real(pole_length, "pole_length", minimum=0.0, strict=True)
    mu = _real(friction, "friction", minimum=0.0)
    g = _real(gravity, "gravity", minimum=0.0)
    dt = _real(dt, "dt", minimum=0.0, strict=True)
    force_std = _real(force_std, "force_std", minimum=0.0)
    position_std = _real(position_std, "position_std", minimum=0.0, strict=True)
    angle_std = _real(angle_std, "angle_std", minimum=0.0, strict=True)
    M = m_c + m_p

    def dynamics(x: Tensor, u: Tensor) -> Tensor:
        _, vel, theta, omega = x.unbind(-1)
        force = u[..., 0] - mu * vel
        s, c = torch.sin(theta), torch.cos(theta)
        temp = (force + m_p * l * omega**2 * s) / M
        theta_acc = (g * s - c * temp) / (l * (4.0 / 3.0 - m_p * c**2 / M))
        x_acc = temp - m_p * l * theta_acc * c / M
        return torch.stack([vel, x_acc, omega, theta_acc], dim=-1)

    def partials(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # (dynamics(x, u), ∂φ/∂x (.., 4, 4), ∂φ/∂u (.., 4, 1)); φ by the same operations
        _, vel, theta, omega = x.unbind(-1)
        force = u[..., 0] - mu * vel
        s, c = torch.sin(theta), torch.cos(theta)
        temp = (force + m_p * l * omega**2 * s) / M
        den = l * (4.0 / 3.0 - m_p * c**2 / M)
        theta_acc = (g * s - c * temp) / den
        x_acc = temp - m_p * l * theta_acc * c / M
        # temp: ∂/∂ẋ = −μ/M, ∂/∂F = 1/M
        d_temp_d_theta = (m_p * l / M) * omega**2 * c
        d_temp_d_omega = (2.0 * m_p * l / M) * omega * s
        # θ̈ = (g s − c temp) / den with ∂den/∂θ = 2 l m_p c s / M
        d_den_d_theta = (2.0 * l * m_p / M) * c * s
        c_den = c / den
        d_tacc_d_theta = (g * c + s * temp - c * d_temp_d_theta - theta_acc * d_den_d_theta) / den
        d_tacc_d_vel = (mu / M) * c_den
        d_tacc_d_omega = -c_den * d_temp_d_omega
        d_tacc_d_force = (-1.0 / M) * c_den
        # ẍ = temp − (m_p l / M) θ̈ c
        k = m_p * l / M
        d_xacc_d_theta = d_temp_d_theta - k * (d_tacc_d_theta * c - theta_acc * s)
        d_xacc_d_vel = -mu / M - k * c * d_tacc_d_vel
        d_xacc_d_omega = d_temp_d_omega - k * c * d_tacc_d_omega
        d_xacc_d_force = 1.0 / M - k * c * d_tacc_d_force
        zero = torch.zeros_like(theta)
        one = torch.ones_like(theta)
        dphi_dx = torch.stack(
            [
                *(zero, one, zero, zero),
                *(zero, d_xacc_d_vel, d_xacc_d_theta, d_xacc_d_omega),
                *(zero, zero, zero, one),
                *(zero, d_tacc_d_vel, d_tacc_d_theta, d_tacc_d_omega),
            ],
            -1,
        )
        dphi_du = torch.stack([zero, d_xacc_d_force, zero, d_tacc_d_force], -1)
        return (
            torch.stack([vel, x_acc, omega, theta_acc], dim=-1),
            dphi_dx.unflatten(-1, (4, 4)),
            dphi_du.unsqueeze(-1),
        )

    def f(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_step(dynamics, x, u, dt)

    def f_and_jacobians(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _rk4_step_and_jacobians(partials, x, u, dt)

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_state_jacobian(_rk4_stages(partials, x, u, dt)[1], x, dt)

    def u_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_input_jacobian(_rk4_stages(partials, x, u, dt)[1], dt)

    def h(x: Tensor) -> Tensor:
        return torch.stack([x[..., 0], x[..., 2]], dim=-1)

    def h_jac(x: Tensor) -> Tensor:
        return _selector((0, 2), 4, x)

    x_eq = torch.zeros(1, 4, dtype=dtype, device=device)
    u_eq = torch.zeros(1, 1, dtype=dtype, device=device)
    b_d = u_jac(x_eq, u_eq).reshape(4, 1)
    process_cov = force_std**2 * (b_d @ b_d.mT)

    params = {
        "cart_mass": m_c,
        "pole_mass": m_p,
        "pole_length": l,
        "friction": mu,
        "gravity": g,
        "dt": dt,
        "force_std": force_std,
        "position_std": position_std,
        "angle_std": angle_std,
        "x0_mean": _freeze(x0_mean),
        "x0_cov": _freeze(x0_cov),
    }
    return NonlinearModel(
        f,
        h,
        n_x=4,
        n_y=2,
        n_u=1,
        f_jacobian=f_jac,
        h_jacobian=h_jac,
        input_jacobian=u_jac,
        f_and_jacobians=f_and_jacobians,
        process_cov=process_cov,
        measurement_cov=np.diag([position_std**2, angle_std**2]),
        x0_mean=x0_mean,
        x0_cov=_RESET_VAR * np.eye(4) if x0_cov is None else x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
        params=params,
        factory=_factory(cartpole, dtype, device),
        name="cartpole",
    )


# -- helpers ---------------------------------------------------------------------------------------
_RESET_VAR = 0.05**2 / 3.0  # variance of U(-0.05, 0.05)

# Which entries of ``params`` set the noise covariances: name -> (kind, power), where kind is
# "process" or "measurement" and multiplying that covariance by s multiplies the parameter by
# s**power (power 1 for variances, 0.5 for standard deviations).
_NOISE_PARAMETERS: dict[Callable[..., SystemModel], dict[str, tuple[str, float]]] = {
    linear_canonical: {"q2": ("process", 1.0), "r2": ("measurement", 1.0)},
    synthetic_nonlinear: {"q2": ("process", 1.0), "r2": ("measurement", 1.0)},
    lorenz: {"q2": ("process", 1.0), "r2": ("measurement", 1.0)},
    pendulum: {"process_std": ("process", 0.5), "measurement_std": ("measurement", 0.5)},
    cartpole: {
        "force_std": ("process", 0.5),
        "position_std": ("measurement", 0.5),
        "angle_std": ("measurement", 0.5),
    },
}


def noise_parameter_kinds(factory: Callable[..., Any]) -> dict[str, tuple[str, float]] | None:
    """The noise parameters of a library factory (see ``_NOISE_PARAMETERS``), or None."""
    func = factory.func if isinstance(factory, functools.partial) else factory
    return _NOISE_PARAMETERS.get(func)


def _factory(
    func: Callable[..., SystemModel], dtype: Dtype, device: Device
) -> Callable[..., SystemModel]:
    return functools.partial(func, dtype=dtype, device=device)


def _rk4_step(
    dynamics: Callable[[Tensor, Tensor], Tensor], x: Tensor, u: Tensor, dt: float
) -> Tensor:
    """One classical Runge-Kutta step of ẋ = dynamics(x, u) with u held constant.

    Written with scaled additions (``torch.add(a, b, alpha=c)`` = a + c b), so that a step is
    few tensor operations: at the batch sizes of MPPI rollouts their count, not arithmetic,
    sets the time.
    """
    k1 = dynamics(x, u)
    k2 = dynamics(torch.add(x, k1, alpha=0.5 * dt), u)
    k3 = dynamics(torch.add(x, k2, alpha=0.5 * dt), u)
    k4 = dynamics(torch.add(x, k3, alpha=dt), u)
    return _rk4_combine(x, k1, k2, k3, k4, dt)


def _rk4_combine(x: Tensor, k1: Tensor, k2: Tensor, k3: Tensor, k4: Tensor, dt: float) -> Tensor:
    """x + Δt/6 (k1 + 2 k2 + 2 k3 + k4)."""
    slope = torch.add(k1, k2, alpha=2.0).add_(k3, alpha=2.0).add_(k4)
    return torch.add(x, slope, alpha=dt / 6.0)


Partials = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def _rk4_step_and_jacobians(
    partials: Partials, x: Tensor, u: Tensor, dt: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One RK4 step (as :func:`_rk4_step`) and its exact Jacobians in x and u.

    ``partials(x, u)`` returns φ(x, u) (computed exactly as ``dynamics``, so the step is
    bit-for-bit that of :func:`_rk4_step`), ∂φ/∂x and ∂φ/∂u, written by hand. With the stage
    points x_1 = x, x_2 = x + Δt/2 k_1, x_3 = x + Δt/2 k_2, x_4 = x + Δt k_3 and k_i = φ(x_i, u),
    the sensitivities follow the stages (forward-mode differentiation of the integrator)::

        dk_i/dx = ∂φ/∂x(x_i, u) · dx_i/dx
        dk_i/du = ∂φ/∂x(x_i, u) · dx_i/du + ∂φ/∂u(x_i, u)
        df/dx   = I + Δt/6 (dk_1/dx + 2 dk_2/dx + 2 dk_3/dx + dk_4/dx), likewise df/du

    so the result equals automatic differentiation of the step up to rounding, and stays
    differentiable (in x and u) when gradients are on.

    Shapes
    ------
    x : (B, n_x), u : (B, n_u) -> (f (B, n_x), df/dx (B, n_x, n_x), df/du (B, n_x, n_u))
    """
    x_next, stages = _rk4_stages(partials, x, u, dt)
    return x_next, _rk4_state_jacobian(stages, x, dt), _rk4_input_jacobian(stages, dt)


def _rk4_stages(
    partials: Partials, x: Tensor, u: Tensor, dt: float
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """The RK4 step and (∂φ/∂x, ∂φ/∂u) at its four stage points (see above)."""
    half = 0.5 * dt
    k1, A1, G1 = partials(x, u)
    k2, A2, G2 = partials(torch.add(x, k1, alpha=half), u)
    k3, A3, G3 = partials(torch.add(x, k2, alpha=half), u)
    k4, A4, G4 = partials(torch.add(x, k3, alpha=dt), u)
    x_next = _rk4_combine(x, k1, k2, k3, k4, dt)
    return x_next, [(A1, G1), (A2, G2), (A3, G3), (A4, G4)]


def _rk4_state_jacobian(stages: list[tuple[Tensor, Tensor]], x: Tensor, dt: float) -> Tensor:
    """df/dx of the RK4 step: dx_1/dx = I, dx_{i+1}/dx = I + c_i dk_i/dx (c = Δt/2, Δt/2, Δt)."""
    (A1, _), (A2, _), (A3, _), (A4, _) = stages
    half = 0.5 * dt
    dk1 = A1
    dk2 = A2 + half * (A2 @ dk1)
    dk3 = A3 + half * (A3 @ dk2)
    dk4 = A4 + dt * (A4 @ dk3)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return eye + (dt / 6.0) * (dk1 + 2.0 * dk2 + 2.0 * dk3 + dk4)


def _rk4_input_jacobian(stages: list[tuple[Tensor, Tensor]], dt: float) -> Tensor:
    """df/du of the RK4 step: dx_1/du = 0, dx_{i+1}/du = c_i dk_i/du (c = Δt/2, Δt/2, Δt)."""
    (_, G1), (A2, G2), (A3, G3), (A4, G4) = stages
    half = 0.5 * dt
    dk1 = G1
    dk2 = G2 + half * (A2 @ dk1)
    dk3 = G3 + half * (A3 @ dk2)
    dk4 = G4 + dt * (A4 @ dk3)
    return (dt / 6.0) * (dk1 + 2.0 * dk2 + 2.0 * dk3 + dk4)


def _selector(rows: tuple[int, ...], n: int, x: Tensor) -> Tensor:
    """The (B, len(rows), n) Jacobian of x -> x[..., rows], for x (B, n)."""
    S = torch.eye(n, dtype=x.dtype, device=x.device)[list(rows)]
    return S.expand(*x.shape[:-1], len(rows), n)


def _real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float, optionally ``> minimum`` (strict) or ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name}: expected a real number, found {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name}: expected a finite number, found {value}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ParameterError(f"{name}: expected a number {bound}, found {value:g}")
    return value


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name}: expected an integer >= {minimum}, found {value!r}")
    if value < minimum:
        raise ParameterError(f"{name}: expected an integer >= {minimum}, found {value}")
    return int(value)


def _freeze(value: Any) -> Any:
    """A JSON-friendly copy (nested tuples of floats) of an array-like, or None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return _tuples(np.asarray(value, dtype=np.float64).tolist())


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
