"""The cart-pole of Barto, Sutton & Anderson (1983) with Florian's (2007) equations, RK4."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._params import _RESET_VAR, Device, Dtype, _library_function, _Noise, _selector
from ..base import NonlinearModel
from ._rk4 import Dynamics, Partials, _rk4_discretization

__all__ = ["cartpole"]


@_library_function(
    positive=("cart_mass", "pole_mass", "pole_length", "dt"),
    nonnegative=("friction", "gravity"),
    noise=_Noise(process=("force_std",), measurement=("position_std", "angle_std"), power=0.5),
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
    -> model with n_x = 4, n_u = 1, n_y = 2: state x (B, 4) = (x [m], ẋ [m/s], θ [rad],
    θ̇ [rad/s]); input u (B, 1) = F [N]; measurement y (B, 2) = (x [m], θ [rad])
    """
    M = cart_mass + pole_mass
    dynamics, partials = _cartpole_vector_field(
        m_p=pole_mass, l=pole_length, mu=friction, g=gravity, M=M
    )
    steps = _rk4_discretization(dynamics, partials, dt)

    x_eq = torch.zeros(1, 4, dtype=dtype, device=device)
    u_eq = torch.zeros(1, 1, dtype=dtype, device=device)
    b_d = steps.input_jacobian(x_eq, u_eq).reshape(4, 1)
    return NonlinearModel(
        **steps._asdict(),
        h=_cartpole_h,
        h_jacobian=_cartpole_h_jac,
        n_x=4,
        n_y=2,
        n_u=1,
        process_cov=force_std**2 * (b_d @ b_d.mT),
        measurement_cov=np.diag([position_std**2, angle_std**2]),
        x0_mean=x0_mean,
        x0_cov=_RESET_VAR * np.eye(4) if x0_cov is None else x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
    )


def _cartpole_vector_field(
    *, m_p: float, l: float, mu: float, g: float, M: float
) -> tuple[Dynamics, Partials]:
    """The cart-pole's continuous dynamics φ(x, u) and its hand-written partials.

    ``dynamics(x, u)`` = φ = (ẋ, ẍ, θ̇, θ̈) (see :func:`cartpole`, M = m_c + m_p);
    ``partials(x, u)`` = (φ by the same operations, ∂φ/∂x, ∂φ/∂u), as
    :func:`_rk4_step_and_jacobians` takes them.

    Shapes
    ------
    dynamics : x (B, 4), u (B, 1) -> (B, 4);
    partials : x (B, 4), u (B, 1) -> ((B, 4), (B, 4, 4), (B, 4, 1))
    """

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

    return dynamics, partials


def _cartpole_h(x: Tensor) -> Tensor:
    """h(x) = (x, θ): (B, 4) -> (B, 2)."""
    return torch.stack([x[..., 0], x[..., 2]], dim=-1)


def _cartpole_h_jac(x: Tensor) -> Tensor:
    """dh/dx, the rows 0 and 2 of the identity: (B, 4) -> (B, 2, 4)."""
    return _selector((0, 2), 4, x)
